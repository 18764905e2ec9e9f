using System;
using System.Runtime.Intrinsics;
using ModelCompiler.Runtime.Kernels.MatMul;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Runtime.Kernels;

public static partial class CpuKernels
{
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
        StoreTokens(batch, cache, layer, k.Slice(kOffset), kRowStride, v.Slice(vOffset), vRowStride);
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
    public static unsafe void RmsNormQkvRopeKvWrite(ReadOnlySpan<float> x, int numTokens, ReadOnlySpan<float> normWeight, float eps, WeightMatrix wqkv, Span<float> qkv, Span<float> normalized, int dim, int numHeads, int numKvHeads, int headDim, ForwardBatch batch, PagedKvCache cache, int layer, float theta, RopeStyle style)
    {
        if (numTokens != batch.NumTokens) throw new ArgumentException($"{numTokens} rows for a batch of {batch.NumTokens} tokens.", nameof(numTokens));
        int qDim = numHeads * headDim;
        int kvDim = numKvHeads * headDim;
        if (kvDim != cache.KvDim) throw new ArgumentException($"{numKvHeads} KV heads of {headDim} do not match the cache's {cache.KvDim} floats per token.", nameof(numKvHeads));
        int qkvDim = qDim + 2 * kvDim;

        RmsNormLinear(x, numTokens, normWeight, eps, wqkv, qkv, dim, qkvDim, normalized);

        // Epilogue per token: one set of angles serves the q and k heads; then the rotated keys and the values go to
        // their cache slots a block's run of tokens at a time (see StoreTokens).
        // A prefill's epilogue goes over the worker pool by tokens (each token's rotation and slots are its own).
        CheckRopeHeadDim(headDim);
        var table = RopeTable.For(theta, headDim, MaxPosition(batch));
        qkv = qkv.Slice(0, numTokens * qkvDim);
        fixed (float* pqkv = qkv)
        {
            var rows = new RopeKvWriteRows
            {
                Qkv = pqkv, NumTokens = numTokens, NumHeads = numHeads, NumKvHeads = numKvHeads, HeadDim = headDim, Style = style,
                Table = table, Batch = batch, Cache = cache, Layer = layer,
            };
            Threading.ParallelRows.Run(ref rows, numTokens, qkvDim);
        }
    }

    /// <summary>The epilogue of <see cref="RmsNormQkvRopeKvWrite"/> for tokens [first, end): RoPE on q and k, then K/V to the cache.</summary>
    private unsafe struct RopeKvWriteRows : Threading.IRowRange
    {
        public float* Qkv;
        public int NumTokens, NumHeads, NumKvHeads, HeadDim, Layer;
        public RopeStyle Style;
        public RopeTable Table;
        public ForwardBatch Batch;
        public PagedKvCache Cache;

        public readonly void Rows(int first, int end)
        {
            int qDim = NumHeads * HeadDim, kvDim = NumKvHeads * HeadDim, qkvDim = qDim + 2 * kvDim;
            var qkv = new Span<float>(Qkv, NumTokens * qkvDim);
            // One set of angles serves the q and k heads of a token.
            for (int t = first; t < end; t++)
            {
                var row = qkv.Slice(t * qkvDim, qkvDim);
                int position = Batch.Positions[t];
                var cos = Table.Cos(position);
                var sin = Table.Sin(position);
                RotateHeads(row.Slice(0, qDim), NumHeads, HeadDim, cos, sin, Style);
                RotateHeads(row.Slice(qDim, kvDim), NumKvHeads, HeadDim, cos, sin, Style);
            }
            // The rotated keys and the values go to their slots a block's run of tokens at a time (see StoreTokens).
            StoreTokens(Batch, Cache, Layer, qkv.Slice(qDim), qkvDim, qkv.Slice(qDim + kvDim), qkvDim, first, end);
        }
    }

