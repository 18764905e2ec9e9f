using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime.KvCache;

/// <summary>A copy-on-write order: copy every layer's keys and values of block <see cref="SourceBlock"/> into <see cref="DestinationBlock"/> before the next forward pass.</summary>
/// <param name="SourceBlock">The shared block a sequence was about to write into.</param>
/// <param name="DestinationBlock">The sequence's own new block that replaces it in its table.</param>
public readonly record struct BlockCopy(int SourceBlock, int DestinationBlock);

/// <summary>
/// Hands out the KV pool's blocks to sequences. It knows block ids, reference counts, block tables and the
/// token ids of full blocks (for prefix caching), nothing of the model or the cache's numbers. Fallible
/// steps come as check/act pairs (<see cref="CanAllocate(int)"/>/<see cref="Allocate(long, int)"/>,
/// <see cref="CanAppend"/>/<see cref="Append"/>): the scheduler asks first and only then acts, so an act
/// that does not fit is a bug and throws.
/// </summary>
/// <remarks>
/// <para>What stays true: every block is either free with reference count 0, or in at least one block
/// table with a reference count equal to the number of tables that hold it; free + used = total.</para>
/// <para>Prefix caching (the token-aware overloads, used by the serving scheduler): a full block whose
/// tokens have been computed is identified by a chained hash of (the previous block's hash, its tokens).
/// A new sequence whose leading full blocks match cached ones shares them (reference count + 1) and those
/// tokens count as computed. A freed block keeps its hash and stays findable while it sits on the free
/// list; it loses the hash only when it is taken as a fresh block. The last, partly filled block of a
/// sequence is never cached, so a shared block is never written.</para>
/// <para>The free list is least-recently-freed first: blocks leave it first-in first-out, so tables
/// allocated alternately for different sequences interleave in the pool, a freed block waits behind the
/// others before reuse, and cached blocks are evicted least-recently-used.</para>
/// <para>Copy-on-write: after a <see cref="Fork"/> the last, partly filled block is shared. The first
/// <see cref="Append"/> of a sharer past its token count replaces that block with a fresh copy and
/// returns the <see cref="BlockCopy"/> the caller must perform on the KV pool before writing.</para>
/// </remarks>
public sealed class BlockManager
{
    private const int NoBlock = -1;
    private const ulong RootHash = 0xCBF29CE484222325UL;

    private readonly int[] _referenceCounts;
    // The free list, as a doubly linked list threaded through block ids: a cached block found by a prefix
    // lookup leaves the middle of the list in O(1).
    private readonly int[] _previousFree;
    private readonly int[] _nextFree;
    private int _firstFree = NoBlock, _lastFree = NoBlock, _numFreeBlocks;

    // Prefix cache. A cached block's hash, its parent's hash and its tokens are kept so that a lookup
    // verifies the match exactly: a hash collision then costs a miss, never wrong KV.
    private readonly bool[] _isCached;
    private readonly ulong[] _blockHash;
    private readonly ulong[] _parentHash;
    private readonly int[] _cachedTokens;                // [numBlocks, blockSize]
    private readonly Dictionary<ulong, int> _cachedBlockByHash = new();
    private readonly List<int> _lookupBlocks = new();    // scratch of FindCachedPrefix
    private readonly List<ulong> _lookupHashes = new();

    private readonly Dictionary<long, SequenceBlocks> _sequences = new();

