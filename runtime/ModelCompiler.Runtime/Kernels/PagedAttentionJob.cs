using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using ModelCompiler.Runtime.Kernels.MatMul;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>Reads KV-cache elements of one stored type as f32: 16, 8 or 1 consecutive elements at a byte address.</summary>
internal unsafe interface IKvElements
{
    /// <summary>Bytes per element.</summary>
    static abstract int Size { get; }
    /// <summary>16 elements (needs AVX-512F).</summary>
    static abstract Vector512<float> Load16(byte* p);
    /// <summary>8 elements (needs AVX2).</summary>
    static abstract Vector256<float> Load8(byte* p);
    /// <summary>One element.</summary>
    static abstract float Load1(byte* p);
}

/// <summary>An f32 cache: plain loads.</summary>
internal unsafe struct F32Kv : IKvElements
{
    public static int Size => sizeof(float);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* p) => Vector512.Load((float*)p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* p) => Vector256.Load((float*)p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* p) => *(float*)p;
}

/// <summary>An f16 cache: widened in registers (exact: every f16 value is an f32 value).</summary>
internal unsafe struct F16Kv : IKvElements
{
    private const float TwoPow112 = 5.192296858534828e33f;

    public static int Size => sizeof(ushort);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* p) => HalfBits.HalfToSingle(Vector256.Load((ushort*)p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* p) => HalfBits.HalfToSingle(*(ushort*)p);

    /// <summary>8 halves to f32 with the bit manipulation of <see cref="HalfBits"/> (which has no 8-wide form).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* p)
    {
        var h = Avx2.ConvertToVector256Int32(Vector128.Load((ushort*)p)).AsUInt32();
        var bits = (h & Vector256.Create(0x7FFFu)) << 13;
        var finite = bits.AsSingle() * Vector256.Create(TwoPow112);
        var isInfOrNaN = Vector256.Equals(h & Vector256.Create(0x7C00u), Vector256.Create(0x7C00u));
        var magnitude = Vector256.ConditionalSelect(isInfOrNaN, bits | Vector256.Create(0x7F800000u), finite.AsUInt32());
        return (magnitude | ((h & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }
}

/// <summary>What <see cref="PagedAttentionJob{TKv}"/> reads and writes, independent of the cache's element type.</summary>
internal unsafe struct AttentionShape
{
    public float* Q, Output;
    public int* Positions, SequenceOfToken, BlockTables;
    public long LayerOffset;
    public int QRowStride, MaxBlocksPerSequence, NumBlocks, NumHeads, NumKvHeads, HeadDim, KvDim, BlockSize;
    public float ScoreScale;
}

/// <summary>
/// Attention of one (token, KV head) pair per chunk, over the layout of <see cref="PagedKvCache"/>: the query
/// heads of the group share every key and value they read. Positions are taken a tile at a time: scores of the
/// whole tile (16 positions per FMA from the transposed keys), then per head one max, one exp pass and at most
/// one rescale of the running output (the online softmax, a tile at a time), then the values.
/// </summary>
/// <remarks>
/// Paths: keys by 16 positions with AVX-512 when the block size is a multiple of 16 (else one position at a time);
/// values with Vector256 when the head width is a multiple of 8 (else scalar); the exp with Vector512 or Vector256.
/// Scores of a tile's last 16 may be computed for slots past the attended positions (within the same block, so
/// in bounds); they are never read.
/// </remarks>
internal unsafe struct PagedAttentionJob<TKv> : Threading.IParallelJob where TKv : struct, IKvElements
{
    /// <summary>Widest head: the queries and running outputs of a pass stay on the stack (2 × 16 KiB at most).</summary>
    public const int MaxHeadDim = MaxPassFloats;
    private const int MaxPassFloats = 4096;
    /// <summary>Most query heads of a GQA group handled in one pass over the context; larger groups take several.</summary>
    private const int MaxPassHeads = 8;
    /// <summary>Positions per tile.</summary>
    private const int Tile = 128;
    /// <summary>Floats per head in the score buffer: a tile plus the overhang of a last partial 16.</summary>
    private const int ScoreStride = Tile + 16;

    public AttentionShape Shape;
    public byte* Keys, Values;

    private static readonly bool s_vectorValues = Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Element offset of a sequence's logical block in the layer; a block the table lacks is an error.</summary>
    private readonly nint BlockOffset(int* blockTable, int logicalBlock, int t, int sequence)
    {
        int block = blockTable[logicalBlock];
        if ((uint)block >= (uint)Shape.NumBlocks)
            throw new InvalidOperationException($"Token {t} (sequence {sequence}) attends position {logicalBlock * Shape.BlockSize}, which its block table does not cover.");
        return (nint)(Shape.LayerOffset + (long)block * Shape.BlockSize * Shape.KvDim);
    }

    public void Execute(int chunk)
    {
        ref readonly var s = ref Shape;
        int t = chunk / s.NumKvHeads, kvHead = chunk % s.NumKvHeads;
        int headDim = s.HeadDim, groupSize = s.NumHeads / s.NumKvHeads, blockSize = s.BlockSize, kvDim = s.KvDim;
        int headsPerPass = Math.Min(groupSize, Math.Min(MaxPassHeads, MaxPassFloats / headDim));
        int sequence = s.SequenceOfToken[t];
        int* blockTable = s.BlockTables + (nint)sequence * s.MaxBlocksPerSequence;
        int lastPosition = s.Positions[t];
        float* queryRow = s.Q + (nint)t * s.QRowStride;
        float* outputRow = s.Output + (nint)t * s.NumHeads * headDim;
        bool vectorKeys = CpuFeatures.UseVector512 && blockSize % 16 == 0;
        bool vectorValues = s_vectorValues && headDim % 8 == 0;

        // Per pass: scaled queries and running outputs [headsPerPass, headDim], running max and sum [headsPerPass],
        // scores [headsPerPass, ScoreStride], and the byte offset of every value row of the tile.
        float* query = stackalloc float[headsPerPass * headDim];
        float* accumulators = stackalloc float[headsPerPass * headDim];
        float* runningMax = stackalloc float[headsPerPass];
        float* runningSum = stackalloc float[headsPerPass];
        float* scores = stackalloc float[headsPerPass * ScoreStride];
        nint* valueRows = stackalloc nint[Tile];

        for (int firstHead = kvHead * groupSize; firstHead < (kvHead + 1) * groupSize; firstHead += headsPerPass)
        {
            int numPassHeads = Math.Min(headsPerPass, (kvHead + 1) * groupSize - firstHead);
            for (int i = 0; i < numPassHeads * headDim; i++) query[i] = queryRow[firstHead * headDim + i] * s.ScoreScale;
            new Span<float>(accumulators, numPassHeads * headDim).Clear();
            for (int j = 0; j < numPassHeads; j++) { runningMax[j] = float.NegativeInfinity; runningSum[j] = 0; }

            for (int tileStart = 0; tileStart <= lastPosition; tileStart += Tile)
            {
                int tileLength = Math.Min(Tile, lastPosition + 1 - tileStart);
                // The tile in runs of consecutive slots of one block: one table lookup per block.
                for (int i = 0; i < tileLength;)
                {
                    int position = tileStart + i;
                    int logicalBlock = position / blockSize, offset = position - logicalBlock * blockSize;
                    int count = Math.Min(blockSize - offset, tileLength - i);
                    nint block = BlockOffset(blockTable, logicalBlock, t, sequence);
                    // Keys [kvDim, blockSize]: channel c of slot o at c × blockSize + o.
                    byte* keys = Keys + (block + (nint)kvHead * headDim * blockSize + offset) * TKv.Size;
                    if (vectorKeys) KeyScores16(keys, blockSize, query, numPassHeads, headDim, count, scores + i);
                    else KeyScores1(keys, blockSize, query, numPassHeads, headDim, count, scores + i);
                    // Values [blockSize, kvDim]: slot o's head at o × kvDim + kvHead × headDim.
                    nint valueRow = (block + (nint)offset * kvDim + kvHead * headDim) * TKv.Size;
                    for (int k = 0; k < count; k++) valueRows[i + k] = valueRow + (nint)k * kvDim * TKv.Size;
                    i += count;
                }

                for (int j = 0; j < numPassHeads; j++)
                {
                    float* headScores = scores + j * ScoreStride;
                    float tileMax = AttentionMath.Max(headScores, tileLength);
                    if (tileMax > runningMax[j])
                    {
                        // exp(-inf) = 0 on the first tile, which also zeroes the (empty) sums.
                        float correction = MathF.Exp(runningMax[j] - tileMax);
                        runningSum[j] *= correction;
                        var headAccumulator = new Span<float>(accumulators + j * headDim, headDim);
                        CpuKernels.Scale(headAccumulator, correction, headAccumulator);
                        runningMax[j] = tileMax;
                    }
                    runningSum[j] += AttentionMath.ExpSubtract(headScores, tileLength, runningMax[j]);
                }

                if (vectorValues && headDim == 8) Values8(valueRows, tileLength, scores, numPassHeads, accumulators);
                else if (vectorValues) ValuesBy8(valueRows, tileLength, scores, numPassHeads, headDim, accumulators);
                else Values1(valueRows, tileLength, scores, numPassHeads, headDim, accumulators);
            }

            for (int j = 0; j < numPassHeads; j++)
                CpuKernels.Scale(new ReadOnlySpan<float>(accumulators + j * headDim, headDim), 1f / runningSum[j], new Span<float>(outputRow + (firstHead + j) * headDim, headDim));
        }
    }

    /// <summary>
    /// Scores of <paramref name="count"/> consecutive slots (rounded up to 16) for every pass head: per 16 slots,
    /// one FMA per channel with the query element broadcast. Heads go in pairs so each key load serves two.
    /// </summary>
    private static void KeyScores16(byte* keys, int blockSize, float* query, int numHeads, int headDim, int count, float* scores)
    {
        nint channelBytes = (nint)blockSize * TKv.Size;
        for (int c = 0; c < count; c += 16)
        {
            byte* k0 = keys + (nint)c * TKv.Size;
            int j = 0;
            for (; j <= numHeads - 2; j += 2)
            {
                float* qa = query + j * headDim, qb = qa + headDim;
                Vector512<float> a0 = default, a1 = default, b0 = default, b1 = default;
                int d = 0;
                for (; d <= headDim - 2; d += 2)
                {
                    var k = TKv.Load16(k0 + d * channelBytes);
                    var l = TKv.Load16(k0 + (d + 1) * channelBytes);
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[d]), k, a0);
                    b0 = Vector512.FusedMultiplyAdd(Vector512.Create(qb[d]), k, b0);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[d + 1]), l, a1);
                    b1 = Vector512.FusedMultiplyAdd(Vector512.Create(qb[d + 1]), l, b1);
                }
                if (d < headDim)
                {
                    var k = TKv.Load16(k0 + d * channelBytes);
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[d]), k, a0);
                    b0 = Vector512.FusedMultiplyAdd(Vector512.Create(qb[d]), k, b0);
                }
                (a0 + a1).Store(scores + j * ScoreStride + c);
                (b0 + b1).Store(scores + (j + 1) * ScoreStride + c);
            }
            if (j < numHeads)
            {
                float* qa = query + j * headDim;
                Vector512<float> a0 = default, a1 = default;
                int d = 0;
                for (; d <= headDim - 2; d += 2)
                {
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[d]), TKv.Load16(k0 + d * channelBytes), a0);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[d + 1]), TKv.Load16(k0 + (d + 1) * channelBytes), a1);
                }
                if (d < headDim) a0 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[d]), TKv.Load16(k0 + d * channelBytes), a0);
                (a0 + a1).Store(scores + j * ScoreStride + c);
            }
        }
    }

    /// <summary>The portable form of <see cref="KeyScores16"/>: one slot at a time, exactly <paramref name="count"/> of them.</summary>
    private static void KeyScores1(byte* keys, int blockSize, float* query, int numHeads, int headDim, int count, float* scores)
    {
        nint channelBytes = (nint)blockSize * TKv.Size;
        for (int o = 0; o < count; o++)
        {
            byte* k0 = keys + (nint)o * TKv.Size;
            for (int j = 0; j < numHeads; j++)
            {
                float* qj = query + j * headDim;
                float sum = 0;
                for (int d = 0; d < headDim; d++) sum += qj[d] * TKv.Load1(k0 + d * channelBytes);
                scores[j * ScoreStride + o] = sum;
            }
        }
    }

    /// <summary>Heads of 8 (Stories260K): one Vector256 per value row, four independent sums per head to hide the FMA latency.</summary>
    private readonly void Values8(nint* valueRows, int count, float* weights, int numHeads, float* accumulators)
    {
        byte* values = Values;
        for (int j = 0; j < numHeads; j++)
        {
            float* w = weights + j * ScoreStride;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int i = 0;
            for (; i <= count - 4; i += 4)
            {
                a0 = Vector256.FusedMultiplyAdd(TKv.Load8(values + valueRows[i]), Vector256.Create(w[i]), a0);
                a1 = Vector256.FusedMultiplyAdd(TKv.Load8(values + valueRows[i + 1]), Vector256.Create(w[i + 1]), a1);
                a2 = Vector256.FusedMultiplyAdd(TKv.Load8(values + valueRows[i + 2]), Vector256.Create(w[i + 2]), a2);
                a3 = Vector256.FusedMultiplyAdd(TKv.Load8(values + valueRows[i + 3]), Vector256.Create(w[i + 3]), a3);
            }
            for (; i < count; i++) a0 = Vector256.FusedMultiplyAdd(TKv.Load8(values + valueRows[i]), Vector256.Create(w[i]), a0);
            float* acc = accumulators + j * 8;
            (Vector256.Load(acc) + ((a0 + a1) + (a2 + a3))).Store(acc);
        }
    }

    /// <summary>Heads that are a multiple of 8 wide: each value row is read once for all pass heads.</summary>
    private readonly void ValuesBy8(nint* valueRows, int count, float* weights, int numHeads, int headDim, float* accumulators)
    {
        for (int i = 0; i < count; i++)
        {
            byte* row = Values + valueRows[i];
            for (int c = 0; c < headDim; c += 8)
            {
                var v = TKv.Load8(row + (nint)c * TKv.Size);
                for (int j = 0; j < numHeads; j++)
                {
                    float* acc = accumulators + j * headDim + c;
                    Vector256.FusedMultiplyAdd(v, Vector256.Create(weights[j * ScoreStride + i]), Vector256.Load(acc)).Store(acc);
                }
            }
        }
    }

    /// <summary>The portable value sum.</summary>
    private readonly void Values1(nint* valueRows, int count, float* weights, int numHeads, int headDim, float* accumulators)
    {
        for (int i = 0; i < count; i++)
        {
            byte* row = Values + valueRows[i];
            for (int j = 0; j < numHeads; j++)
            {
                float w = weights[j * ScoreStride + i];
                float* acc = accumulators + j * headDim;
                for (int d = 0; d < headDim; d++) acc[d] += w * TKv.Load1(row + (nint)d * TKv.Size);
            }
        }
    }
}
