using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using ModelCompiler.Runtime.Kernels.MatMul;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>Reads KV-cache elements of one stored type as f32: 16 or 1 consecutive elements at a byte address.</summary>
internal unsafe interface IKvElements
{
    /// <summary>Bytes per element.</summary>
    static abstract int Size { get; }
    /// <summary>16 elements (needs <see cref="CpuFeatures.UseAttentionLanes"/>).</summary>
    static abstract Vector512<float> Load16(byte* p);
    /// <summary>One element.</summary>
    static abstract float Load1(byte* p);
    /// <summary>
    /// What the loads leave out: a loaded element times this power of two is the stored value, exactly. The kernels
    /// multiply the factor each element is paired with (query elements, softmax weights) by it instead.
    /// </summary>
    static abstract float LoadScale { get; }
}

/// <summary>An f32 cache: plain loads.</summary>
internal unsafe struct F32Kv : IKvElements
{
    public static int Size => sizeof(float);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* p) => Vector512.Load((float*)p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* p) => *(float*)p;
    public static float LoadScale => 1f;
}

/// <summary>An f16 cache: widened in registers (exact: every f16 value is an f32 value).</summary>
internal unsafe struct F16Kv : IKvElements
{
    public static int Size => sizeof(ushort);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* p) => CpuFeatures.UseVector512
        ? HalfBits.HalfToSingle(Vector256.Load((ushort*)p))
        // AVX2 (see CpuFeatures.UseAttentionLanes): the two halves widened with the 256-bit form, same values.
        : Vector512.Create(HalfBits.HalfToSingle(Vector128.Load((ushort*)p)), HalfBits.HalfToSingle(Vector128.Load((ushort*)p + 8)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* p) => HalfBits.HalfToSingle(*(ushort*)p);
    public static float LoadScale => 1f;
}

/// <summary>
/// An f16 cache that holds no NaN (<see cref="KvCache.PagedKvCache.MayHoldNaN"/>; infinities are saturated when written), read in
/// three instructions per 16 elements instead of the general widening's eleven, each element 2^-112 times its value
/// (<see cref="HalfBits.ScaledFiniteHalfToSingle(Vector256{short})"/>): the kernels fold <see cref="LoadScale"/> into
/// the query elements and softmax weights, so every product, and so every result, is the one <see cref="F16Kv"/> gives.
/// The general widening bounded a decode step's attention over an f16 cache by its arithmetic, not by memory.
/// </summary>
internal unsafe struct FiniteF16Kv : IKvElements
{
    public static int Size => sizeof(ushort);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* p) => CpuFeatures.UseVector512
        ? HalfBits.ScaledFiniteHalfToSingle(Vector256.Load((short*)p))
        : Vector512.Create(HalfBits.ScaledFiniteHalfToSingle(Vector128.Load((short*)p)), HalfBits.ScaledFiniteHalfToSingle(Vector128.Load((short*)p + 8)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* p) => HalfBits.ScaledFiniteHalfToSingle(*(ushort*)p);
    public static float LoadScale => HalfBits.FiniteHalfScale;
}

/// <summary>What <see cref="PagedAttentionJob{TKv}"/> reads and writes, independent of the cache's element type.</summary>
internal unsafe struct AttentionShape
{
    public float* Q, Output;
    public int* Positions, SequenceOfToken, BlockTables;
    public long LayerOffset;
    public int QRowStride, MaxBlocksPerSequence, NumBlocks, NumHeads, NumKvHeads, HeadDim, KvDim, BlockSize;
    public float ScoreScale;
    /// <summary>
    /// KV heads per chunk (divides NumKvHeads; see <see cref="PagedAttentionJob{TKv}.KvHeadsPerChunk"/>): adjacent heads'
    /// slices of a block are adjacent in memory, so a chunk of several reads each block's keys and values as one
    /// contiguous run and works out its runs once.
    /// </summary>
    public int KvHeadsPerChunk;
    /// <summary>
    /// Element offset, in the layer's keys or values, of a sequence's logical block (both attention jobs' one lookup); a
    /// block the table lacks is an error naming batch token <paramref name="t"/> of <paramref name="sequence"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly nint BlockOffset(int* blockTable, int logicalBlock, int t, int sequence)
    {
        int block = blockTable[logicalBlock];
        if ((uint)block >= (uint)NumBlocks) ThrowUncovered(t, sequence, logicalBlock * BlockSize);
        return (nint)(LayerOffset + (long)block * BlockSize * KvDim);
    }

    // Kept out of line so that the lookup above inlines into the kernels' loops.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowUncovered(int t, int sequence, int position) =>
        throw new InvalidOperationException($"Token {t} (sequence {sequence}) attends position {position}, which its block table does not cover.");

    /// <summary>
    /// Prefetch each next block's keys and values (wide heads only): set for decode-sized batches, whose KV comes cold
    /// from DRAM after a step's weights went through the caches; a prefill revisits the same hot blocks for every token.
    /// </summary>
    public bool PrefetchRuns;
}

