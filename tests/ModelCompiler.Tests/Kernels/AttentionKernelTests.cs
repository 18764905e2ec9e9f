using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.KvCache;
using Xunit;
using static ModelCompiler.Tests.Kernels.KernelTestData;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// KvWrite, PagedAttention and the fused attention prologue against naive double-precision attention,
/// with several sequences of different lengths in one batch and block tables dealt from a shuffled pool
/// one block at a time, so that the tables interleave and no sequence's blocks are contiguous.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class AttentionKernelTests
{
    private const int NumLayers = 2;
    // Layer 1 is the one under test; layer 0 is filled with other data to catch a layer-offset mistake.
    private const int Layer = 1;

    // (start position, number of new tokens) of each sequence in the batch under test; the longest crosses
    // the kernel's 128-position tiles and fills whole 16-slot runs of blocks.
    private static readonly (int Start, int NumNew)[] Sequences = [(8, 3), (0, 1), (0, 7), (13, 1), (2, 2), (140, 3)];
    // A decode step: one token per sequence (a batch this small takes the path that prefetches KV blocks, for heads
    // of 2 KiB or more per block), long contexts so that tiles have many runs, one partial last block.
    private static readonly (int Start, int NumNew)[] DecodeSequences = [(200, 1), (0, 1), (37, 1), (130, 1)];
    private const int MaxBatchTokens = 512, MaxBlocksPerSequence = 64;

    [Theory]
    [InlineData(6, 2, 10, 4, KvCacheDType.F32)]   // grouped-query: groups of 3 heads
    [InlineData(6, 2, 6, 4, KvCacheDType.F32)]    // head width below every vector size
    [InlineData(4, 1, 17, 3, KvCacheDType.F32)]   // multi-query, odd head width
    [InlineData(3, 3, 33, 5, KvCacheDType.F32)]   // multi-head, odd head width
    [InlineData(2, 2, 64, 16, KvCacheDType.F32)]  // one block covers every sequence's first tokens
    [InlineData(8, 4, 8, 16, KvCacheDType.F32)]   // Stories260K's heads: keys 16 slots per FMA, values one vector per row
    [InlineData(5, 1, 16, 32, KvCacheDType.F32)]  // groups of 5 (pairs and a single), values by 8
    [InlineData(3, 1, 8, 8, KvCacheDType.F32)]    // blocks below 16 slots: keys one slot at a time
    [InlineData(4, 2, 32, 16, KvCacheDType.F32)]  // value sums in registers 8 channels at a time, 4 passes per head
    [InlineData(4, 4, 64, 16, KvCacheDType.F16)]  // Llama's 64-wide heads
    [InlineData(3, 3, 64, 16, KvCacheDType.F32, true)]  // Llama's heads in a decode step: lone heads, prefetching, three KV heads per chunk
    [InlineData(4, 2, 64, 16, KvCacheDType.F32, true)]  // the same, head pairs, two KV heads per chunk
    [InlineData(3, 3, 36, 16, KvCacheDType.F32, true)]  // prefetching, a head width that is no multiple of 4 or 8
    [InlineData(2, 2, 64, 32, KvCacheDType.F16, true)]  // prefetching an f16 cache
    [InlineData(8, 4, 8, 16, KvCacheDType.F32, true)]   // Stories260K's decode step (runs too small to prefetch)
    [InlineData(6, 2, 10, 16, KvCacheDType.F32, true)]  // narrow heads: one chunk reads every KV head of a block (groups of 3, sums in memory)
    [InlineData(8, 8, 8, 16, KvCacheDType.F32, true)]   // narrow heads without GQA, one pass over eight KV heads
    [InlineData(8, 2, 8, 32, KvCacheDType.F16, true)]   // narrow heads, groups of 4, f16
    [InlineData(16, 4, 8, 16, KvCacheDType.F32, true)]  // groups of 4: one chunk reads all four KV heads, sixteen query heads in one pass
    [InlineData(36, 1, 8, 16, KvCacheDType.F32, true)]  // a group larger than a chunk takes: one KV head per chunk, its heads in several passes
    [InlineData(40, 4, 8, 16, KvCacheDType.F32, true)]  // groups of 10: two KV heads (20 query heads) per chunk
    [InlineData(6, 2, 10, 4, KvCacheDType.F16)]
    [InlineData(4, 1, 17, 3, KvCacheDType.F16)]
    [InlineData(2, 2, 64, 16, KvCacheDType.F16)]
    [InlineData(8, 4, 8, 16, KvCacheDType.F16)]
    [InlineData(5, 1, 16, 32, KvCacheDType.F16)]
    [InlineData(3, 1, 8, 8, KvCacheDType.F16)]
    public void PagedAttention_matches_naive_causal_attention_over_interleaved_block_tables(int numHeads, int numKvHeads, int headDim, int blockSize, KvCacheDType dtype, bool decodeStep = false) =>
        CheckPagedAttention(decodeStep ? DecodeSequences : Sequences, numHeads, numKvHeads, headDim, blockSize, dtype);

    // A batch with prefill-sized runs (PrefillAttentionJob's query tiles): a fresh prompt crossing the 64-position key
    // tiles, chunks of chunked prefills whose earlier positions are cached and whose ends are off block boundaries,
    // next to decode tokens and short runs.
    private static readonly (int Start, int NumNew)[] PrefillSequences = [(0, 70), (200, 1), (13, 37), (5, 2), (90, 9), (0, 1), (131, 20)];

    [Theory]
    [InlineData(4, 4, 64, 16, KvCacheDType.F32)]   // Llama's heads: tiles of 16 tokens
    [InlineData(4, 4, 64, 32, KvCacheDType.F16)]
    [InlineData(6, 2, 16, 48, KvCacheDType.F32)]   // groups of 3: tiles of 5 tokens, lane 16 empty
    [InlineData(6, 2, 16, 48, KvCacheDType.F16)]
    [InlineData(8, 1, 24, 16, KvCacheDType.F32)]   // a group of 8: tiles of 2 tokens; width not a multiple of 16
    [InlineData(2, 2, 128, 64, KvCacheDType.F16)]  // the widest head the tiles take
    [InlineData(3, 3, 10, 16, KvCacheDType.F32)]   // narrow heads
    [InlineData(32, 1, 16, 16, KvCacheDType.F32)]  // a group of 32: two head blocks of 16 per tile of one token
    [InlineData(4, 2, 64, 8, KvCacheDType.F32)]    // blocks of 8: the per-token job takes the batch
    [InlineData(2, 2, 136, 16, KvCacheDType.F32)]  // wider than the tiles take: the per-token job
    public void PagedAttention_of_prefill_runs_matches_naive_causal_attention(int numHeads, int numKvHeads, int headDim, int blockSize, KvCacheDType dtype) =>
        CheckPagedAttention(PrefillSequences, numHeads, numKvHeads, headDim, blockSize, dtype);

    private static void CheckPagedAttention((int Start, int NumNew)[] sequences, int numHeads, int numKvHeads, int headDim, int blockSize, KvCacheDType dtype)
    {
        var random = new Random(numHeads * 100 + headDim);
        int qDim = numHeads * headDim, kvDim = numKvHeads * headDim;
        var tables = DealShuffledBlockTables(random, blockSize, out int numBlocks, sequences);
        var cache = new PagedKvCache(NumLayers, numBlocks, blockSize, kvDim, dtype);

        // Keys and values of every position of every sequence: [sequence][position, kvDim]. Queries are
        // scaled up so the softmax is peaked and the running max moves often. An f16 cache holds them
        // rounded to f16, so the naive attention is computed over the rounded values.
        var keys = sequences.Select(s => RandomFloats(random, (s.Start + s.NumNew) * kvDim)).ToArray();
        var values = sequences.Select(s => RandomFloats(random, (s.Start + s.NumNew) * kvDim)).ToArray();
        var storedKeys = keys.Select(k => Stored(k, dtype)).ToArray();
        var storedValues = values.Select(v => Stored(v, dtype)).ToArray();

        // Earlier steps: positions [0, start) of each sequence were cached by KvWrite in a previous batch.
        var history = new ForwardBatch(MaxBatchTokens, sequences.Length, MaxBlocksPerSequence, blockSize);
        var historySequences = Enumerable.Range(0, sequences.Length).Where(s => sequences[s].Start > 0).ToArray();
        foreach (int s in historySequences) history.AddSequence(new int[sequences[s].Start], 0, tables[s]);
        var historyKeys = PackRows(history, historySequences.Select(s => keys[s]).ToArray(), kvDim);
        var historyValues = PackRows(history, historySequences.Select(s => values[s]).ToArray(), kvDim);
        CpuKernels.KvWrite(historyKeys, kvDim, 0, historyValues, kvDim, 0, history, cache, Layer);

        // This step: rows laid out [2 pad | q | k | v | 1 pad], as a fused qkv projection would leave them.
        var batch = new ForwardBatch(MaxBatchTokens, sequences.Length, MaxBlocksPerSequence, blockSize);
        for (int s = 0; s < sequences.Length; s++) batch.AddSequence(new int[sequences[s].NumNew], sequences[s].Start, tables[s]);
        int rowStride = 2 + qDim + 2 * kvDim + 1, qOffset = 2, kOffset = 2 + qDim, vOffset = 2 + qDim + kvDim;
        var rows = RandomFloats(random, batch.NumTokens * rowStride, 3f);
        for (int t = 0; t < batch.NumTokens; t++)
        {
            int s = batch.SequenceOfToken[t], p = batch.Positions[t];
            keys[s].AsSpan(p * kvDim, kvDim).CopyTo(rows.AsSpan(t * rowStride + kOffset));
            values[s].AsSpan(p * kvDim, kvDim).CopyTo(rows.AsSpan(t * rowStride + vOffset));
        }
        FillLayerWithOtherData(cache, layer: 0, random);
        CpuKernels.KvWrite(rows, rowStride, kOffset, rows, rowStride, vOffset, batch, cache, Layer);
        AssertCacheHolds(cache, tables, storedKeys, storedValues, kvDim, blockSize);

        var output = Enumerable.Repeat(float.NaN, batch.NumTokens * qDim).ToArray();
        CpuKernels.PagedAttention(rows, rowStride, qOffset, batch, cache, Layer, numHeads, numKvHeads, headDim, output);

        for (int t = 0; t < batch.NumTokens; t++)
        {
            int s = batch.SequenceOfToken[t];
            var expected = NaiveAttention(rows.AsSpan(t * rowStride + qOffset, qDim), storedKeys[s], storedValues[s], batch.Positions[t], numHeads, numKvHeads, headDim);
            AssertClose(expected, output.AsSpan(t * qDim, qDim), what: $"token {t} (sequence {s}, position {batch.Positions[t]})");
        }

        // The last layer's form: the rows that need logits (each sequence's last token) alone, compacted in order,
        // and nothing written past them.
        int[] logitsRows = batch.LogitsTokenIndices.AsSpan(0, batch.NumLogits).ToArray();
        var compact = Enumerable.Repeat(float.NaN, (logitsRows.Length + 1) * qDim).ToArray();
        CpuKernels.PagedAttention(rows, rowStride, qOffset, batch, cache, Layer, numHeads, numKvHeads, headDim, compact, logitsRows);
        for (int i = 0; i < logitsRows.Length; i++)
        {
            int t = logitsRows[i], s = batch.SequenceOfToken[t];
            var expected = NaiveAttention(rows.AsSpan(t * rowStride + qOffset, qDim), storedKeys[s], storedValues[s], batch.Positions[t], numHeads, numKvHeads, headDim);
            AssertClose(expected, compact.AsSpan(i * qDim, qDim), what: $"row {i}: token {t} (sequence {s}, position {batch.Positions[t]})");
        }
        Assert.All(compact.Skip(logitsRows.Length * qDim), x => Assert.True(float.IsNaN(x), "written past the selected rows"));
    }

    [Theory]
    [InlineData(RopeStyle.Interleaved, KvCacheDType.F32)]
    [InlineData(RopeStyle.Half, KvCacheDType.F32)]
    [InlineData(RopeStyle.Interleaved, KvCacheDType.F16)]
    public void RmsNormQkvRopeKvWrite_matches_norm_projection_rope_and_cache_write_done_naively(RopeStyle style, KvCacheDType dtype)
    {
        const int dim = 33, numHeads = 4, numKvHeads = 2, headDim = 10, blockSize = 3;
        const float eps = 1e-5f, theta = 500f;
        int qDim = numHeads * headDim, kvDim = numKvHeads * headDim, qkvDim = qDim + 2 * kvDim;
        var random = new Random((int)style + 7);
        var tables = DealShuffledBlockTables(random, blockSize, out int numBlocks);
        var cache = new PagedKvCache(NumLayers, numBlocks, blockSize, kvDim, dtype);
        var batch = new ForwardBatch(MaxBatchTokens, Sequences.Length, MaxBlocksPerSequence, blockSize);
        for (int s = 0; s < Sequences.Length; s++) batch.AddSequence(new int[Sequences[s].NumNew], Sequences[s].Start, tables[s]);
        int numTokens = batch.NumTokens;

        var x = RandomFloats(random, numTokens * dim, 2f);
        var normWeight = RandomFloats(random, dim);
        var wqkv = RandomFloats(random, qkvDim * dim, 0.3f);
        var qkv = new float[numTokens * qkvDim];
        var normalized = new float[numTokens * dim];
        CpuKernels.RmsNormQkvRopeKvWrite(x, numTokens, normWeight, eps, TestMatrix.F32(wqkv, dim), qkv, normalized, dim, numHeads, numKvHeads, headDim, batch, cache, Layer, theta, style);

        var expected = CpuKernelsTests.NaiveLinear(CpuKernelsTests.NaiveRmsNorm(x, numTokens, dim, normWeight, eps), numTokens, wqkv, dim, qkvDim);
        for (int t = 0; t < numTokens; t++)
        {
            for (int h = 0; h < numHeads + numKvHeads; h++)   // q heads, then k heads: both rotated
            {
                int start = t * qkvDim + h * headDim;
                var head = expected.AsSpan(start, headDim).ToArray();
                NaiveRotate(head, batch.Positions[t], theta, style);
                head.CopyTo(expected, start);
            }
            AssertClose(expected.AsSpan(t * qkvDim, qkvDim), qkv.AsSpan(t * qkvDim, qkvDim), what: $"qkv row {t}");

            int position = batch.Positions[t];
            var (cachedKey, cachedValue) = ReadSlot(cache, Layer, batch.BlockTable(batch.SequenceOfToken[t])[position / blockSize], position % blockSize);
            // f16 stores each element rounded: within half an f16 ulp (2^-11 relative) of the exact value, plus the f32 error.
            double relative = dtype == KvCacheDType.F16 ? 1.0 / 2048 + 1e-5 : 1e-5;
            AssertClose(expected.AsSpan(t * qkvDim + qDim, kvDim), cachedKey, relative, what: $"cached key {t}");
            AssertClose(expected.AsSpan(t * qkvDim + qDim + kvDim, kvDim), cachedValue, relative, what: $"cached value {t}");
        }
    }

    [Theory]
    [InlineData(12, 12, 64, 16, 2, 12, 12)]  // Llama110M, 16-sequence decode step: every head of a block in one chunk
    [InlineData(12, 12, 64, 1, 2, 6, 6)]     // one token: two chunks, one per thread
    [InlineData(12, 12, 64, 1, 1, 12, 12)]   // on the calling thread: one chunk
    [InlineData(32, 8, 128, 16, 2, 2, 8)]    // Llama 3 8B's groups of 4 × 128 channels: with 16 lanes, 8 query heads fill the accumulators
    [InlineData(64, 64, 8, 16, 2, 32, 32)]   // narrow heads: at most 32 query heads per chunk
    [InlineData(36, 1, 8, 16, 2, 1, 1)]      // one KV head whose group is larger than a chunk takes
    [InlineData(12, 12, 64, 5, 16, 3, 3)]    // 5 tokens on 16 threads: 4 chunks of 3 KV heads per token
    public void KvHeadsPerChunk_takes_the_most_heads_that_fit_and_leave_every_thread_a_chunk(int numHeads, int numKvHeads, int headDim, int numTokens, int numThreads, int expectedWith16Lanes, int expectedWith1Lane)
    {
        // The accumulators hold 16 per-lane partial sums per channel on the AVX-512 and AVX2 paths, one on the portable path.
        int expected = global::ModelCompiler.Runtime.Kernels.MatMul.CpuFeatures.UseAttentionLanes ? expectedWith16Lanes : expectedWith1Lane;
        Assert.Equal(expected, PagedAttentionJob<F32Kv>.KvHeadsPerChunk(numHeads, numKvHeads, headDim, 16, numTokens, numThreads));
    }

    [Fact]
    public void PagedAttention_rejects_heads_that_do_not_group_or_match_the_cache()
    {
        var cache = new PagedKvCache(1, 4, 4, 8);
        var batch = new ForwardBatch(4, 1, 4, 4);
        batch.AddSequence([1], 0, [2]);
        var q = new float[24];
        var output = new float[24];
        Assert.Throws<ArgumentException>(() => CpuKernels.PagedAttention(q, 24, 0, batch, cache, 0, 3, 2, 4, output));
        Assert.Throws<ArgumentException>(() => CpuKernels.PagedAttention(q, 24, 0, batch, cache, 0, 6, 3, 4, output));
        Assert.Throws<ArgumentException>(() => CpuKernels.PagedAttention(q, 24, 0, batch, cache, 0, 3, 2, 4, output, [0]));
        var outside = Assert.Throws<ArgumentOutOfRangeException>(() => CpuKernels.PagedAttention(q, 8, 0, batch, cache, 0, 2, 2, 4, output, [1]));
        Assert.Contains("1 tokens", outside.Message);
    }

    [Fact]
    public unsafe void SumEach16_gives_every_vector_its_lane_sum_in_the_documented_order()
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return; // the decode kernel's AVX-512 path only
        var random = new Random(5);
        // Magnitudes spread over 2^±20 so that a different order of additions rounds differently.
        var vectors = Enumerable.Range(0, 16 * 16).Select(_ => (float)((random.NextDouble() - 0.5) * Math.Pow(2, random.Next(-20, 21)))).ToArray();
        float[] sums = new float[16];
        fixed (float* p = vectors) System.Runtime.Intrinsics.Vector512.CopyTo(AttentionMath.SumEach16(p), sums);
        for (int i = 0; i < 16; i++)
        {
            float Lane(int l) => vectors[i * 16 + l];
            float Quarter(int q) => (Lane(4 * q) + Lane(4 * q + 2)) + (Lane(4 * q + 1) + Lane(4 * q + 3));
            float expected = (Quarter(0) + Quarter(1)) + (Quarter(2) + Quarter(3));
            Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(sums[i]));
        }
    }

    // An f16 pool without NaN is read with the short widening (FiniteF16Kv), one that may hold a NaN with the general one
    // (F16Kv): the same bits either way, also when queries are so large that the short read's scaled queries would
    // overflow (those chunks take the general widening themselves); and a NaN written to an attended slot still reads
    // as NaN.
    [Theory]
    [InlineData(2, 2, 64, 16, true)]   // Llama's heads in a decode step: lone heads, prefetching, both KV heads per chunk
    [InlineData(4, 2, 64, 16, true)]   // head pairs
    [InlineData(8, 4, 8, 16, true)]    // narrow heads: the 8-wide key scores
    [InlineData(6, 2, 10, 16, true)]   // value sums in memory
    [InlineData(3, 1, 8, 8, false)]    // blocks below 16 slots: one slot at a time
    [InlineData(4, 4, 64, 16, false)]  // decode tokens beside prefill runs
    public void An_f16_cache_without_NaN_is_read_to_the_same_bits_as_with_the_general_widening(int numHeads, int numKvHeads, int headDim, int blockSize, bool decodeStep)
    {
        var sequences = decodeStep ? DecodeSequences : PrefillSequences;
        foreach (float queryScale in new[] { 3f, 3e6f })
        {
            var (fast, fastCache) = AttendOverF16(sequences, numHeads, numKvHeads, headDim, blockSize, queryScale, poisonSlot: null);
            Assert.False(fastCache.MayHoldNaN);
            var (general, generalCache) = AttendOverF16(sequences, numHeads, numKvHeads, headDim, blockSize, queryScale, poisonSlot: (Attended: false, Channel: 0));
            Assert.True(generalCache.MayHoldNaN);
            for (int i = 0; i < fast.Length; i++)
                if (BitConverter.SingleToInt32Bits(fast[i]) != BitConverter.SingleToInt32Bits(general[i]))
                    Assert.Fail($"query scale {queryScale}: output {i} is {fast[i]:R} with the short widening, {general[i]:R} with the general one");
        }
        // Sequence 0's first key, channel 1 (KV head 0): every head of KV head 0 of its tokens reads NaN, others stay finite.
        var (poisoned, _) = AttendOverF16(sequences, numHeads, numKvHeads, headDim, blockSize, 3f, poisonSlot: (Attended: true, Channel: 1));
        int qDim = numHeads * headDim, groupSize = numHeads / numKvHeads;
        Assert.True(float.IsNaN(poisoned[0]));
        Assert.All(poisoned.AsSpan(0, qDim).ToArray().Skip(groupSize * headDim), x => Assert.True(float.IsFinite(x)));
    }

    /// <summary>
    /// The attention of <paramref name="sequences"/>' new tokens (queries scaled by <paramref name="queryScale"/>) over an
    /// f16 pool holding every position; <paramref name="poisonSlot"/> writes a NaN value into a slot no sequence reads, or
    /// a NaN key into sequence 0's position 0 at the given channel.
    /// </summary>
    private static (float[] Output, PagedKvCache Cache) AttendOverF16((int Start, int NumNew)[] sequences, int numHeads, int numKvHeads, int headDim, int blockSize,
        float queryScale, (bool Attended, int Channel)? poisonSlot)
    {
        var random = new Random(7);
        int qDim = numHeads * headDim, kvDim = numKvHeads * headDim;
        var tables = DealShuffledBlockTables(random, blockSize, out int numBlocks, sequences);
        var cache = new PagedKvCache(NumLayers, numBlocks, blockSize, kvDim, KvCacheDType.F16);
        var all = new ForwardBatch(sequences.Sum(x => x.Start + x.NumNew), sequences.Length, MaxBlocksPerSequence, blockSize);
        for (int s = 0; s < sequences.Length; s++) all.AddSequence(new int[sequences[s].Start + sequences[s].NumNew], 0, tables[s]);
        var keys = RandomFloats(random, all.NumTokens * kvDim);
        var values = RandomFloats(random, all.NumTokens * kvDim);
        if (poisonSlot is { Attended: true, Channel: int channel }) keys[channel] = float.NaN;
        CpuKernels.KvWrite(keys, kvDim, 0, values, kvDim, 0, all, cache, Layer);
        if (poisonSlot is { Attended: false })
        {
            int unused = Enumerable.Range(0, numBlocks).First(b => !tables.Any(t => t.Contains(b)));
            var nan = Enumerable.Repeat(float.NaN, kvDim).ToArray();
            cache.WriteToken(Layer, unused, 0, nan, nan);
        }
        var batch = new ForwardBatch(MaxBatchTokens, sequences.Length, MaxBlocksPerSequence, blockSize);
        for (int s = 0; s < sequences.Length; s++) batch.AddSequence(new int[sequences[s].NumNew], sequences[s].Start, tables[s]);
        var q = RandomFloats(random, batch.NumTokens * qDim, queryScale);
        var output = new float[batch.NumTokens * qDim];
        CpuKernels.PagedAttention(q, qDim, 0, batch, cache, Layer, numHeads, numKvHeads, headDim, output);
        return (output, cache);
    }

    /// <summary>
    /// Block tables for <see cref="Sequences"/> dealt round-robin, one block at a time, from a shuffled pool
    /// that is larger than needed: tables interleave and skip ids.
    /// </summary>
    private static int[][] DealShuffledBlockTables(Random random, int blockSize, out int numBlocks, (int Start, int NumNew)[]? sequences = null)
    {
        sequences ??= Sequences;
        var blocksNeeded = sequences.Select(s => (s.Start + s.NumNew + blockSize - 1) / blockSize).ToArray();
        numBlocks = blocksNeeded.Sum() + 5;
        var pool = Enumerable.Range(0, numBlocks).ToArray();
        random.Shuffle(pool);
        var tables = blocksNeeded.Select(n => new List<int>()).ToArray();
        int next = 0;
        for (int round = 0; round < blocksNeeded.Max(); round++)
            for (int s = 0; s < sequences.Length; s++)
                if (round < blocksNeeded[s]) tables[s].Add(pool[next++]);
        return tables.Select(t => t.ToArray()).ToArray();
    }

    /// <summary>The rows of a batch's tokens, taken from per-sequence <c>[position, width]</c> arrays (indexed like the batch's sequences): <c>[numTokens, width]</c>.</summary>
    private static float[] PackRows(ForwardBatch batch, float[][] perSequence, int width)
    {
        var packed = new float[batch.NumTokens * width];
        for (int t = 0; t < batch.NumTokens; t++)
            perSequence[batch.SequenceOfToken[t]].AsSpan(batch.Positions[t] * width, width).CopyTo(packed.AsSpan(t * width));
        return packed;
    }

    /// <summary>The values as the cache stores them: f16 rounds each to nearest even (these are all within its range).</summary>
    private static float[] Stored(float[] values, KvCacheDType dtype) =>
        dtype == KvCacheDType.F16 ? values.Select(v => (float)(Half)v).ToArray() : values;

    private static (float[] Key, float[] Value) ReadSlot(PagedKvCache cache, int layer, int block, int offset)
    {
        var key = new float[cache.KvDim];
        var value = new float[cache.KvDim];
        cache.ReadToken(layer, block, offset, key, value);
        return (key, value);
    }

    private static void FillLayerWithOtherData(PagedKvCache cache, int layer, Random random)
    {
        for (int block = 0; block < cache.NumBlocks; block++)
            for (int offset = 0; offset < cache.BlockSize; offset++)
                cache.WriteToken(layer, block, offset, RandomFloats(random, cache.KvDim, 50f), RandomFloats(random, cache.KvDim, 50f));
    }

    /// <summary>Every position of every sequence sits where its table says, and no other slot of the layer was written.</summary>
    private static void AssertCacheHolds(PagedKvCache cache, int[][] tables, float[][] keys, float[][] values, int kvDim, int blockSize)
    {
        var written = new bool[cache.NumBlocks, blockSize];
        for (int s = 0; s < tables.Length; s++)
        {
            for (int p = 0; p < keys[s].Length / kvDim; p++)
            {
                var (key, value) = ReadSlot(cache, Layer, tables[s][p / blockSize], p % blockSize);
                Assert.Equal(keys[s].AsSpan(p * kvDim, kvDim).ToArray(), key);
                Assert.Equal(values[s].AsSpan(p * kvDim, kvDim).ToArray(), value);
                written[tables[s][p / blockSize], p % blockSize] = true;
            }
        }
        for (int block = 0; block < cache.NumBlocks; block++)
            for (int offset = 0; offset < blockSize; offset++)
            {
                if (written[block, offset]) continue;
                var (key, value) = ReadSlot(cache, Layer, block, offset);
                Assert.True(key.All(k => k == 0) && value.All(v => v == 0), $"Slot {offset} of block {block} was written but belongs to no sequence's position.");
            }
    }

    /// <summary>Softmax(q·kᵀ/sqrt(headDim)) v over positions [0, lastPosition], in double, head by head.</summary>
    private static double[] NaiveAttention(ReadOnlySpan<float> q, float[] keys, float[] values, int lastPosition, int numHeads, int numKvHeads, int headDim)
    {
        int kvDim = numKvHeads * headDim;
        var output = new double[numHeads * headDim];
        for (int h = 0; h < numHeads; h++)
        {
            int kvHead = h / (numHeads / numKvHeads);
            var scores = new double[lastPosition + 1];
            for (int p = 0; p <= lastPosition; p++)
            {
                double dot = 0;
                for (int i = 0; i < headDim; i++) dot += (double)q[h * headDim + i] * keys[p * kvDim + kvHead * headDim + i];
                scores[p] = dot / Math.Sqrt(headDim);
            }
            double max = scores.Max();
            var weights = scores.Select(v => Math.Exp(v - max)).ToArray();
            double sum = weights.Sum();
            for (int p = 0; p <= lastPosition; p++)
                for (int i = 0; i < headDim; i++)
                    output[h * headDim + i] += weights[p] / sum * values[p * kvDim + kvHead * headDim + i];
        }
        return output;
    }
}
