using System;
using System.Runtime.Intrinsics;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Runtime.Kernels;

public static partial class CpuKernels
{
    // Floats of per-head running state kept on the stack by PagedAttention (16 KiB); a GQA group larger
    // than this is processed in several passes over the context.
    private const int MaxAttentionAccumulatorFloats = 4096;

    /// <summary>
    /// Writes every packed token's keys and values into its slot of the paged cache:
    /// <c>cache.SlotOffset(layer, batch.BlockTable(batch.SequenceOfToken[t]), batch.Positions[t])</c>.
    /// </summary>
    /// <param name="k">Rows holding <c>[kvDim]</c> keys at <paramref name="kOffset"/> of each <paramref name="kRowStride"/>-float row.</param>
    /// <param name="kRowStride">Floats between consecutive tokens' key rows.</param>
    /// <param name="kOffset">Column of the first key element.</param>
    /// <param name="v">Rows holding <c>[kvDim]</c> values, laid out like <paramref name="k"/>.</param>
    /// <param name="vRowStride">Floats between consecutive tokens' value rows.</param>
    /// <param name="vOffset">Column of the first value element.</param>
    /// <param name="batch">The tokens, their sequences, positions and block tables.</param>
    /// <param name="cache">The KV pool; its <see cref="PagedKvCache.KvDim"/> is the width written.</param>
    /// <param name="layer">Layer whose slots are written.</param>
    public static void KvWrite(ReadOnlySpan<float> k, int kRowStride, int kOffset, ReadOnlySpan<float> v, int vRowStride, int vOffset, ForwardBatch batch, PagedKvCache cache, int layer)
    {
        int kvDim = cache.KvDim;
        for (int t = 0; t < batch.NumTokens; t++)
        {
            int slot = CacheSlot(batch, cache, layer, t);
            k.Slice(t * kRowStride + kOffset, kvDim).CopyTo(cache.Keys.AsSpan(slot, kvDim));
            v.Slice(t * vRowStride + vOffset, kvDim).CopyTo(cache.Values.AsSpan(slot, kvDim));
        }
    }

    /// <summary>
    /// The fused attention prologue: RMSNorm, one q|k|v projection, RoPE on q and k, and K/V written to the
    /// paged cache, all for every packed token of <paramref name="batch"/>. qDim = numHeads * headDim and
    /// kvDim = numKvHeads * headDim; a row of <paramref name="qkv"/> holds q at column 0, k at qDim and v at
    /// qDim + kvDim, and keeps the rotated q (and k) for the attention that follows.
    /// </summary>
    /// <param name="x"><c>[numTokens, dim]</c> residual stream.</param>
    /// <param name="numTokens">Number of tokens (must be <c>batch.NumTokens</c>).</param>
    /// <param name="normWeight"><c>[dim]</c> attention RMSNorm gain.</param>
    /// <param name="eps">RMSNorm epsilon.</param>
    /// <param name="wqkv"><c>[qDim + 2 * kvDim, dim]</c> fused q, k, v projection weights.</param>
    /// <param name="qkv"><c>[numTokens, qDim + 2 * kvDim]</c> output.</param>
    /// <param name="normalized"><c>[numTokens, dim]</c> scratch.</param>
    /// <param name="dim">Model width.</param>
    /// <param name="numHeads">Query heads.</param>
    /// <param name="numKvHeads">Key/value heads.</param>
    /// <param name="headDim">Head width.</param>
    /// <param name="batch">Positions, sequences and block tables of the tokens.</param>
    /// <param name="cache">The KV pool.</param>
    /// <param name="layer">Layer whose slots are written.</param>
    /// <param name="theta">Rotary base.</param>
    /// <param name="style">Rotary pairing.</param>
    public static void RmsNormQkvRopeKvWrite(ReadOnlySpan<float> x, int numTokens, ReadOnlySpan<float> normWeight, float eps, WeightMatrix wqkv, Span<float> qkv, Span<float> normalized, int dim, int numHeads, int numKvHeads, int headDim, ForwardBatch batch, PagedKvCache cache, int layer, float theta, RopeStyle style)
    {
        if (numTokens != batch.NumTokens) throw new ArgumentException($"{numTokens} rows for a batch of {batch.NumTokens} tokens.", nameof(numTokens));
        int qDim = numHeads * headDim;
        int kvDim = numKvHeads * headDim;
        if (kvDim != cache.KvDim) throw new ArgumentException($"{numKvHeads} KV heads of {headDim} do not match the cache's {cache.KvDim} floats per token.", nameof(numKvHeads));
        int qkvDim = qDim + 2 * kvDim;

        RmsNormLinear(x, numTokens, normWeight, eps, wqkv, qkv, dim, qkvDim, normalized);

        // Epilogue per token: one set of angles serves the q and k heads, and the rotated k goes straight
        // to its cache slot while the row is still in L1.
        CheckRopeHeadDim(headDim);
        int numPairs = headDim / 2;
        Span<double> inverseFrequencies = stackalloc double[numPairs];
        Span<float> cos = stackalloc float[numPairs];
        Span<float> sin = stackalloc float[numPairs];
        RopeInverseFrequencies(theta, headDim, inverseFrequencies);
        for (int t = 0; t < numTokens; t++)
        {
            var row = qkv.Slice(t * qkvDim, qkvDim);
            RopeAngles(batch.Positions[t], inverseFrequencies, cos, sin);
            RotateHeads(row.Slice(0, qDim), numHeads, headDim, cos, sin, style);
            RotateHeads(row.Slice(qDim, kvDim), numKvHeads, headDim, cos, sin, style);
            int slot = CacheSlot(batch, cache, layer, t);
            row.Slice(qDim, kvDim).CopyTo(cache.Keys.AsSpan(slot, kvDim));
            row.Slice(qDim + kvDim, kvDim).CopyTo(cache.Values.AsSpan(slot, kvDim));
        }
    }