/// <summary>
/// Attention of one (token, KV head) pair per chunk, over the layout of <see cref="PagedKvCache"/> (keys and values
/// both <c>[KvDim, BlockSize]</c> per block): the query heads of the group share every key and value they read.
/// Positions are taken a tile at a time: scores of the whole tile, then per head one max, one exp pass and at most
/// one rescale of the running output (the online softmax, a tile at a time), then the values.
/// </summary>
/// <remarks>
/// With AVX-512 or AVX2 (<see cref="CpuFeatures.UseAttentionLanes"/>) and blocks of a multiple of 16 slots, positions
/// are the vector lanes throughout: q·k of 16 positions is one FMA per channel with the query element broadcast, and
/// the value sum keeps per (head, channel) a vector of 16 per-position partial sums, folded once at the end; no
/// horizontal sum per position. Otherwise one position at a time (the portable path). A partial last 16 computes
/// scores for slots past the attended positions (inside the same block, so in bounds); they are never read, and their
/// value lanes are masked out.
/// </remarks>
[SkipLocalsInit] // every stack buffer is written before it is read; zeroing them was 15% of the kernel's own time
internal unsafe struct PagedAttentionJob<TKv> : Threading.IParallelJob where TKv : struct, IKvElements
{
    /// <summary>Widest head: 16 partial sums per channel of one head must fit the accumulator budget.</summary>
    public const int MaxHeadDim = MaxAccumulatorFloats / Lanes;
    /// <summary>Floats of running output per pass, on the stack (64 KiB; the worker threads have 4 MiB).</summary>
    private const int MaxAccumulatorFloats = 16384;
    /// <summary>Most query heads of a GQA group handled in one pass over the context; larger groups take several.</summary>
    private const int MaxPassHeads = 8;
    /// <summary>Positions per tile.</summary>
    private const int Tile = 128;
    /// <summary>Floats per head in the score buffer: a tile plus the overhang of a last partial 16.</summary>
    private const int ScoreStride = Tile + Lanes;
    private const int Lanes = 16;

    public AttentionShape Shape;
    public byte* Keys, Values;