    /// <summary>
    /// Causal grouped-query attention over the paged cache. Token t of sequence s at position p attends
    /// positions <c>[0, p]</c> of s through s's block table; the keys and values of all of them, this step's
    /// included, must already be in the cache. Query head h reads KV head <c>h / (numHeads / numKvHeads)</c>;
    /// scores are scaled by <c>1/sqrt(headDim)</c>. One pass per token with an online softmax (running max
    /// and sum, the value sum rescaled when the max rises), so no buffer grows with the context. An f16 cache
    /// is widened to f32 as it is read; everything is computed in f32.
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
        CheckAttentionShape(cache, layer, numHeads, numKvHeads, headDim);
        int numTokens = batch.NumTokens;
        if (numTokens == 0) return;
        int qDim = numHeads * headDim;
        // The slices are the bounds checks for the unchecked reads below (the cache indexes are checked per block).
        q = q.Slice(0, (numTokens - 1) * qRowStride + qOffset + qDim);
        output = output.Slice(0, numTokens * qDim);

        // Work ~ positions attended × query width; small steps (Stories260K decode) stay on this thread.
        long work = 0;
        for (int t = 0; t < numTokens; t++) work += (long)(batch.Positions[t] + 1) * qDim;
        bool parallel = work >= AttentionParallelThreshold && Threading.WorkerPool.ThreadCount > 1;