    /// <summary>
    /// Causal grouped-query attention over the paged cache. Token t of sequence s at position p attends
    /// positions <c>[0, p]</c> of s through s's block table; the keys and values of all of them, this step's
    /// included, must already be in the cache. Query head h reads KV head <c>h / (numHeads / numKvHeads)</c>;
    /// scores are scaled by <c>1/sqrt(headDim)</c>. One pass per token with an online softmax (running max
    /// and sum, the value sum rescaled when the max rises), so no buffer grows with the context.
    /// </summary>
    /// <param name="q">Rows holding <c>[numHeads, headDim]</c> queries at <paramref name="qOffset"/>.</param>
    /// <param name="qRowStride">Floats between consecutive tokens' query rows.</param>
    /// <param name="qOffset">Column of the first query element.</param>
    /// <param name="batch">The tokens, their sequences, positions and block tables.</param>
    /// <param name="cache">The KV pool.</param>
    /// <param name="layer">Layer to read.</param>
    /// <param name="numHeads">Query heads.</param>
    /// <param name="numKvHeads">Key/value heads (divides numHeads).</param>
    /// <param name="headDim">Head width.</param>
    /// <param name="output"><c>[numTokens, numHeads * headDim]</c> attention output; must not overlap q.</param>
    public static unsafe void PagedAttention(ReadOnlySpan<float> q, int qRowStride, int qOffset, ForwardBatch batch, PagedKvCache cache, int layer, int numHeads, int numKvHeads, int headDim, Span<float> output)
    {
        if (numKvHeads <= 0 || numHeads % numKvHeads != 0) throw new ArgumentException($"{numHeads} query heads cannot be grouped over {numKvHeads} KV heads.", nameof(numKvHeads));
        if (numKvHeads * headDim != cache.KvDim) throw new ArgumentException($"{numKvHeads} KV heads of {headDim} do not match the cache's {cache.KvDim} floats per token.", nameof(numKvHeads));
        if (headDim > MaxAttentionAccumulatorFloats) throw new ArgumentOutOfRangeException(nameof(headDim), $"Head width {headDim} is over {MaxAttentionAccumulatorFloats}.");

        int numTokens = batch.NumTokens;
        if (numTokens == 0) return;
        int qDim = numHeads * headDim;
        // The slices are the bounds checks for the unchecked reads below (the cache indexes are checked per block).
        q = q.Slice(0, (numTokens - 1) * qRowStride + qOffset + qDim);
        output = output.Slice(0, numTokens * qDim);

        fixed (float* pq = q)
        fixed (float* pOutput = output)
        fixed (float* pKeys = cache.Keys)
        fixed (float* pValues = cache.Values)
        fixed (int* pPositions = batch.Positions)
        fixed (int* pSequences = batch.SequenceOfToken)
        fixed (int* pTables = batch.BlockTables)
        {
            var job = new AttentionJob
            {
                Q = pq + qOffset, QRowStride = qRowStride, Output = pOutput, Keys = pKeys, Values = pValues,
                Positions = pPositions, SequenceOfToken = pSequences, BlockTables = pTables,
                MaxBlocksPerSequence = batch.MaxBlocksPerSequence, NumBlocks = cache.NumBlocks, Layer = layer,
                NumHeads = numHeads, NumKvHeads = numKvHeads, HeadDim = headDim, KvDim = cache.KvDim, BlockSize = cache.BlockSize,
                ScoreScale = 1f / MathF.Sqrt(headDim),
            };
            // Work ~ positions attended × query width; small steps (Stories260K decode) stay on this thread.
            long work = 0;
            for (int t = 0; t < numTokens; t++) work += (long)(batch.Positions[t] + 1) * qDim;
            int numChunks = numTokens * numKvHeads;
            if (work < AttentionParallelThreshold || Threading.WorkerPool.ThreadCount == 1)
                for (int chunk = 0; chunk < numChunks; chunk++) job.Execute(chunk);
            else
                Threading.WorkerPool.Run(ref job, numChunks);
        }
    }