    /// <summary>Creates a manager of <paramref name="numBlocks"/> blocks of <paramref name="blockSize"/> tokens, all free.</summary>
    public BlockManager(int numBlocks, int blockSize)
    {
        if (numBlocks <= 0) throw new ArgumentOutOfRangeException(nameof(numBlocks), $"A KV pool needs at least one block; got {numBlocks}.");
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), $"A block holds at least one token; got {blockSize}.");
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        _referenceCounts = new int[numBlocks];
        _previousFree = new int[numBlocks];
        _nextFree = new int[numBlocks];
        _isCached = new bool[numBlocks];
        _blockHash = new ulong[numBlocks];
        _parentHash = new ulong[numBlocks];
        _cachedTokens = new int[(long)numBlocks * blockSize];
        for (int block = 0; block < numBlocks; block++) PushFree(block);
    }

    /// <summary>Number of blocks in the pool.</summary>
    public int NumBlocks { get; }
    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }
    /// <summary>Blocks held by no table (cached ones included: they are reusable).</summary>
    public int NumFreeBlocks => _numFreeBlocks;
    /// <summary>Blocks held by at least one table.</summary>
    public int NumUsedBlocks => NumBlocks - _numFreeBlocks;
    /// <summary>Number of sequences holding a block table.</summary>
    public int NumSequences => _sequences.Count;
    /// <summary>Blocks that carry a prefix hash (held or free).</summary>
    public int NumCachedBlocks => _cachedBlockByHash.Count;
    /// <summary>Prompt tokens looked up in the prefix cache by the token-aware <see cref="Allocate(long, ReadOnlySpan{int}, int)"/>, in total.</summary>
    public long NumPrefixCacheQueryTokens { get; private set; }
    /// <summary>Of <see cref="NumPrefixCacheQueryTokens"/>, the tokens found cached (not computed again).</summary>
    public long NumPrefixCacheHitTokens { get; private set; }

    /// <summary>Blocks needed to hold positions <c>[0, numTokens)</c>.</summary>
    public int BlocksFor(int numTokens) => (numTokens + BlockSize - 1) / BlockSize;

    /// <summary>True when <paramref name="sequenceId"/> has a block table.</summary>
    public bool Contains(long sequenceId) => _sequences.ContainsKey(sequenceId);

    /// <summary>Number of block tables holding <paramref name="blockId"/> (0 when it is free).</summary>
    public int ReferenceCount(int blockId) => _referenceCounts[blockId];

    /// <summary>True when <paramref name="blockId"/> carries a prefix hash (a later request with the same prefix can reuse it).</summary>
    public bool IsCached(int blockId) => _isCached[blockId];

    /// <summary>True when a new sequence of <paramref name="numTokens"/> tokens fits in the free blocks.</summary>
    public bool CanAllocate(int numTokens) => numTokens >= 0 && BlocksFor(numTokens) <= _numFreeBlocks;

    /// <summary>Gives a new sequence fresh blocks for positions <c>[0, numTokens)</c>, without prefix caching.</summary>
    /// <exception cref="InvalidOperationException">The sequence already has a table, or the blocks are not free.</exception>
    public void Allocate(long sequenceId, int numTokens)
    {
        if (numTokens < 0) throw new ArgumentOutOfRangeException(nameof(numTokens), $"Sequence {sequenceId}: cannot allocate {numTokens} tokens.");
        if (_sequences.ContainsKey(sequenceId)) throw new InvalidOperationException($"Sequence {sequenceId} already has a block table.");
        int needed = BlocksFor(numTokens);
        if (needed > _numFreeBlocks) throw new InvalidOperationException($"Sequence {sequenceId} needs {needed} blocks for {numTokens} tokens; {_numFreeBlocks} are free.");
        var sequence = new SequenceBlocks(new List<int>(needed), new List<ulong>(), numTokens);
        for (int i = 0; i < needed; i++) sequence.Blocks.Add(TakeFreshBlock());
        _sequences.Add(sequenceId, sequence);
    }

    /// <summary>
    /// Number of leading tokens of <paramref name="tokens"/> held in cached full blocks: a multiple of
    /// <see cref="BlockSize"/>, and always less than <c>tokens.Length</c> (the last token is computed again
    /// so that there are logits to sample from). Changes nothing.
    /// </summary>
    public int NumCachedPrefixTokens(ReadOnlySpan<int> tokens) => FindCachedPrefix(tokens) * BlockSize;

    /// <summary>
    /// True when a new sequence with <paramref name="tokens"/> fits with a table covering
    /// <c>[0, numTokens)</c>, reusing its cached prefix (<see cref="NumCachedPrefixTokens"/>).
    /// </summary>
    public bool CanAllocate(ReadOnlySpan<int> tokens, int numTokens)
    {
        int numHits = FindCachedPrefix(tokens);
        if (numTokens < numHits * BlockSize) return false;
        int numHitsOnFreeList = 0;
        foreach (int block in _lookupBlocks) if (_referenceCounts[block] == 0) numHitsOnFreeList++;
        return numHitsOnFreeList + BlocksFor(numTokens) - numHits <= _numFreeBlocks;
    }

    /// <summary>
    /// Gives a new sequence a table covering <c>[0, numTokens)</c>: its cached prefix blocks are shared, the
    /// rest are fresh. Returns the number of leading tokens whose KV is already cached (they need no compute).
    /// </summary>
    /// <exception cref="InvalidOperationException">The sequence already has a table, or the blocks are not free.</exception>
    public int Allocate(long sequenceId, ReadOnlySpan<int> tokens, int numTokens)
    {
        if (_sequences.ContainsKey(sequenceId)) throw new InvalidOperationException($"Sequence {sequenceId} already has a block table.");
        if (!CanAllocate(tokens, numTokens))
            throw new InvalidOperationException($"Sequence {sequenceId} does not fit: {numTokens} tokens with {_numFreeBlocks} free blocks (or fewer tokens than its cached prefix).");
        int numHits = FindCachedPrefix(tokens);
        var sequence = new SequenceBlocks(new List<int>(BlocksFor(numTokens)), new List<ulong>(_lookupHashes), numTokens);
        // Hits first: a hit still on the free list must leave it before fresh blocks are taken, or taking a
        // fresh block could evict it.
        foreach (int block in _lookupBlocks)
        {
            if (_referenceCounts[block] == 0) RemoveFree(block);
            _referenceCounts[block]++;
            sequence.Blocks.Add(block);
        }
        while (sequence.Blocks.Count < BlocksFor(numTokens)) sequence.Blocks.Add(TakeFreshBlock());
        _sequences.Add(sequenceId, sequence);
        NumPrefixCacheQueryTokens += tokens.Length;
        NumPrefixCacheHitTokens += numHits * BlockSize;
        return numHits * BlockSize;
    }

    /// <summary>True when <paramref name="sequenceId"/> can grow to <paramref name="newTotalTokens"/> tokens with the free blocks (a copy-on-write copy included).</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown.</exception>
    public bool CanAppend(long sequenceId, int newTotalTokens)
    {
        var sequence = Get(sequenceId);
        int needed = BlocksFor(newTotalTokens) - sequence.Blocks.Count + (NeedsCopy(sequence, newTotalTokens) ? 1 : 0);
        return newTotalTokens >= sequence.NumTokens && needed <= _numFreeBlocks;
    }

    /// <summary>
    /// Grows <paramref name="sequenceId"/> to cover positions <c>[0, newTotalTokens)</c>, adding blocks as
    /// needed. When the sequence would write into a partly filled block it shares (after a <see cref="Fork"/>),
    /// that block is replaced by a fresh one first and the copy to perform is returned; otherwise null.
    /// </summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown, would shrink, or the blocks are not free.</exception>
    public BlockCopy? Append(long sequenceId, int newTotalTokens)
    {
        var sequence = Get(sequenceId);
        if (newTotalTokens < sequence.NumTokens) throw new InvalidOperationException($"Sequence {sequenceId} holds {sequence.NumTokens} tokens and cannot shrink to {newTotalTokens}.");
        if (!CanAppend(sequenceId, newTotalTokens))
            throw new InvalidOperationException($"Sequence {sequenceId} needs more blocks for {newTotalTokens} tokens than the {_numFreeBlocks} free.");
        BlockCopy? copy = null;
        if (NeedsCopy(sequence, newTotalTokens))
        {
            int last = sequence.Blocks.Count - 1, shared = sequence.Blocks[last];
            _referenceCounts[shared]--;   // stays > 0: another table still holds it
            int own = TakeFreshBlock();
            sequence.Blocks[last] = own;
            copy = new BlockCopy(shared, own);
        }
        while (sequence.Blocks.Count < BlocksFor(newTotalTokens)) sequence.Blocks.Add(TakeFreshBlock());
        sequence.NumTokens = newTotalTokens;
        return copy;
    }

    /// <summary>
    /// Records that positions <c>[0, numComputedTokens)</c> of <paramref name="sequenceId"/> hold computed KV
    /// for <paramref name="tokens"/>: every block now full of computed tokens gets its chained hash, so later
    /// sequences with the same prefix can reuse it. Call after the forward pass that wrote them.
    /// </summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown.</exception>
    public void CacheFullBlocks(long sequenceId, ReadOnlySpan<int> tokens, int numComputedTokens)
    {
        var sequence = Get(sequenceId);
        int numFull = Math.Min(Math.Min(numComputedTokens, tokens.Length) / BlockSize, sequence.Blocks.Count);
        for (int i = sequence.Hashes.Count; i < numFull; i++)
        {
            ulong parent = i == 0 ? RootHash : sequence.Hashes[i - 1];
            var blockTokens = tokens.Slice(i * BlockSize, BlockSize);
            ulong hash = ChainHash(parent, blockTokens);
            sequence.Hashes.Add(hash);
            int block = sequence.Blocks[i];
            // Another block may already hold the same prefix (two equal prompts computed in the same step):
            // the first one stays the cached copy; this one is freed uncached.
            if (_isCached[block] || _cachedBlockByHash.ContainsKey(hash)) continue;
            _isCached[block] = true;
            _blockHash[block] = hash;
            _parentHash[block] = parent;
            blockTokens.CopyTo(_cachedTokens.AsSpan(block * BlockSize, BlockSize));
            _cachedBlockByHash.Add(hash, block);
        }
    }

    /// <summary>
    /// Gives <paramref name="childId"/> the same blocks as <paramref name="parentId"/> (each block's reference
    /// count goes up by one) and the same token count. A shared, partly filled last block is copied on the
    /// first write (see <see cref="Append"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The parent is unknown or the child already has a table.</exception>
    public void Fork(long parentId, long childId)
    {
        var parent = Get(parentId);
        if (_sequences.ContainsKey(childId)) throw new InvalidOperationException($"Sequence {childId} already has a block table; it cannot be forked from sequence {parentId}.");
        var child = new SequenceBlocks(new List<int>(parent.Blocks), new List<ulong>(parent.Hashes), parent.NumTokens);
        foreach (int block in child.Blocks) _referenceCounts[block]++;
        _sequences.Add(childId, child);
    }

    /// <summary>Drops <paramref name="sequenceId"/>'s table; each block whose reference count reaches 0 becomes free (cached blocks stay findable until evicted).</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown (never allocated or already freed).</exception>
    public void Free(long sequenceId)
    {
        var sequence = Get(sequenceId);
        // Tail first, as nano-vllm does: the head blocks (the prefixes other requests most likely share) go
        // to the back of the free list and so are evicted last.
        for (int i = sequence.Blocks.Count - 1; i >= 0; i--)
        {
            int block = sequence.Blocks[i];
            if (--_referenceCounts[block] == 0) PushFree(block);
        }
        _sequences.Remove(sequenceId);
    }

    /// <summary>The block ids of <paramref name="sequenceId"/>, by logical block; valid until the table next changes.</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown.</exception>
    public ReadOnlySpan<int> BlockTable(long sequenceId) => CollectionsMarshal.AsSpan(Get(sequenceId).Blocks);

    /// <summary>Number of tokens <paramref name="sequenceId"/>'s table covers.</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown.</exception>
    public int NumTokens(long sequenceId) => Get(sequenceId).NumTokens;

    // Writing position NumTokens would land in a partly filled block that another table also holds.
    private bool NeedsCopy(SequenceBlocks sequence, int newTotalTokens) =>
        newTotalTokens > sequence.NumTokens && sequence.NumTokens % BlockSize != 0 &&
        _referenceCounts[sequence.Blocks[^1]] > 1;

    // Number of leading full blocks of tokens found in the cache (into _lookupBlocks/_lookupHashes),
    // leaving at least the last token uncached.
    private int FindCachedPrefix(ReadOnlySpan<int> tokens)
    {
        _lookupBlocks.Clear();
        _lookupHashes.Clear();
        ulong parent = RootHash;
        for (int i = 0; (i + 1) * BlockSize < tokens.Length; i++)
        {
            var blockTokens = tokens.Slice(i * BlockSize, BlockSize);
            ulong hash = ChainHash(parent, blockTokens);
            if (!_cachedBlockByHash.TryGetValue(hash, out int block) || _parentHash[block] != parent ||
                !blockTokens.SequenceEqual(_cachedTokens.AsSpan(block * BlockSize, BlockSize)))
                break;
            _lookupBlocks.Add(block);
            _lookupHashes.Add(hash);
            parent = hash;
        }
        return _lookupBlocks.Count;
    }

    // The least recently freed block; a cached one loses its hash here (LRU eviction).
    private int TakeFreshBlock()
    {
        int block = _firstFree;
        RemoveFree(block);
        if (_isCached[block])
        {
            _isCached[block] = false;
            _cachedBlockByHash.Remove(_blockHash[block]);
        }
        _referenceCounts[block] = 1;
        return block;
    }

    private void PushFree(int block)
    {
        _previousFree[block] = _lastFree;
        _nextFree[block] = NoBlock;
        if (_lastFree == NoBlock) _firstFree = block; else _nextFree[_lastFree] = block;
        _lastFree = block;
        _numFreeBlocks++;
    }

    private void RemoveFree(int block)
    {
        int previous = _previousFree[block], next = _nextFree[block];
        if (previous == NoBlock) _firstFree = next; else _nextFree[previous] = next;
        if (next == NoBlock) _lastFree = previous; else _previousFree[next] = previous;
        _numFreeBlocks--;
    }

    // SplitMix64's finaliser over (parent, tokens): deterministic on every machine, unlike HashCode.
    private static ulong ChainHash(ulong parent, ReadOnlySpan<int> tokens)
    {
        ulong hash = Mix(parent ^ 0x9E3779B97F4A7C15UL);
        foreach (int token in tokens) hash = Mix(hash + 0x9E3779B97F4A7C15UL + (uint)token);
        return hash;
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private SequenceBlocks Get(long sequenceId) =>
        _sequences.TryGetValue(sequenceId, out var sequence)
            ? sequence
            : throw new InvalidOperationException($"Sequence {sequenceId} has no block table.");

    // Hashes holds the chained hash of each leading full, computed block (a prefix of Blocks).
    private sealed class SequenceBlocks(List<int> blocks, List<ulong> hashes, int numTokens)
    {
        public List<int> Blocks { get; } = blocks;
        public List<ulong> Hashes { get; } = hashes;
        public int NumTokens { get; set; } = numTokens;
    }
}