        byte* keys = cache.KeyData, values = cache.ValueData;
        fixed (float* pq = q)
        fixed (float* pOutput = output)
        fixed (int* pPositions = batch.Positions)
        fixed (int* pSequences = batch.SequenceOfToken)
        fixed (int* pTables = batch.BlockTables)
        {
            var shape = ShapeOf(pq + qOffset, qRowStride, pOutput, pPositions, pSequences, numTokens, pTables, batch, cache, layer, numHeads, numKvHeads, headDim);
            bool f16 = cache.DType == KvCacheDType.F16;
            // A prefill (or a chunk of one) in the batch: query tiles against shared keys (see PrefillAttentionJob).
            if (CpuFeatures.UseVector512 && cache.BlockSize % PrefillAttentionJob<F32Kv>.Lanes == 0 && headDim <= PrefillAttentionJob<F32Kv>.MaxHeadDim
                && LongestQueryRun(batch) >= MinPrefillQueryRun)
            {
                // An f16 cache without NaN: the short widening for the tiles' copies and the decode tokens beside them.
                if (f16 && !cache.MayHoldNaN)
                    RunPrefillAttention(new PrefillAttentionJob<FiniteF16Kv> { Shape = shape, Keys = keys, Values = values }, batch, parallel);
                else if (f16)
                    RunPrefillAttention(new PrefillAttentionJob<F16Kv> { Shape = shape, Keys = keys, Values = values }, batch, parallel);
                else
                    RunPrefillAttention(new PrefillAttentionJob<F32Kv> { Shape = shape, Keys = keys, Values = values }, batch, parallel);
                return;
            }
            RunTokenAttention(shape, numTokens, cache, parallel);
        }
    }

    /// <summary>
    /// <see cref="PagedAttention(ReadOnlySpan{float}, int, int, ForwardBatch, PagedKvCache, int, int, int, int, Span{float})"/>
    /// for some of the batch's tokens only: output row i is the attention of token <c>queryRows[i]</c> (over its
    /// sequence's positions <c>[0, p]</c>, as always). The generated forward pass uses it in the last layer, where only
    /// the rows that need logits are carried past the KV write.
    /// </summary>
    /// <param name="q">Rows holding every batch token's <c>[numHeads, headDim]</c> queries at <paramref name="qOffset"/>.</param>
    /// <param name="qRowStride">Floats between consecutive tokens' query rows.</param>
    /// <param name="qOffset">Column of the first query element.</param>
    /// <param name="batch">The tokens, their sequences, positions and block tables.</param>
    /// <param name="cache">The KV pool.</param>
    /// <param name="layer">Layer to read.</param>
    /// <param name="numHeads">Query heads.</param>
    /// <param name="numKvHeads">Key/value heads (divides numHeads).</param>
    /// <param name="headDim">Head width.</param>
    /// <param name="output"><c>[queryRows.Length, numHeads * headDim]</c> attention output; must not overlap q.</param>
    /// <param name="queryRows">Batch token indexes whose attention is computed, each in <c>[0, batch.NumTokens)</c>.</param>
    public static unsafe void PagedAttention(ReadOnlySpan<float> q, int qRowStride, int qOffset, ForwardBatch batch, PagedKvCache cache, int layer, int numHeads, int numKvHeads, int headDim, Span<float> output, ReadOnlySpan<int> queryRows)
    {
        CheckAttentionShape(cache, layer, numHeads, numKvHeads, headDim);
        int numRows = queryRows.Length;
        if (numRows == 0) return;
        int qDim = numHeads * headDim;
        q = q.Slice(0, (batch.NumTokens - 1) * qRowStride + qOffset + qDim);
        output = output.Slice(0, numRows * qDim);
        // The rows' queries, positions and sequences, compacted: the per-token job then runs on them as on a batch.
        var ints = t_queryTiles is { } cached && cached.Length >= 2 * numRows ? cached : (t_queryTiles = new int[2 * numRows]);
        var floats = t_shortRunRows is { } rows && rows.Length >= numRows * qDim ? rows : (t_shortRunRows = new float[numRows * qDim]);
        long work = 0;
        for (int i = 0; i < numRows; i++)
        {
            int t = queryRows[i];
            if ((uint)t >= (uint)batch.NumTokens) throw new ArgumentOutOfRangeException(nameof(queryRows), t, $"The batch has {batch.NumTokens} tokens.");
            q.Slice(t * qRowStride + qOffset, qDim).CopyTo(floats.AsSpan(i * qDim, qDim));
            ints[i] = batch.Positions[t];
            ints[numRows + i] = batch.SequenceOfToken[t];
            work += (long)(ints[i] + 1) * qDim;
        }
        bool parallel = work >= AttentionParallelThreshold && Threading.WorkerPool.ThreadCount > 1;

        fixed (float* pq = floats)
        fixed (float* pOutput = output)
        fixed (int* pInts = ints)
        fixed (int* pTables = batch.BlockTables)
        {
            var shape = ShapeOf(pq, qDim, pOutput, pInts, pInts + numRows, numRows, pTables, batch, cache, layer, numHeads, numKvHeads, headDim);
            RunTokenAttention(shape, numRows, cache, parallel);
        }
    }

    /// <summary>The attention of <paramref name="numTokens"/> query rows at <paramref name="q"/> (their positions and sequences beside them) over layer <paramref name="layer"/> of the cache.</summary>
    private static unsafe AttentionShape ShapeOf(float* q, int qRowStride, float* output, int* positions, int* sequences, int numTokens, int* blockTables,
        ForwardBatch batch, PagedKvCache cache, int layer, int numHeads, int numKvHeads, int headDim) => new()
    {
        Q = q, QRowStride = qRowStride, Output = output,
        Positions = positions, SequenceOfToken = sequences, BlockTables = blockTables,
        MaxBlocksPerSequence = batch.MaxBlocksPerSequence, NumBlocks = cache.NumBlocks, LayerOffset = cache.BlockOffset(layer, 0),
        NumHeads = numHeads, NumKvHeads = numKvHeads, HeadDim = headDim, KvDim = cache.KvDim, BlockSize = cache.BlockSize,
        ScoreScale = 1f / MathF.Sqrt(headDim),
        PrefetchRuns = numTokens <= MaxPrefetchTokens,
    };

    private static void CheckAttentionShape(PagedKvCache cache, int layer, int numHeads, int numKvHeads, int headDim)
    {
        if (numKvHeads <= 0 || numHeads % numKvHeads != 0) throw new ArgumentException($"{numHeads} query heads cannot be grouped over {numKvHeads} KV heads.", nameof(numKvHeads));
        if (numKvHeads * headDim != cache.KvDim) throw new ArgumentException($"{numKvHeads} KV heads of {headDim} do not match the cache's {cache.KvDim} elements per token.", nameof(numKvHeads));
        if (headDim > PagedAttentionJob<F32Kv>.MaxHeadDim) throw new ArgumentOutOfRangeException(nameof(headDim), $"Head width {headDim} is over {PagedAttentionJob<F32Kv>.MaxHeadDim}.");
        if ((uint)layer >= (uint)cache.NumLayers) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"The cache has {cache.NumLayers} layers.");
    }

    /// <summary>
    /// Every token of <paramref name="shape"/> on its own (<see cref="PagedAttentionJob{TKv}"/>), with as many adjacent KV
    /// heads per chunk as leave every worker thread a chunk, so that each block is read as one run. An f16 cache that
    /// holds no NaN is read with the short widening of finite values (<see cref="FiniteF16Kv"/>, same results).
    /// </summary>
    private static unsafe void RunTokenAttention(AttentionShape shape, int numTokens, PagedKvCache cache, bool parallel)
    {
        int numChunks = SplitTokenChunks(ref shape, numTokens, parallel);
        byte* keys = cache.KeyData, values = cache.ValueData;
        if (cache.DType == KvCacheDType.F32)
            RunAttention(new PagedAttentionJob<F32Kv> { Shape = shape, Keys = keys, Values = values }, numChunks, parallel);
        else if (!cache.MayHoldNaN)
            RunAttention(new PagedAttentionJob<FiniteF16Kv> { Shape = shape, Keys = keys, Values = values }, numChunks, parallel);
        else
            RunAttention(new PagedAttentionJob<F16Kv> { Shape = shape, Keys = keys, Values = values }, numChunks, parallel);
    }

    /// <summary>
    /// Sets the KV heads per chunk of the per-token job over <paramref name="numTokens"/> tokens (see
    /// <see cref="PagedAttentionJob{TKv}.KvHeadsPerChunk"/>) and returns its number of chunks.
    /// </summary>
    private static int SplitTokenChunks(ref AttentionShape shape, int numTokens, bool parallel)
    {
        shape.KvHeadsPerChunk = PagedAttentionJob<F32Kv>.KvHeadsPerChunk(shape.NumHeads, shape.NumKvHeads, shape.HeadDim, shape.BlockSize, numTokens, parallel ? Threading.WorkerPool.ThreadCount : 1);
        return numTokens * (shape.NumKvHeads / shape.KvHeadsPerChunk);
    }

    private static void RunAttention<TKv>(PagedAttentionJob<TKv> job, int numChunks, bool parallel) where TKv : struct, IKvElements
    {
        if (!parallel)
            for (int chunk = 0; chunk < numChunks; chunk++) job.Execute(chunk);
        else
            Threading.WorkerPool.Run(ref job, numChunks);
    }

    /// <summary>
    /// Cuts the batch's runs of consecutive positions of one sequence into query tiles and runs them (tiles × KV heads ×
    /// head blocks) in one parallel run with the tokens of runs too short to fill a tile usefully (decode tokens of a
    /// mixed batch), which take <see cref="PagedAttentionJob{TKv}"/> on compacted copies of their queries and positions.
    /// </summary>
    private static unsafe void RunPrefillAttention<TKv>(PrefillAttentionJob<TKv> job, ForwardBatch batch, bool parallel) where TKv : struct, IKvElements
    {
        ref readonly var shape = ref job.Shape;
        int groupSize = shape.NumHeads / shape.NumKvHeads;
        job.HeadsPerChunk = Math.Min(groupSize, PrefillAttentionJob<TKv>.Lanes);
        job.HeadBlocksPerKvHead = (groupSize + job.HeadsPerChunk - 1) / job.HeadsPerChunk;
        int tokensPerTile = PrefillAttentionJob<TKv>.Lanes / job.HeadsPerChunk;
        int numTokens = batch.NumTokens, qDim = shape.NumHeads * shape.HeadDim;
        // [tile first tokens | tile token counts | short-run tokens | their positions | their sequences]
        var ints = t_queryTiles is { } cached && cached.Length >= 5 * numTokens ? cached : (t_queryTiles = new int[5 * numTokens]);
        int numTiles = 0, numShort = 0;
        for (int t = 0; t < numTokens;)
        {
            int run = QueryRunLength(batch, t);
            if (run * job.HeadsPerChunk < MinTileRows)
            {
                for (int i = 0; i < run; i++)
                {
                    ints[2 * numTokens + numShort] = t + i;
                    ints[3 * numTokens + numShort] = batch.Positions[t + i];
                    ints[4 * numTokens + numShort] = batch.SequenceOfToken[t + i];
                    numShort++;
                }
                t += run;
                continue;
            }
            // Equal tiles: a run of 40 with tiles of 16 as 14 + 13 + 13, so that no chunk is mostly empty lanes.
            int runTiles = (run + tokensPerTile - 1) / tokensPerTile;
            for (int i = 0; i < runTiles; i++)
            {
                int first = Threading.ParallelRows.ShareStart(run, runTiles, i), end = Threading.ParallelRows.ShareStart(run, runTiles, i + 1);
                ints[numTiles] = t + first;
                ints[numTokens + numTiles] = end - first;
                numTiles++;
            }
            t += run;
        }
        int scratchFloats = 2 * numShort * qDim;
        var floats = t_shortRunRows is { } rows && rows.Length >= scratchFloats ? rows : (t_shortRunRows = new float[Math.Max(scratchFloats, 1)]);
        fixed (int* pInts = ints)
        fixed (float* pFloats = floats)
        {
            job.TileFirstToken = pInts;
            job.TileTokens = pInts + numTokens;
            job.NumTiles = numTiles;
            var mixed = new MixedAttentionJob<TKv> { Tiles = job, TileChunks = job.NumChunks };
            float* shortQ = pFloats, shortOutput = pFloats + numShort * qDim;
            int tokenChunks = 0;
            if (numShort > 0)
            {
                int* shortTokens = pInts + 2 * numTokens;
                for (int i = 0; i < numShort; i++)
                    Buffer.MemoryCopy(shape.Q + (nint)shortTokens[i] * shape.QRowStride, shortQ + (nint)i * qDim, (long)qDim * sizeof(float), (long)qDim * sizeof(float));
                var tokenShape = shape;
                tokenShape.Q = shortQ;
                tokenShape.QRowStride = qDim;
                tokenShape.Output = shortOutput;
                tokenShape.Positions = pInts + 3 * numTokens;
                tokenShape.SequenceOfToken = pInts + 4 * numTokens;
                // The decode tokens of a serving step: their KV comes cold from DRAM like a decode step's, so they
                // prefetch and read several KV heads per chunk the same way (see PagedAttentionJob.KvHeadsPerChunk).
                tokenShape.PrefetchRuns = numShort <= MaxPrefetchTokens;
                tokenChunks = SplitTokenChunks(ref tokenShape, numShort, parallel);
                mixed.Tokens = new PagedAttentionJob<TKv> { Shape = tokenShape, Keys = job.Keys, Values = job.Values };
            }
            int numChunks = mixed.TileChunks + tokenChunks;
            if (!parallel)
                for (int chunk = 0; chunk < numChunks; chunk++) mixed.Execute(chunk);
            else
                Threading.WorkerPool.Run(ref mixed, numChunks);
            for (int i = 0; i < numShort; i++)
                Buffer.MemoryCopy(shortOutput + (nint)i * qDim, shape.Output + (nint)pInts[2 * numTokens + i] * qDim, (long)qDim * sizeof(float), (long)qDim * sizeof(float));
        }
    }

    /// <summary>The query tiles' chunks, then one chunk per (short-run token, KV head) of the per-token job.</summary>
    private struct MixedAttentionJob<TKv> : Threading.IParallelJob where TKv : struct, IKvElements
    {
        public PrefillAttentionJob<TKv> Tiles;
        public PagedAttentionJob<TKv> Tokens;
        public int TileChunks;

        public void Execute(int chunk)
        {
            if (chunk < TileChunks) Tiles.Execute(chunk);
            else Tokens.Execute(chunk - TileChunks);
        }
    }

    // Query rows (tokens × heads of a block) below which a run's tokens take the per-token job: a tile that fills
    // fewer lanes computes mostly empty ones, where the per-token job puts 16 positions in the lanes instead.
    private const int MinTileRows = 4;

    // Compacted queries and outputs of the short runs' tokens, per calling thread.
    [ThreadStatic] private static float[]? t_shortRunRows;

    // Tiles and short-run tokens (see RunPrefillAttention), per calling thread (reused: attention runs once per layer).
    [ThreadStatic] private static int[]? t_queryTiles;

    /// <summary>
    /// Tokens from <paramref name="t"/> on (at most <paramref name="maxCount"/>, by default to the end of the batch) that
    /// continue its sequence at consecutive positions.
    /// </summary>
    private static int QueryRunLength(ForwardBatch batch, int t, int maxCount = int.MaxValue)
    {
        int sequence = batch.SequenceOfToken[t], position = batch.Positions[t], count = 1;
        int limit = Math.Min(maxCount, batch.NumTokens - t);
        while (count < limit && batch.SequenceOfToken[t + count] == sequence && batch.Positions[t + count] == position + count) count++;
        return count;
    }

    /// <summary>The most consecutive tokens of one sequence at consecutive positions in the batch.</summary>
    private static int LongestQueryRun(ForwardBatch batch)
    {
        int longest = 0;
        for (int t = 0; t < batch.NumTokens;)
        {
            int run = QueryRunLength(batch, t);
            longest = Math.Max(longest, run);
            t += run;
        }
        return longest;
    }

    // A run of this many query tokens in a batch sends it to PrefillAttentionJob: from here on query tiles fill at
    // least half their lanes (groups of one head).
    private const int MinPrefillQueryRun = 8;

    // Batches up to this many tokens (decode steps, up to maxSequences of them) prefetch KV blocks (AttentionShape.PrefetchRuns).
    private const int MaxPrefetchTokens = 16;

    // Multiply-adds (q·k plus p·v) below which attention runs on the calling thread.
    private const long AttentionParallelThreshold = 1 << 15;

    /// <summary>
    /// Stores every token's key and value in its slot (converted to the cache's type), each run of consecutive positions
    /// of one sequence within one block in one <see cref="PagedKvCache.WriteTokens"/>; a block id of -1 (a table that is
    /// too short) is an error.
    /// </summary>
    private static void StoreTokens(ForwardBatch batch, PagedKvCache cache, int layer, ReadOnlySpan<float> k, int kRowStride, ReadOnlySpan<float> v, int vRowStride) =>
        StoreTokens(batch, cache, layer, k, kRowStride, v, vRowStride, 0, batch.NumTokens);

    /// <summary><see cref="StoreTokens(ForwardBatch, PagedKvCache, int, ReadOnlySpan{float}, int, ReadOnlySpan{float}, int)"/> for tokens [first, end) only.</summary>
    private static void StoreTokens(ForwardBatch batch, PagedKvCache cache, int layer, ReadOnlySpan<float> k, int kRowStride, ReadOnlySpan<float> v, int vRowStride, int first, int end)
    {
        int blockSize = cache.BlockSize;
        for (int t = first; t < end;)
        {
            int sequence = batch.SequenceOfToken[t];
            int position = batch.Positions[t];
            int block = batch.BlockTable(sequence)[position / blockSize];
            if (block < 0)
                throw new InvalidOperationException($"Token {t} at position {position} has no block in its sequence's table.");
            int offset = position % blockSize;
            int count = QueryRunLength(batch, t, Math.Min(end - t, blockSize - offset));
            cache.WriteTokens(layer, block, offset, count, k.Slice(t * kRowStride), kRowStride, v.Slice(t * vRowStride), vRowStride);
            t += count;
        }
    }
}
