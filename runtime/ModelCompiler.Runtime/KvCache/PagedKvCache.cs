using System;

namespace ModelCompiler.Runtime.KvCache;

/// <summary>
/// The KV pool: keys and values of every layer in fixed-size blocks, addressed through block tables.
/// It stores numbers only; which block belongs to which sequence is the block manager's
/// business. Layout of <see cref="Keys"/> and <see cref="Values"/>: <c>[numLayers, numBlocks, blockSize, kvDim]</c>.
/// </summary>
public sealed class PagedKvCache
{
    /// <summary>Allocates a pool of <paramref name="numBlocks"/> blocks for every layer.</summary>
    public PagedKvCache(int numLayers, int numBlocks, int blockSize, int kvDim)
    {
        NumLayers = numLayers;
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        KvDim = kvDim;
        long total = (long)numLayers * numBlocks * blockSize * kvDim;
        if (total > Array.MaxLength) throw new ArgumentException($"A KV pool of {numBlocks} blocks is too large ({total} floats per tensor).");
        Keys = new float[total];
        Values = new float[total];
    }

    /// <summary>Number of layers.</summary>
    public int NumLayers { get; }
    /// <summary>Number of blocks per layer.</summary>
    public int NumBlocks { get; }
    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }
    /// <summary>Floats per token per layer in each of keys and values.</summary>
    public int KvDim { get; }
    /// <summary><c>[numLayers, numBlocks, blockSize, kvDim]</c> keys.</summary>
    public float[] Keys { get; }
    /// <summary><c>[numLayers, numBlocks, blockSize, kvDim]</c> values.</summary>
    public float[] Values { get; }

    /// <summary>Offset in <see cref="Keys"/>/<see cref="Values"/> of the token at <paramref name="position"/> of a sequence with the given block table.</summary>
    public int SlotOffset(int layer, ReadOnlySpan<int> blockTable, int position)
    {
        int block = blockTable[position / BlockSize];
        return ((layer * NumBlocks + block) * BlockSize + position % BlockSize) * KvDim;
    }

    /// <summary>
    /// Copies every layer's keys and values of block <paramref name="sourceBlock"/> into
    /// <paramref name="destinationBlock"/> (copy-on-write of a shared block, see <see cref="BlockCopy"/>).
    /// </summary>
    public void CopyBlock(int sourceBlock, int destinationBlock)
    {
        if ((uint)sourceBlock >= (uint)NumBlocks) throw new ArgumentOutOfRangeException(nameof(sourceBlock), sourceBlock, $"The pool has {NumBlocks} blocks.");
        if ((uint)destinationBlock >= (uint)NumBlocks) throw new ArgumentOutOfRangeException(nameof(destinationBlock), destinationBlock, $"The pool has {NumBlocks} blocks.");
        int blockFloats = BlockSize * KvDim;
        for (int layer = 0; layer < NumLayers; layer++)
        {
            long layerBase = (long)layer * NumBlocks;
            int source = (int)((layerBase + sourceBlock) * blockFloats), destination = (int)((layerBase + destinationBlock) * blockFloats);
            Array.Copy(Keys, source, Keys, destination, blockFloats);
            Array.Copy(Values, source, Values, destination, blockFloats);
        }
    }
}
