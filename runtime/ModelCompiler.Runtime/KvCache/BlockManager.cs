using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime.KvCache;

/// <summary>
/// Hands out the KV pool's blocks to sequences. It knows block ids, reference counts and block tables,
/// nothing of the model or the cache's numbers. Fallible steps come as check/act pairs
/// (<see cref="CanAllocate"/>/<see cref="Allocate"/>, <see cref="CanAppend"/>/<see cref="Append"/>): the
/// scheduler asks first and only then acts, so an act that does not fit is a bug and throws.
/// </summary>
/// <remarks>
/// What stays true: every block is either on the free list with reference count 0, or in at least one
/// block table with a reference count equal to the number of tables that hold it; free + used = total.
/// Blocks leave the free list first-in first-out, so tables allocated alternately for different
/// sequences interleave in the pool, and a freed block waits behind the others before reuse.
/// </remarks>
public sealed class BlockManager
{
    private readonly int[] _referenceCounts;
    private readonly Queue<int> _freeBlocks;
    private readonly Dictionary<long, SequenceBlocks> _sequences = new();

    /// <summary>Creates a manager of <paramref name="numBlocks"/> blocks of <paramref name="blockSize"/> tokens, all free.</summary>
    public BlockManager(int numBlocks, int blockSize)
    {
        if (numBlocks <= 0) throw new ArgumentOutOfRangeException(nameof(numBlocks), $"A KV pool needs at least one block; got {numBlocks}.");
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), $"A block holds at least one token; got {blockSize}.");
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        _referenceCounts = new int[numBlocks];
        _freeBlocks = new Queue<int>(numBlocks);
        for (int block = 0; block < numBlocks; block++) _freeBlocks.Enqueue(block);
    }

    /// <summary>Number of blocks in the pool.</summary>
    public int NumBlocks { get; }
    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }
    /// <summary>Blocks on the free list.</summary>
    public int NumFreeBlocks => _freeBlocks.Count;
    /// <summary>Number of sequences holding a block table.</summary>
    public int NumSequences => _sequences.Count;

    /// <summary>Blocks needed to hold positions <c>[0, numTokens)</c>.</summary>
    public int BlocksFor(int numTokens) => (numTokens + BlockSize - 1) / BlockSize;

    /// <summary>True when <paramref name="sequenceId"/> has a block table.</summary>
    public bool Contains(long sequenceId) => _sequences.ContainsKey(sequenceId);

    /// <summary>Number of block tables holding <paramref name="blockId"/> (0 when it is free).</summary>
    public int ReferenceCount(int blockId) => _referenceCounts[blockId];

    /// <summary>True when a new sequence of <paramref name="numTokens"/> tokens fits in the free blocks.</summary>
    public bool CanAllocate(int numTokens) => numTokens >= 0 && BlocksFor(numTokens) <= _freeBlocks.Count;

    /// <summary>Gives a new sequence the blocks for positions <c>[0, numTokens)</c>.</summary>
    /// <exception cref="InvalidOperationException">The sequence already has a table, or the blocks are not free.</exception>
    public void Allocate(long sequenceId, int numTokens)
    {
        if (numTokens < 0) throw new ArgumentOutOfRangeException(nameof(numTokens), $"Sequence {sequenceId}: cannot allocate {numTokens} tokens.");
        if (_sequences.ContainsKey(sequenceId)) throw new InvalidOperationException($"Sequence {sequenceId} already has a block table.");
        int needed = BlocksFor(numTokens);
        if (needed > _freeBlocks.Count) throw new InvalidOperationException($"Sequence {sequenceId} needs {needed} blocks for {numTokens} tokens; {_freeBlocks.Count} are free.");
        var sequence = new SequenceBlocks(new List<int>(needed), numTokens);
        for (int i = 0; i < needed; i++) sequence.Blocks.Add(TakeFreeBlock());
        _sequences.Add(sequenceId, sequence);
    }

    /// <summary>True when <paramref name="sequenceId"/> can grow to <paramref name="newTotalTokens"/> tokens with the free blocks.</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown.</exception>
    public bool CanAppend(long sequenceId, int newTotalTokens)
    {
        var sequence = Get(sequenceId);
        return newTotalTokens >= sequence.NumTokens && BlocksFor(newTotalTokens) - sequence.Blocks.Count <= _freeBlocks.Count;
    }

    /// <summary>Grows <paramref name="sequenceId"/> to cover positions <c>[0, newTotalTokens)</c>, adding blocks as needed.</summary>
    /// <remarks>
    /// After a <see cref="Fork"/> the last, partly filled block may be shared; writing new tokens into it
    /// would change the other sequence's cache too. Copy-on-write of that block is not implemented yet
    /// (a later issue): until then, only append to forked sequences at block boundaries.
    /// </remarks>
    /// <exception cref="InvalidOperationException">The sequence is unknown, would shrink, or the blocks are not free.</exception>
    public void Append(long sequenceId, int newTotalTokens)
    {
        var sequence = Get(sequenceId);
        if (newTotalTokens < sequence.NumTokens) throw new InvalidOperationException($"Sequence {sequenceId} holds {sequence.NumTokens} tokens and cannot shrink to {newTotalTokens}.");
        int needed = BlocksFor(newTotalTokens) - sequence.Blocks.Count;
        if (needed > _freeBlocks.Count) throw new InvalidOperationException($"Sequence {sequenceId} needs {needed} more blocks for {newTotalTokens} tokens; {_freeBlocks.Count} are free.");
        for (int i = 0; i < needed; i++) sequence.Blocks.Add(TakeFreeBlock());
        sequence.NumTokens = newTotalTokens;
    }

    /// <summary>
    /// Gives <paramref name="childId"/> the same blocks as <paramref name="parentId"/> (each block's reference
    /// count goes up by one) and the same token count. Shared blocks are not copied on write yet; see <see cref="Append"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The parent is unknown or the child already has a table.</exception>
    public void Fork(long parentId, long childId)
    {
        var parent = Get(parentId);
        if (_sequences.ContainsKey(childId)) throw new InvalidOperationException($"Sequence {childId} already has a block table; it cannot be forked from sequence {parentId}.");
        var child = new SequenceBlocks(new List<int>(parent.Blocks), parent.NumTokens);
        foreach (int block in child.Blocks) _referenceCounts[block]++;
        _sequences.Add(childId, child);
    }

    /// <summary>Drops <paramref name="sequenceId"/>'s table; each block whose reference count reaches 0 goes back to the free list.</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown (never allocated or already freed).</exception>
    public void Free(long sequenceId)
    {
        var sequence = Get(sequenceId);
        // Tail first, as nano-vllm does: the head blocks (shared prompt prefixes, once prefix caching comes)
        // go to the back of the queue and so stay intact the longest.
        for (int i = sequence.Blocks.Count - 1; i >= 0; i--)
        {
            int block = sequence.Blocks[i];
            if (--_referenceCounts[block] == 0) _freeBlocks.Enqueue(block);
        }
        _sequences.Remove(sequenceId);
    }

    /// <summary>The block ids of <paramref name="sequenceId"/>, by logical block; valid until the table next changes.</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown.</exception>
    public ReadOnlySpan<int> BlockTable(long sequenceId) => CollectionsMarshal.AsSpan(Get(sequenceId).Blocks);

    /// <summary>Number of tokens <paramref name="sequenceId"/>'s table covers.</summary>
    /// <exception cref="InvalidOperationException">The sequence is unknown.</exception>
    public int NumTokens(long sequenceId) => Get(sequenceId).NumTokens;

    private int TakeFreeBlock()
    {
        int block = _freeBlocks.Dequeue();
        _referenceCounts[block] = 1;
        return block;
    }

    private SequenceBlocks Get(long sequenceId) =>
        _sequences.TryGetValue(sequenceId, out var sequence)
            ? sequence
            : throw new InvalidOperationException($"Sequence {sequenceId} has no block table.");

    private sealed class SequenceBlocks(List<int> blocks, int numTokens)
    {
        public List<int> Blocks { get; } = blocks;
        public int NumTokens { get; set; } = numTokens;
    }
}