    public void Execute(int chunk)
    {
        ref readonly var s = ref Shape;
        int chunksPerToken = s.NumKvHeads / s.KvHeadsPerChunk;
        int t = chunk / chunksPerToken, firstKvHead = chunk % chunksPerToken * s.KvHeadsPerChunk;
        int headDim = s.HeadDim, groupSize = s.NumHeads / s.NumKvHeads, blockSize = s.BlockSize;
        bool vector = CpuFeatures.UseAttentionLanes && blockSize % Lanes == 0;
        int lanes = vector ? Lanes : 1;
        // The chunk's query heads: whole groups; several KV heads' groups only when they fit one pass (see PassHeads).
        int chunkFirstHead = firstKvHead * groupSize, chunkEndHead = (firstKvHead + s.KvHeadsPerChunk) * groupSize;
        int headsPerPass = s.KvHeadsPerChunk > 1 ? chunkEndHead - chunkFirstHead : PassHeads(groupSize, headDim, lanes);
        int sequence = s.SequenceOfToken[t];
        int* blockTable = s.BlockTables + (nint)sequence * s.MaxBlocksPerSequence;
        int lastPosition = s.Positions[t];
        float* queryRow = s.Q + (nint)t * s.QRowStride;
        float* outputRow = s.Output + (nint)t * s.NumHeads * headDim;
        // Elements from a block's channel 0 of KV head 0 to channel 0 of the next KV head.
        nint kvHeadElements = (nint)headDim * blockSize;

        // Per pass: scaled queries [headsPerPass, headDim]; running outputs [headsPerPass, headDim, lanes] (per-lane
        // partial sums); running max and sum and the tile's max [headsPerPass]; scores [headsPerPass, ScoreStride]; and the tile's runs
        // of consecutive slots: first position in the tile, and element offset of the run's first slot of channel 0
        // of KV head 0.
        // A query element scaled for the loads (FiniteF16Kv) must stay finite; a chunk with one at 2^16 or more after
        // ScoreScale (far beyond what a model's attention produces) takes the exact widening instead.
        if (TKv.LoadScale != 1f && !QueriesFitLoadScale(queryRow + chunkFirstHead * headDim, (chunkEndHead - chunkFirstHead) * headDim, s.ScoreScale))
        {
            new PagedAttentionJob<F16Kv> { Shape = Shape, Keys = Keys, Values = Values }.Execute(chunk);
            return;
        }
        float* query = stackalloc float[headsPerPass * headDim];
        int accumulatorFloats = headDim * lanes;
        float* accumulators = stackalloc float[headsPerPass * accumulatorFloats];
        float* runningMax = stackalloc float[headsPerPass];
        float* runningSum = stackalloc float[headsPerPass];
        float* tileMax = stackalloc float[headsPerPass];
        float* scores = stackalloc float[headsPerPass * ScoreStride];
        int* runStarts = stackalloc int[Tile + 1];
        nint* runOffsets = stackalloc nint[Tile];

        for (int firstHead = chunkFirstHead; firstHead < chunkEndHead; firstHead += headsPerPass)
        {
            int numPassHeads = Math.Min(headsPerPass, chunkEndHead - firstHead);
            // The KV heads this pass reads: their query heads are pass heads [j0, j1) (a part of a group when a large
            // group takes several passes).
            int firstPassKvHead = firstHead / groupSize, endPassKvHead = (firstHead + numPassHeads - 1) / groupSize + 1;
            ScaleQueries(queryRow + firstHead * headDim, query, numPassHeads * headDim, s.ScoreScale);
            new Span<float>(accumulators, numPassHeads * accumulatorFloats).Clear();
            for (int j = 0; j < numPassHeads; j++) { runningMax[j] = float.NegativeInfinity; runningSum[j] = 0; }

            for (int tileStart = 0; tileStart <= lastPosition; tileStart += Tile)
            {
                int tileLength = Math.Min(Tile, lastPosition + 1 - tileStart);
                // The tile in runs of consecutive slots of one block: one table lookup per block.
                int numRuns = 0;
                int logicalBlock = tileStart / blockSize, offset = tileStart - logicalBlock * blockSize;
                for (int i = 0; i < tileLength; numRuns++, logicalBlock++, offset = 0)
                {
                    runStarts[numRuns] = i;
                    // Channel c of KV head h, slot o: element (h × headDim + c) × blockSize + o of the block.
                    runOffsets[numRuns] = s.BlockOffset(blockTable, logicalBlock, t, sequence) + offset;
                    i += Math.Min(blockSize - offset, tileLength - i);
                }
                runStarts[numRuns] = tileLength;

                if (vector && endPassKvHead - firstPassKvHead > 1)
                {
                    // Whole groups of adjacent KV heads (see KvHeadsPerChunk): one call reads each block's keys in order.
                    nint kvHeadBytes = firstPassKvHead * kvHeadElements * TKv.Size;
                    KeyScores16(Keys + kvHeadBytes, s.PrefetchRuns ? Values + kvHeadBytes : null, runOffsets, runStarts, numRuns, blockSize, query, groupSize, headDim, scores, endPassKvHead - firstPassKvHead);
                }
                else
                for (int kvHead = firstPassKvHead; kvHead < endPassKvHead; kvHead++)
                {
                    var (j0, j1) = PassHeadsOf(kvHead, groupSize, firstHead, numPassHeads);
                    nint kvHeadBytes = kvHead * kvHeadElements * TKv.Size;
                    if (vector)
                        KeyScores16(Keys + kvHeadBytes, s.PrefetchRuns ? Values + kvHeadBytes : null, runOffsets, runStarts, numRuns, blockSize, query + j0 * headDim, j1 - j0, headDim, scores + j0 * ScoreStride, 1);
                    else
                        for (int r = 0; r < numRuns; r++)
                            KeyScores1(Keys + kvHeadBytes + runOffsets[r] * TKv.Size, blockSize, query + j0 * headDim, j1 - j0, headDim, runStarts[r + 1] - runStarts[r], scores + j0 * ScoreStride + runStarts[r]);
                }

                // The softmax steps four heads at a time where there are four: a narrow head's tile is a few vectors,
                // too short for one head's exp chain to fill the pipeline on its own.
                int h = 0;
                if (vector)
                    for (; h + 4 <= numPassHeads; h += 4) AttentionMath.MaxPadded4(scores + h * ScoreStride, ScoreStride, tileLength, tileMax + h);
                for (; h < numPassHeads; h++)
                    tileMax[h] = vector ? AttentionMath.MaxPadded(scores + h * ScoreStride, tileLength) : AttentionMath.Max(scores + h * ScoreStride, tileLength);
                for (int j = 0; j < numPassHeads; j++)
                {
                    if (tileMax[j] > runningMax[j])
                    {
                        // On the first tile the sums are still zero and need no rescaling (a scalar exp and a pass over
                        // the accumulators per head and tile were a few percent of a Stories260K step).
                        if (tileStart > 0)
                        {
                            float correction = MathF.Exp(runningMax[j] - tileMax[j]);
                            runningSum[j] *= correction;
                            var headAccumulator = new Span<float>(accumulators + j * accumulatorFloats, accumulatorFloats);
                            CpuKernels.Scale(headAccumulator, correction, headAccumulator);
                        }
                        runningMax[j] = tileMax[j];
                    }
                }
                h = 0;
                if (vector)
                    for (; h + 4 <= numPassHeads; h += 4) AttentionMath.ExpSubtractPadded4(scores + h * ScoreStride, ScoreStride, tileLength, runningMax + h, runningSum + h);
                for (; h < numPassHeads; h++)
                    runningSum[h] += vector ? AttentionMath.ExpSubtractPadded(scores + h * ScoreStride, tileLength, runningMax[h]) : AttentionMath.ExpSubtract(scores + h * ScoreStride, tileLength, runningMax[h]);

                // The weights (at most 1) take the loads' scale; the running sums above did not.
                if (TKv.LoadScale != 1f)
                    for (int j = 0; j < numPassHeads; j++)
                    {
                        var weights = new Span<float>(scores + j * ScoreStride, (tileLength + lanes - 1) / lanes * lanes);
                        CpuKernels.Scale(weights, TKv.LoadScale, weights);
                    }
                for (int kvHead = firstPassKvHead; kvHead < endPassKvHead; kvHead++)
                {
                    var (j0, j1) = PassHeadsOf(kvHead, groupSize, firstHead, numPassHeads);
                    byte* valueBase = Values + kvHead * kvHeadElements * TKv.Size;
                    float* headScores = scores + j0 * ScoreStride, headAccumulators = accumulators + j0 * accumulatorFloats;
                    if (vector && headDim % 8 == 0)
                        Values16By8Channels(valueBase, runOffsets, runStarts, numRuns, blockSize, headScores, j1 - j0, headDim, headAccumulators);
                    else
                        for (int r = 0; r < numRuns; r++)
                        {
                            byte* values = valueBase + runOffsets[r] * TKv.Size;
                            int first = runStarts[r], count = runStarts[r + 1] - first;
                            if (vector) Values16(values, blockSize, headScores + first, count, j1 - j0, headDim, headAccumulators);
                            else Values1(values, blockSize, headScores + first, count, j1 - j0, headDim, headAccumulators);
                        }
                }
            }

            for (int j = 0; j < numPassHeads; j++)
            {
                float inverseSum = 1f / runningSum[j];
                float* acc = accumulators + j * accumulatorFloats;
                float* output = outputRow + (firstHead + j) * headDim;
                if (vector)
                {
                    int d = 0;
                    if (Avx512F.IsSupported)
                        for (; d + Lanes <= headDim; d += Lanes) (AttentionMath.SumEach16(acc + d * Lanes) * inverseSum).Store(output + d);
                    for (; d < headDim; d++) output[d] = AttentionMath.Sum(Vector512.Load(acc + d * Lanes)) * inverseSum;
                }
                else
                    for (int d = 0; d < headDim; d++) output[d] = acc[d] * inverseSum;
            }
        }
    }