    // Multiply-adds (q·k plus p·v) below which attention runs on the calling thread.
    private const long AttentionParallelThreshold = 1 << 15;

    /// <summary>Attention of one (token, KV head) pair per chunk: the group's query heads share each key and value row.</summary>
    private unsafe struct AttentionJob : Threading.IParallelJob
    {
        public float* Q, Output, Keys, Values;
        public int* Positions, SequenceOfToken, BlockTables;
        public int QRowStride, MaxBlocksPerSequence, NumBlocks, Layer, NumHeads, NumKvHeads, HeadDim, KvDim, BlockSize;
        public float ScoreScale;

        /// <summary>Cache offset of the first slot of a sequence's logical block; a block the table lacks is an error.</summary>
        private readonly nint BlockSlot(int* blockTable, int logicalBlock, int t, int sequence)
        {
            int block = blockTable[logicalBlock];
            if ((uint)block >= (uint)NumBlocks)
                throw new InvalidOperationException($"Token {t} (sequence {sequence}) attends position {logicalBlock * BlockSize}, which its block table does not cover.");
            return (nint)(Layer * NumBlocks + block) * BlockSize * KvDim;
        }

        public void Execute(int chunk)
        {
            int t = chunk / NumKvHeads, kvHead = chunk % NumKvHeads;
            int headDim = HeadDim, groupSize = NumHeads / NumKvHeads;
            int headsPerPass = Math.Min(groupSize, MaxAttentionAccumulatorFloats / headDim);
            int sequence = SequenceOfToken[t];
            int* blockTable = BlockTables + (nint)sequence * MaxBlocksPerSequence;
            int lastPosition = Positions[t];
            float* queryRow = Q + (nint)t * QRowStride;
            float* outputRow = Output + (nint)t * NumHeads * headDim;

            // Running state of the query heads of one pass: acc [headsPerPass, headDim], max and sum [headsPerPass],
            // and the scores of one tile of positions [headsPerPass, AttentionTile].
            float* accumulators = stackalloc float[headsPerPass * headDim];
            float* runningMax = stackalloc float[headsPerPass];
            float* runningSum = stackalloc float[headsPerPass];
            float* scores = stackalloc float[headsPerPass * AttentionTile];
            nint* slots = stackalloc nint[AttentionTile];

            for (int firstHead = kvHead * groupSize; firstHead < (kvHead + 1) * groupSize; firstHead += headsPerPass)
            {
                int numPassHeads = Math.Min(headsPerPass, (kvHead + 1) * groupSize - firstHead);
                new Span<float>(accumulators, numPassHeads * headDim).Clear();
                for (int j = 0; j < numPassHeads; j++) { runningMax[j] = float.NegativeInfinity; runningSum[j] = 0; }

                // Tiles of positions: scores for the whole tile first, then one max, one vector exp pass and at most
                // one rescale of the accumulators per head per tile (the online softmax, a tile at a time).
                for (int tileStart = 0; tileStart <= lastPosition; tileStart += AttentionTile)
                {
                    int tileLength = Math.Min(AttentionTile, lastPosition + 1 - tileStart);
                    // Slot of every position of the tile, walking the block table: one division per tile, one
                    // lookup per block (a division per position was the largest cost of small-model decode).
                    int logicalBlock = tileStart / BlockSize, offset = tileStart - logicalBlock * BlockSize;
                    nint blockSlot = BlockSlot(blockTable, logicalBlock, t, sequence) + kvHead * headDim;
                    for (int i = 0; i < tileLength; i++, offset++)
                    {
                        if (offset == BlockSize)
                        {
                            offset = 0;
                            blockSlot = BlockSlot(blockTable, ++logicalBlock, t, sequence) + kvHead * headDim;
                        }
                        slots[i] = blockSlot + (nint)offset * KvDim;
                    }
                    if (headDim == 8 && Vector256.IsHardwareAccelerated)
                    {
                        // Heads of 8 (Stories260K): one vector per key, no per-position call overhead.
                        for (int j = 0; j < numPassHeads; j++)
                        {
                            var query = Vector256.Load(queryRow + (firstHead + j) * 8) * Vector256.Create(ScoreScale);
                            float* headScores = scores + j * AttentionTile;
                            for (int i = 0; i < tileLength; i++) headScores[i] = Vector256.Sum(query * Vector256.Load(Keys + slots[i]));
                        }
                    }
                    else
                    {
                        for (int i = 0; i < tileLength; i++)
                        {
                            var key = new ReadOnlySpan<float>(Keys + slots[i], headDim);
                            for (int j = 0; j < numPassHeads; j++)
                                scores[j * AttentionTile + i] = Dot(new ReadOnlySpan<float>(queryRow + (firstHead + j) * headDim, headDim), key) * ScoreScale;
                        }
                    }
                    for (int j = 0; j < numPassHeads; j++)
                    {
                        float* headScores = scores + j * AttentionTile;
                        float tileMax = float.NegativeInfinity;
                        for (int i = 0; i < tileLength; i++) tileMax = MathF.Max(tileMax, headScores[i]);
                        if (tileMax > runningMax[j])
                        {
                            // exp(-inf) = 0 on the first tile, which also zeroes the (empty) sums.
                            float correction = MathF.Exp(runningMax[j] - tileMax);
                            runningSum[j] *= correction;
                            var headAccumulator = new Span<float>(accumulators + j * headDim, headDim);
                            Scale(headAccumulator, correction, headAccumulator);
                            runningMax[j] = tileMax;
                        }
                        runningSum[j] += ExpSubtract(headScores, tileLength, runningMax[j]);
                    }
                    if (headDim == 8 && Vector256.IsHardwareAccelerated)
                    {
                        for (int j = 0; j < numPassHeads; j++)
                        {
                            float* headScores = scores + j * AttentionTile;
                            var acc = Vector256.Load(accumulators + j * 8);
                            for (int i = 0; i < tileLength; i++)
                                acc = Vector256.FusedMultiplyAdd(Vector256.Load(Values + slots[i]), Vector256.Create(headScores[i]), acc);
                            acc.Store(accumulators + j * 8);
                        }
                    }
                    else
                    {
                        for (int i = 0; i < tileLength; i++)
                        {
                            var value = new ReadOnlySpan<float>(Values + slots[i], headDim);
                            for (int j = 0; j < numPassHeads; j++)
                                MultiplyAdd(value, scores[j * AttentionTile + i], new Span<float>(accumulators + j * headDim, headDim));
                        }
                    }
                }

                for (int j = 0; j < numPassHeads; j++)
                    Scale(new ReadOnlySpan<float>(accumulators + j * headDim, headDim), 1f / runningSum[j], new Span<float>(outputRow + (firstHead + j) * headDim, headDim));
            }
        }
    }