    /// <summary>
    /// Whether every one of <paramref name="count"/> queries times <paramref name="scoreScale"/> and then
    /// <see cref="IKvElements.LoadScale"/> stays finite (or was not finite already).
    /// </summary>
    private static bool QueriesFitLoadScale(float* queries, int count, float scoreScale)
    {
        // |x| < 2^128 / LoadScale after the score scale; x × LoadScale is then below the largest float's rounding edge.
        float limit = float.MaxValue / TKv.LoadScale;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var tooLarge = Vector512<float>.Zero;
            for (; i + 16 <= count; i += 16)
            {
                var x = Vector512.Abs(Vector512.Load(queries + i) * scoreScale);
                tooLarge |= Vector512.GreaterThan(x, Vector512.Create(limit)) & Vector512.LessThan(x, Vector512.Create(float.PositiveInfinity));
            }
            if (tooLarge != Vector512<float>.Zero) return false;
        }
        for (; i < count; i++)
        {
            float x = MathF.Abs(queries[i] * scoreScale);
            if (x > limit && float.IsFinite(x)) return false;
        }
        return true;
    }

    /// <summary><c>query[i] = queryRow[i] × scoreScale × LoadScale</c> (the second product exact), 16 at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleQueries(float* queryRow, float* query, int count, float scoreScale)
    {
        int i = 0;
        for (; i + 16 <= count; i += 16)
        {
            var x = Vector512.Load(queryRow + i) * scoreScale;
            if (TKv.LoadScale != 1f) x *= TKv.LoadScale;
            x.Store(query + i);
        }
        for (; i < count; i++) query[i] = TKv.LoadScale != 1f ? queryRow[i] * scoreScale * TKv.LoadScale : queryRow[i] * scoreScale;
    }

    /// <summary>Query heads of one KV head's group in one pass: the whole group when its running outputs fit.</summary>
    private static int PassHeads(int groupSize, int headDim, int lanes) =>
        Math.Min(groupSize, Math.Min(MaxPassHeads, MaxAccumulatorFloats / (headDim * lanes)));

    /// <summary>Most query heads of a chunk that reads several KV heads (all in one pass): bounds its stack buffers.</summary>
    private const int MaxChunkHeads = 32;

    /// <summary>
    /// How many adjacent KV heads one chunk takes: the most (a divisor of <paramref name="numKvHeads"/>) whose query heads
    /// fit one pass (<see cref="MaxChunkHeads"/>, and their running outputs within the accumulator budget), as long as
    /// the <paramref name="numTokens"/> tokens still give each of <paramref name="numThreads"/> threads a chunk; else 1.
    /// </summary>
    /// <remarks>
    /// Every KV head's slice of a block is its own stretch of memory (Llama110M: 4 KiB of keys and 4 KiB of values per
    /// head per 16-slot block, in f32), and a block's heads follow one another. One head per chunk turns a decode
    /// step's KV read into thousands of 4 KiB stretches at scattered addresses, each of which the hardware
    /// prefetcher meets cold; several heads per chunk read each block as one stretch of heads × 4 KiB. Measured with
    /// the benchmarks' <c>quick decode-attention f32 16 192</c> (16 sequences of 192 positions, 12 layers, 226 MB of
    /// f32 KV from DRAM, two threads, helpers paused), median per step: 1 head per chunk 11.6 ms (19.5 GB/s), 2: 10.3,
    /// 3: 9.5, 4: 9.2, 6: 8.0, 12: 7.5 ms (30.3 GB/s); with 4 sequences 2.77 ms for 1 head against 1.83 ms for 12.
    /// </remarks>
    public static int KvHeadsPerChunk(int numHeads, int numKvHeads, int headDim, int blockSize, int numTokens, int numThreads)
    {
        int lanes = CpuFeatures.UseAttentionLanes && blockSize % Lanes == 0 ? Lanes : 1;
        int groupSize = numHeads / numKvHeads;
        for (int g = numKvHeads; g > 1; g--)
        {
            if (numKvHeads % g != 0) continue;
            int heads = g * groupSize;
            if (heads <= MaxChunkHeads && (long)heads * headDim * lanes <= MaxAccumulatorFloats && (long)numTokens * (numKvHeads / g) >= numThreads)
                return g;
        }
        return 1;
    }

    /// <summary>Pass heads [j0, j1) (relative to the pass's first head) that read <paramref name="kvHead"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (int J0, int J1) PassHeadsOf(int kvHead, int groupSize, int firstHead, int numPassHeads) =>
        (Math.Max(firstHead, kvHead * groupSize) - firstHead, Math.Min(firstHead + numPassHeads, (kvHead + 1) * groupSize) - firstHead);

    /// <summary>
    /// Scores of a tile's runs of slots (each rounded up to 16) for every pass head: per 16 slots, one FMA per
    /// channel with the query element broadcast. Heads go in pairs so each key load serves two. The pass reads
    /// <paramref name="numKvHeads"/> adjacent KV heads, each with <paramref name="numHeads"/> query heads (its whole
    /// group when there are several), and takes them KV head by KV head inside each run, so that a block's keys are
    /// read in address order.
    /// </summary>
    private static void KeyScores16(byte* keyBase, byte* valueBase, nint* runOffsets, int* runStarts, int numRuns, int blockSize, float* queries, int numHeads, int headDim, float* tileScores, int numKvHeads)
    {
        nint channelBytes = (nint)blockSize * TKv.Size;
        // A head's slice of a block (headDim channels × blockSize slots) is one contiguous run of memory, and so are the
        // slices of the pass's adjacent KV heads together, but the next block of the sequence is elsewhere in the pool,
        // where the hardware prefetcher has to start over. Runs of 2 KiB or more (Llama110M: 4 KiB per head per block;
        // Stories260K: four 512-byte heads) prefetch the next run's keys and this run's values into L2 while the scores
        // are computed; shorter ones would mostly pay for the instructions. valueBase is null when the caller asked for
        // no prefetching.
        // The prefetches trickle: with each channel's key line read, the same line of the next run's keys and of this
        // run's values (Trickle). Prefetching a whole run (tens of KiB) at once, as before, filled the core's miss queue
        // and stalled the scores behind it, so a DRAM-resident step ran its arithmetic and its memory traffic one after
        // the other (one thread read 17 GB/s of KV, about 1/(1/40 + 1/34) of its cache-resident and streaming rates).
        // quick decode-attention f32 16 192, three alternating runs: 6.2–6.6 ms against 7.2–8.3; f32 1 1024: 1.78 and
        // 1.96 ms against 2.11 and 2.08; f16 1 1024: 1.07 and 1.03 against 1.47 and 1.24.
        nint headBytes = headDim * channelBytes;
        bool prefetch = valueBase != null && headBytes >= PrefetchMinRunBytes;
        if (headDim == 8 && !prefetch)
        {
            for (int kv = 0; kv < numKvHeads; kv++)
                KeyScores16Width8(keyBase + kv * headBytes, runOffsets, runStarts, numRuns, channelBytes, queries + kv * numHeads * 8, numHeads, tileScores + kv * numHeads * ScoreStride);
            return;
        }
        for (int r = 0; r < numRuns; r++)
        {
            // From a key line of this run to the same line of the next run's keys (0 on the tile's last run: the
            // prefetch then repeats the line being read) and to the same line of this run's values.
            nint keyAhead = prefetch && r + 1 < numRuns ? (runOffsets[r + 1] - runOffsets[r]) * TKv.Size : 0;
            nint valueAhead = prefetch ? (nint)(valueBase - keyBase) : 0;
            for (int kv = 0; kv < numKvHeads; kv++)
            for (int c = 0, count = runStarts[r + 1] - runStarts[r]; c < count; c += Lanes)
            {
                byte* k0 = keyBase + kv * headBytes + (runOffsets[r] + c) * TKv.Size;
                float* scores = tileScores + kv * numHeads * ScoreStride + runStarts[r];
                float* query = queries + kv * numHeads * headDim;
                int j = 0;
                for (; j <= numHeads - 2; j += 2)
                {
                    float* qa = query + j * headDim, qb = qa + headDim;
                    Vector512<float> a0 = default, a1 = default, b0 = default, b1 = default;
                    int d = 0;
                    for (; d <= headDim - 2; d += 2)
                    {
                        if (prefetch && j == 0) Trickle(k0 + d * channelBytes, channelBytes, keyAhead, valueAhead);
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
                    // A lone head (every head of a model without GQA): four chains, so that the FMA latency is not the
                    // bound of the 64-channel sums.
                    // Pointers stepped four channels at a time (indexes multiplied per load were half the loop's instructions).
                    float* qa = query + j * headDim;
                    byte* k = k0;
                    nint channel2 = 2 * channelBytes, channel3 = 3 * channelBytes, channel4 = 4 * channelBytes;
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    int d = 0;
                    for (; d <= headDim - 4; d += 4, qa += 4, k += channel4)
                    {
                        if (prefetch && j == 0)
                        {
                            Trickle(k, channelBytes, keyAhead, valueAhead);
                            Trickle(k + channel2, channelBytes, keyAhead, valueAhead);
                        }
                        a0 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[0]), TKv.Load16(k), a0);
                        a1 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[1]), TKv.Load16(k + channelBytes), a1);
                        a2 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[2]), TKv.Load16(k + channel2), a2);
                        a3 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[3]), TKv.Load16(k + channel3), a3);
                    }
                    for (; d < headDim; d++, qa++, k += channelBytes) a0 = Vector512.FusedMultiplyAdd(Vector512.Create(qa[0]), TKv.Load16(k), a0);
                    ((a0 + a1) + (a2 + a3)).Store(scores + j * ScoreStride + c);
                }
            }
        }
    }

    /// <summary>
    /// <see cref="KeyScores16"/> for heads 8 wide (Stories260K's): per pair of heads the 16 query elements are broadcast
    /// once, into registers, for all of the tile's runs, so each 16 slots cost their 8 key loads and 16 FMAs only (the
    /// general loop re-reads a broadcast query element for every FMA, which made it load-bound). Same sums, same order.
    /// </summary>
    private static void KeyScores16Width8(byte* keyBase, nint* runOffsets, int* runStarts, int numRuns, nint channelBytes, float* query, int numHeads, float* tileScores)
    {
        int j = 0;
        for (; j + 2 <= numHeads; j += 2)
        {
            float* qa = query + j * 8, qb = qa + 8;
            var qa0 = Vector512.Create(qa[0]); var qa1 = Vector512.Create(qa[1]); var qa2 = Vector512.Create(qa[2]); var qa3 = Vector512.Create(qa[3]);
            var qa4 = Vector512.Create(qa[4]); var qa5 = Vector512.Create(qa[5]); var qa6 = Vector512.Create(qa[6]); var qa7 = Vector512.Create(qa[7]);
            var qb0 = Vector512.Create(qb[0]); var qb1 = Vector512.Create(qb[1]); var qb2 = Vector512.Create(qb[2]); var qb3 = Vector512.Create(qb[3]);
            var qb4 = Vector512.Create(qb[4]); var qb5 = Vector512.Create(qb[5]); var qb6 = Vector512.Create(qb[6]); var qb7 = Vector512.Create(qb[7]);
            float* sa = tileScores + j * ScoreStride, sb = sa + ScoreStride;
            for (int r = 0; r < numRuns; r++)
            for (int c = 0, count = runStarts[r + 1] - runStarts[r]; c < count; c += Lanes)
            {
                byte* k0 = keyBase + (runOffsets[r] + c) * TKv.Size;
                // The pairing of KeyScores16's loop: a0/b0 take the even channels, a1/b1 the odd ones, in order.
                var k = TKv.Load16(k0); var l = TKv.Load16(k0 + channelBytes);
                var a0 = qa0 * k; var b0 = qb0 * k; var a1 = qa1 * l; var b1 = qb1 * l;
                k = TKv.Load16(k0 + 2 * channelBytes); l = TKv.Load16(k0 + 3 * channelBytes);
                a0 = Vector512.FusedMultiplyAdd(qa2, k, a0); b0 = Vector512.FusedMultiplyAdd(qb2, k, b0);
                a1 = Vector512.FusedMultiplyAdd(qa3, l, a1); b1 = Vector512.FusedMultiplyAdd(qb3, l, b1);
                k = TKv.Load16(k0 + 4 * channelBytes); l = TKv.Load16(k0 + 5 * channelBytes);
                a0 = Vector512.FusedMultiplyAdd(qa4, k, a0); b0 = Vector512.FusedMultiplyAdd(qb4, k, b0);
                a1 = Vector512.FusedMultiplyAdd(qa5, l, a1); b1 = Vector512.FusedMultiplyAdd(qb5, l, b1);
                k = TKv.Load16(k0 + 6 * channelBytes); l = TKv.Load16(k0 + 7 * channelBytes);
                a0 = Vector512.FusedMultiplyAdd(qa6, k, a0); b0 = Vector512.FusedMultiplyAdd(qb6, k, b0);
                a1 = Vector512.FusedMultiplyAdd(qa7, l, a1); b1 = Vector512.FusedMultiplyAdd(qb7, l, b1);
                int at = runStarts[r] + c;
                (a0 + a1).Store(sa + at);
                (b0 + b1).Store(sb + at);
            }
        }
        if (j < numHeads)
        {
            // A lone head: four chains as in KeyScores16 (channels d, d + 4 share one).
            float* qa = query + j * 8;
            var q0 = Vector512.Create(qa[0]); var q1 = Vector512.Create(qa[1]); var q2 = Vector512.Create(qa[2]); var q3 = Vector512.Create(qa[3]);
            var q4 = Vector512.Create(qa[4]); var q5 = Vector512.Create(qa[5]); var q6 = Vector512.Create(qa[6]); var q7 = Vector512.Create(qa[7]);
            float* sa = tileScores + j * ScoreStride;
            for (int r = 0; r < numRuns; r++)
            for (int c = 0, count = runStarts[r + 1] - runStarts[r]; c < count; c += Lanes)
            {
                byte* k0 = keyBase + (runOffsets[r] + c) * TKv.Size;
                var a0 = q0 * TKv.Load16(k0);
                var a1 = q1 * TKv.Load16(k0 + channelBytes);
                var a2 = q2 * TKv.Load16(k0 + 2 * channelBytes);
                var a3 = q3 * TKv.Load16(k0 + 3 * channelBytes);
                a0 = Vector512.FusedMultiplyAdd(q4, TKv.Load16(k0 + 4 * channelBytes), a0);
                a1 = Vector512.FusedMultiplyAdd(q5, TKv.Load16(k0 + 5 * channelBytes), a1);
                a2 = Vector512.FusedMultiplyAdd(q6, TKv.Load16(k0 + 6 * channelBytes), a2);
                a3 = Vector512.FusedMultiplyAdd(q7, TKv.Load16(k0 + 7 * channelBytes), a3);
                ((a0 + a1) + (a2 + a3)).Store(sa + runStarts[r] + c);
            }
        }
    }

    // Two channels' lines (one 64-byte line per channel in f32, one for both in f16): the same channels of the next run's
    // keys and of this run's values, into L2.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Trickle(byte* key, nint channelBytes, nint keyAhead, nint valueAhead)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        System.Runtime.Intrinsics.X86.Sse.Prefetch1(key + keyAhead);
        System.Runtime.Intrinsics.X86.Sse.Prefetch1(key + valueAhead);
        if (channelBytes >= 64)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch1(key + channelBytes + keyAhead);
            System.Runtime.Intrinsics.X86.Sse.Prefetch1(key + channelBytes + valueAhead);
        }
    }

    /// <summary>Run size (bytes of one head's slice of a block) from which <see cref="KeyScores16"/> prefetches.</summary>
    private const int PrefetchMinRunBytes = 2048;

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

    /// <summary>
    /// Heads whose width is a multiple of 8 (Stories260K's 8, Llama's 64): eight channel sums at a time stay in
    /// registers over all runs of the tile, each 16 slots one weight vector and eight FMAs (the general path below
    /// loads and stores its sums in memory for every FMA, which cost 15% of a Llama110M serving step). Lanes past
    /// the attended positions are zeroed in both weights and values (a stale or never written slot may hold
    /// anything, and 0 × NaN is NaN).
    /// </summary>
    private static void Values16By8Channels(byte* valueBase, nint* runOffsets, int* runStarts, int numRuns, int blockSize, float* tileWeights, int numHeads, int headDim, float* accumulators)
    {
        nint channelBytes = (nint)blockSize * TKv.Size;
        int j = 0;
        for (; j + 2 <= numHeads; j += 2)
            for (int d0 = 0; d0 < headDim; d0 += 8)
                Values16By8ChannelsPair(valueBase, runOffsets, runStarts, numRuns, channelBytes, tileWeights + j * ScoreStride, accumulators + (j * headDim + d0) * Lanes, headDim * Lanes, d0);
        for (; j < numHeads; j++)
        for (int d0 = 0; d0 < headDim; d0 += 8)
        {
            float* acc = accumulators + (j * headDim + d0) * Lanes;
            var a0 = Vector512.Load(acc); var a1 = Vector512.Load(acc + 16); var a2 = Vector512.Load(acc + 32); var a3 = Vector512.Load(acc + 48);
            var a4 = Vector512.Load(acc + 64); var a5 = Vector512.Load(acc + 80); var a6 = Vector512.Load(acc + 96); var a7 = Vector512.Load(acc + 112);
            for (int r = 0; r < numRuns; r++)
            for (int c = 0, count = runStarts[r + 1] - runStarts[r]; c < count; c += Lanes)
            {
                byte* v = valueBase + (runOffsets[r] + c) * TKv.Size + d0 * channelBytes;
                var p = Vector512.Load(tileWeights + j * ScoreStride + runStarts[r] + c);
                var v0 = TKv.Load16(v); var v1 = TKv.Load16(v + channelBytes); var v2 = TKv.Load16(v + 2 * channelBytes); var v3 = TKv.Load16(v + 3 * channelBytes);
                var v4 = TKv.Load16(v + 4 * channelBytes); var v5 = TKv.Load16(v + 5 * channelBytes); var v6 = TKv.Load16(v + 6 * channelBytes); var v7 = TKv.Load16(v + 7 * channelBytes);
                if (count - c < Lanes)
                {
                    var valid = AttentionMath.ValidLanes(count - c);
                    p &= valid;
                    v0 &= valid; v1 &= valid; v2 &= valid; v3 &= valid; v4 &= valid; v5 &= valid; v6 &= valid; v7 &= valid;
                }
                a0 = Vector512.FusedMultiplyAdd(p, v0, a0); a1 = Vector512.FusedMultiplyAdd(p, v1, a1);
                a2 = Vector512.FusedMultiplyAdd(p, v2, a2); a3 = Vector512.FusedMultiplyAdd(p, v3, a3);
                a4 = Vector512.FusedMultiplyAdd(p, v4, a4); a5 = Vector512.FusedMultiplyAdd(p, v5, a5);
                a6 = Vector512.FusedMultiplyAdd(p, v6, a6); a7 = Vector512.FusedMultiplyAdd(p, v7, a7);
            }
            a0.Store(acc); a1.Store(acc + 16); a2.Store(acc + 32); a3.Store(acc + 48);
            a4.Store(acc + 64); a5.Store(acc + 80); a6.Store(acc + 96); a7.Store(acc + 112);
        }
    }

    /// <summary>
    /// <see cref="Values16By8Channels"/> for two heads of one group at once: each value vector loaded once serves both
    /// (16 accumulators, 8 values and 2 weight vectors in registers). Per head the same operations in the same order.
    /// </summary>
    private static void Values16By8ChannelsPair(byte* valueBase, nint* runOffsets, int* runStarts, int numRuns, nint channelBytes, float* tileWeights, float* acc, int headFloats, int d0)
    {
        float* bcc = acc + headFloats;
        var a0 = Vector512.Load(acc); var a1 = Vector512.Load(acc + 16); var a2 = Vector512.Load(acc + 32); var a3 = Vector512.Load(acc + 48);
        var a4 = Vector512.Load(acc + 64); var a5 = Vector512.Load(acc + 80); var a6 = Vector512.Load(acc + 96); var a7 = Vector512.Load(acc + 112);
        var b0 = Vector512.Load(bcc); var b1 = Vector512.Load(bcc + 16); var b2 = Vector512.Load(bcc + 32); var b3 = Vector512.Load(bcc + 48);
        var b4 = Vector512.Load(bcc + 64); var b5 = Vector512.Load(bcc + 80); var b6 = Vector512.Load(bcc + 96); var b7 = Vector512.Load(bcc + 112);
        for (int r = 0; r < numRuns; r++)
        for (int c = 0, count = runStarts[r + 1] - runStarts[r]; c < count; c += Lanes)
        {
            byte* v = valueBase + (runOffsets[r] + c) * TKv.Size + d0 * channelBytes;
            var p = Vector512.Load(tileWeights + runStarts[r] + c);
            var q = Vector512.Load(tileWeights + ScoreStride + runStarts[r] + c);
            var v0 = TKv.Load16(v); var v1 = TKv.Load16(v + channelBytes); var v2 = TKv.Load16(v + 2 * channelBytes); var v3 = TKv.Load16(v + 3 * channelBytes);
            var v4 = TKv.Load16(v + 4 * channelBytes); var v5 = TKv.Load16(v + 5 * channelBytes); var v6 = TKv.Load16(v + 6 * channelBytes); var v7 = TKv.Load16(v + 7 * channelBytes);
            if (count - c < Lanes)
            {
                var valid = AttentionMath.ValidLanes(count - c);
                p &= valid; q &= valid;
                v0 &= valid; v1 &= valid; v2 &= valid; v3 &= valid; v4 &= valid; v5 &= valid; v6 &= valid; v7 &= valid;
            }
            a0 = Vector512.FusedMultiplyAdd(p, v0, a0); a1 = Vector512.FusedMultiplyAdd(p, v1, a1);
            a2 = Vector512.FusedMultiplyAdd(p, v2, a2); a3 = Vector512.FusedMultiplyAdd(p, v3, a3);
            a4 = Vector512.FusedMultiplyAdd(p, v4, a4); a5 = Vector512.FusedMultiplyAdd(p, v5, a5);
            a6 = Vector512.FusedMultiplyAdd(p, v6, a6); a7 = Vector512.FusedMultiplyAdd(p, v7, a7);
            b0 = Vector512.FusedMultiplyAdd(q, v0, b0); b1 = Vector512.FusedMultiplyAdd(q, v1, b1);
            b2 = Vector512.FusedMultiplyAdd(q, v2, b2); b3 = Vector512.FusedMultiplyAdd(q, v3, b3);
            b4 = Vector512.FusedMultiplyAdd(q, v4, b4); b5 = Vector512.FusedMultiplyAdd(q, v5, b5);
            b6 = Vector512.FusedMultiplyAdd(q, v6, b6); b7 = Vector512.FusedMultiplyAdd(q, v7, b7);
        }
        a0.Store(acc); a1.Store(acc + 16); a2.Store(acc + 32); a3.Store(acc + 48);
        a4.Store(acc + 64); a5.Store(acc + 80); a6.Store(acc + 96); a7.Store(acc + 112);
        b0.Store(bcc); b1.Store(bcc + 16); b2.Store(bcc + 32); b3.Store(bcc + 48);
        b4.Store(bcc + 64); b5.Store(bcc + 80); b6.Store(bcc + 96); b7.Store(bcc + 112);
    }

    /// <summary>Any head width: per 16 slots and channel, one value vector serves every pass head (sums in memory).</summary>
    private static void Values16(byte* values, int blockSize, float* weights, int count, int numHeads, int headDim, float* accumulators)
    {
        nint channelBytes = (nint)blockSize * TKv.Size;
        for (int c = 0; c < count; c += Lanes)
        {
            var valid = count - c < Lanes ? AttentionMath.ValidLanes(count - c) : Vector512<float>.AllBitsSet;
            byte* v0 = values + (nint)c * TKv.Size;
            for (int d = 0; d < headDim; d++)
            {
                var v = TKv.Load16(v0 + d * channelBytes) & valid;
                for (int j = 0; j < numHeads; j++)
                {
                    float* acc = accumulators + (j * headDim + d) * Lanes;
                    var p = Vector512.Load(weights + j * ScoreStride + c) & valid;
                    Vector512.FusedMultiplyAdd(p, v, Vector512.Load(acc)).Store(acc);
                }
            }
        }
    }

    /// <summary>The portable value sum, one slot at a time.</summary>
    private static void Values1(byte* values, int blockSize, float* weights, int count, int numHeads, int headDim, float* accumulators)
    {
        nint channelBytes = (nint)blockSize * TKv.Size;
        for (int o = 0; o < count; o++)
        {
            byte* v0 = values + (nint)o * TKv.Size;
            for (int j = 0; j < numHeads; j++)
            {
                float w = weights[j * ScoreStride + o];
                float* acc = accumulators + j * headDim;
                for (int d = 0; d < headDim; d++) acc[d] += w * TKv.Load1(v0 + d * channelBytes);
            }
        }
    }
}