    // Positions per attention tile (scores of a tile are kept on the stack: 4 × 128 floats per query head).
    private const int AttentionTile = 128;

    /// <summary>x[i] = exp(x[i] - max) over <paramref name="count"/> elements; returns their sum.</summary>
    private static unsafe float ExpSubtract(float* x, int count, float max)
    {
        int i = 0;
        float sum = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var m = Vector256.Create(max);
            var acc = Vector256<float>.Zero;
            for (; i <= count - 8; i += 8)
            {
                var e = Vector256.Exp(Vector256.Load(x + i) - m);
                e.Store(x + i);
                acc += e;
            }
            sum = Vector256.Sum(acc);
        }
        for (; i < count; i++)
        {
            x[i] = MathF.Exp(x[i] - max);
            sum += x[i];
        }
        return sum;
    }

    /// <summary>Offset in the cache of token t's slot; a block id of -1 (a table that is too short) is an error.</summary>
    private static int CacheSlot(ForwardBatch batch, PagedKvCache cache, int layer, int t)
    {
        var blockTable = batch.BlockTable(batch.SequenceOfToken[t]);
        int position = batch.Positions[t];
        if (blockTable[position / cache.BlockSize] < 0)
            throw new InvalidOperationException($"Token {t} at position {position} has no block in its sequence's table.");
        return cache.SlotOffset(layer, blockTable, position);
    }
}
