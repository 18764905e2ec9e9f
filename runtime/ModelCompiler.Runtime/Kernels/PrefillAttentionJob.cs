using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>
/// Causal attention for batches in which a sequence brings many consecutive query tokens (a prefill, a chunk of a
/// chunked prefill): one chunk takes a tile of up to 16 query rows — consecutive tokens of one sequence × query heads
/// of one GQA group — against every key up to its last token's position, so each key and value element loaded serves
/// all of them. <see cref="PagedAttentionJob{TKv}"/> walks a token's keys alone; in a prefill that left attention at
/// ~15% of the FMA peak for ~10% of a Llama110M prefill's time.
/// </summary>
/// <remarks>
/// <para>The query rows are the 16 lanes of a vector throughout, so the softmax needs no horizontal step: q·k of one
/// position for all rows is one FMA per channel (the key element broadcast, the queries transposed to
/// <c>[headDim, 16]</c> once per chunk), the running max, sum and rescale are lane-wise, and the value sum keeps per
/// channel one vector of the rows' outputs (<c>[headDim, 16]</c>, transposed back once at the end). Keys are taken 64
/// positions (<see cref="KeyTile"/>) at a time: scores of the tile, one max and rescale per tile (the online softmax),
/// exp, then the values. Within a tile, positions come in groups of 16 that lie inside one block (the block size is
/// a multiple of 16), whose values are first copied (f16 widened) to a <c>[headDim, 16]</c> buffer so that the value
/// loop's broadcasts are fixed offsets from one pointer.</para>
/// <para>The causal mask is per lane: position p counts for row r only if p ≤ the row's position; masked scores
/// are replaced (not computed with), so slots past the last attended position, which may hold anything, never reach
/// a sum. Lanes without a row (a tile of fewer than 16) have position −1 and are never written out.</para>
/// <para>Needs AVX-512 and a block size that is a multiple of 16; <see cref="CpuKernels.PagedAttention(System.ReadOnlySpan{float}, int, int, ForwardBatch, PagedKvCache, int, int, int, int, System.Span{float})"/> takes
/// <see cref="PagedAttentionJob{TKv}"/> otherwise. Every chunk does the same arithmetic on whichever thread runs it.</para>
/// </remarks>
[SkipLocalsInit] // every stack buffer is written before it is read
internal unsafe struct PrefillAttentionJob<TKv> : Threading.IParallelJob where TKv : struct, IKvElements
{
    /// <summary>Query rows per chunk: the lanes of a vector.</summary>
    public const int Lanes = 16;
    /// <summary>Widest head this job takes (its stack buffers are sized by it).</summary>
    public const int MaxHeadDim = 128;
    /// <summary>Positions per softmax step.</summary>
    private const int KeyTile = 64;
    private const int GroupsPerTile = KeyTile / Lanes;

    public AttentionShape Shape;
    public byte* Keys, Values;
    /// <summary>First batch token and token count of each query tile (consecutive tokens of one sequence, consecutive positions).</summary>
    public int* TileFirstToken, TileTokens;
    public int NumTiles;
    /// <summary>Query heads per chunk (of one GQA group): min(group size, 16); the group takes <see cref="HeadBlocksPerKvHead"/> chunks.</summary>
    public int HeadsPerChunk, HeadBlocksPerKvHead;

    /// <summary>Chunks of the job: tiles × KV heads × head blocks of a group.</summary>
    public readonly int NumChunks => NumTiles * Shape.NumKvHeads * HeadBlocksPerKvHead;

    public void Execute(int chunk)
    {
        ref readonly var s = ref Shape;
        int chunksPerTile = s.NumKvHeads * HeadBlocksPerKvHead;
        // The last tiles first: within a sequence they attend the most positions, so the pool's dynamic claiming
        // ends on short chunks.
        int tile = NumTiles - 1 - chunk / chunksPerTile;
        int rest = chunk % chunksPerTile;
        int kvHead = rest / HeadBlocksPerKvHead;
        int groupSize = s.NumHeads / s.NumKvHeads;
        int firstHead = kvHead * groupSize + rest % HeadBlocksPerKvHead * HeadsPerChunk;
        int numHeads = Math.Min(HeadsPerChunk, (kvHead + 1) * groupSize - firstHead);
        int firstToken = TileFirstToken[tile], numTokens = TileTokens[tile];
        int numRows = numTokens * numHeads;
        int headDim = s.HeadDim, blockSize = s.BlockSize, qDim = s.NumHeads * headDim;
        int sequence = s.SequenceOfToken[firstToken];
        int* blockTable = s.BlockTables + (nint)sequence * s.MaxBlocksPerSequence;
        int lastPosition = s.Positions[firstToken + numTokens - 1];
        nint channelBytes = (nint)blockSize * TKv.Size;
        nint kvHeadElements = (nint)kvHead * headDim * blockSize;

        float* queries = stackalloc float[headDim * Lanes];    // [headDim, 16] scaled queries
        float* outputs = stackalloc float[headDim * Lanes];    // [headDim, 16] running value sums
        float* scores = stackalloc float[KeyTile * Lanes];     // [KeyTile, 16] scores, then weights
        float* values = stackalloc float[GroupsPerTile * headDim * Lanes]; // per group [headDim, 16]
        float* keys = stackalloc float[headDim * Lanes];      // [headDim, 16] an f16 group's keys, widened
        int* rowPositions = stackalloc int[Lanes];

        // Lane r: token r / numHeads of the tile, head r % numHeads of the block.
        for (int r = 0; r < Lanes; r++) rowPositions[r] = r < numRows ? s.Positions[firstToken + r / numHeads] : -1;
        // The rows' queries, scaled and transposed 16 channels at a time (then one channel at a time for the rest).
        var square = stackalloc Vector512<float>[Lanes];
        var scale = Vector512.Create(s.ScoreScale);
        int c0 = 0;
        for (; c0 + Lanes <= headDim; c0 += Lanes)
        {
            for (int r = 0; r < Lanes; r++)
                square[r] = r < numRows ? Vector512.Load(QueryRow(r, numHeads, firstToken, firstHead) + c0) * scale : Vector512<float>.Zero;
            Transpose(square);
            for (int c = 0; c < Lanes; c++) square[c].Store(queries + (c0 + c) * Lanes);
        }
        for (; c0 < headDim; c0++)
            for (int r = 0; r < Lanes; r++) queries[c0 * Lanes + r] = r < numRows ? QueryRow(r, numHeads, firstToken, firstHead)[c0] * s.ScoreScale : 0;
        new Span<float>(outputs, headDim * Lanes).Clear();
        var rowLast = Vector512.Load(rowPositions);
        var runningMax = Vector512.Create(float.NegativeInfinity);
        var runningSum = Vector512<float>.Zero;
        var negativeInfinity = Vector512.Create(float.NegativeInfinity);

        for (int tileStart = 0; tileStart <= lastPosition; tileStart += KeyTile)
        {
            int count = Math.Min(KeyTile, lastPosition + 1 - tileStart);
            int numGroups = (count + Lanes - 1) / Lanes;
            for (int g = 0; g < numGroups; g++)
            {
                int position = tileStart + g * Lanes;
                // Channel c of this KV head at slot o: element (kvHead × headDim + c) × blockSize + o of the block.
                nint offset = s.BlockOffset(blockTable, position / blockSize, firstToken, sequence) + kvHeadElements + position % blockSize;
                byte* k = Keys + offset * TKv.Size;
                if (TKv.Size == sizeof(float))
                    Scores((float*)k, blockSize, queries, headDim, scores + g * Lanes * Lanes);
                else
                {
                    for (int c = 0; c < headDim; c++) Widened(k + c * channelBytes).Store(keys + c * Lanes);
                    Scores(keys, Lanes, queries, headDim, scores + g * Lanes * Lanes);
                }
                byte* v = Values + offset * TKv.Size;
                float* groupValues = values + g * headDim * Lanes;
                for (int c = 0; c < headDim; c++) Widened(v + c * channelBytes).Store(groupValues + c * Lanes);
            }

            // Mask (replace, so that a slot holding anything is never used) and the tile's max per row.
            var tileMax = negativeInfinity;
            for (int j = 0; j < count; j++)
            {
                var valid = Vector512.LessThanOrEqual(Vector512.Create(tileStart + j), rowLast).AsSingle();
                var x = Vector512.ConditionalSelect(valid, Vector512.Load(scores + j * Lanes), negativeInfinity);
                x.Store(scores + j * Lanes);
                tileMax = Vector512.Max(tileMax, x);
            }
            var newMax = Vector512.Max(runningMax, tileMax);
            // A row with nothing attended yet (or never: an empty lane) keeps −∞; subtract 0 there instead.
            var subtract = Vector512.ConditionalSelect(Vector512.Equals(newMax, negativeInfinity), Vector512<float>.Zero, newMax);
            if (tileStart > 0)
            {
                // exp(old − new) ≤ 1; from −∞ it is ~1e-38 (ExpNonPositive clamps), which scales sums that are still 0.
                var correction = AttentionMath.ExpNonPositive(runningMax - subtract);
                runningSum *= correction;
                for (int c = 0; c < headDim; c++) (Vector512.Load(outputs + c * Lanes) * correction).Store(outputs + c * Lanes);
            }
            runningMax = newMax;
            for (int j = 0; j < count; j++)
            {
                var valid = Vector512.LessThanOrEqual(Vector512.Create(tileStart + j), rowLast).AsSingle();
                var p = AttentionMath.ExpNonPositive(Vector512.Load(scores + j * Lanes) - subtract) & valid;
                p.Store(scores + j * Lanes);
                runningSum += p;
            }

            c0 = 0;
            for (; c0 + Lanes <= headDim; c0 += Lanes) Values16(values + c0 * Lanes, headDim, scores, count, outputs + c0 * Lanes);
            for (; c0 < headDim; c0++) Values1(values + c0 * Lanes, headDim, scores, count, outputs + c0 * Lanes);
        }

        // Divided by the sums and transposed back to the rows' outputs, 16 channels at a time (lanes without a row: 0/0, never stored).
        var inverseSum = Vector512<float>.One / runningSum;
        c0 = 0;
        for (; c0 + Lanes <= headDim; c0 += Lanes)
        {
            for (int c = 0; c < Lanes; c++) square[c] = Vector512.Load(outputs + (c0 + c) * Lanes) * inverseSum;
            Transpose(square);
            for (int r = 0; r < numRows; r++) square[r].Store(OutputRow(r, numHeads, firstToken, firstHead, qDim) + c0);
        }
        for (; c0 < headDim; c0++)
        {
            float* column = outputs + c0 * Lanes;
            for (int r = 0; r < numRows; r++) OutputRow(r, numHeads, firstToken, firstHead, qDim)[c0] = column[r] * inverseSum[r];
        }
    }

    /// <summary>Query of row <paramref name="r"/>: token r / numHeads of the tile, head r % numHeads of the block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly float* QueryRow(int r, int numHeads, int firstToken, int firstHead) =>
        Shape.Q + (nint)(firstToken + r / numHeads) * Shape.QRowStride + (firstHead + r % numHeads) * Shape.HeadDim;

    /// <summary>Output of row <paramref name="r"/> (as <see cref="QueryRow"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly float* OutputRow(int r, int numHeads, int firstToken, int firstHead, int qDim) =>
        Shape.Output + (nint)(firstToken + r / numHeads) * qDim + (firstHead + r % numHeads) * Shape.HeadDim;

    /// <summary>16 stored elements as f32: the load, times the scale it leaves out (exact: a power of two; see <see cref="FiniteF16Kv"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widened(byte* p) => TKv.LoadScale == 1f ? TKv.Load16(p) : TKv.Load16(p) * TKv.LoadScale;

    /// <summary>
    /// Transposes 16 × 16 floats in place (vector i, lane j ↔ vector j, lane i): four rounds of swapping the off-diagonal
    /// b × b blocks (b = 8, 4, 2, 1) of each 2b × 2b block, two two-source permutes per pair of vectors.
    /// </summary>
    private static void Transpose(Vector512<float>* m)
    {
        for (int b = Lanes / 2; b >= 1; b /= 2)
        {
            // Lane j of the pair's first vector: its own lane j where j & b is 0, else lane j − b of the second; of the
            // second: lane j + b of the first where j & b is 0, else its own lane j (indices from 16 pick the second).
            var lane = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            var low = Vector512.Equals(lane & Vector512.Create(b), Vector512<int>.Zero);
            var first = Vector512.ConditionalSelect(low, lane, lane + Vector512.Create(Lanes - b));
            var second = Vector512.ConditionalSelect(low, lane + Vector512.Create(b), lane + Vector512.Create(Lanes));
            for (int i = 0; i < Lanes; i++)
            {
                if ((i & b) != 0) continue;
                var x = m[i];
                var y = m[i + b];
                m[i] = System.Runtime.Intrinsics.X86.Avx512F.PermuteVar16x32x2(x, first, y);
                m[i + b] = System.Runtime.Intrinsics.X86.Avx512F.PermuteVar16x32x2(x, second, y);
            }
        }
    }

    /// <summary>
    /// Scores of 16 consecutive positions for the 16 rows: <c>scores[j, r] = Σ_c k[c × channelStride + j] × queries[c, r]</c>,
    /// one FMA per channel and position with the key element broadcast (a fixed offset from one pointer per channel).
    /// </summary>
    private static void Scores(float* k, nint channelStride, float* queries, int headDim, float* scores)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector512<float> a8 = default, a9 = default, a10 = default, a11 = default, a12 = default, a13 = default, a14 = default, a15 = default;
        for (int c = 0; c < headDim; c++, k += channelStride)
        {
            var q = Vector512.Load(queries + c * Lanes);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Create(k[0]), q, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Create(k[1]), q, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Create(k[2]), q, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Create(k[3]), q, a3);
            a4 = Vector512.FusedMultiplyAdd(Vector512.Create(k[4]), q, a4);
            a5 = Vector512.FusedMultiplyAdd(Vector512.Create(k[5]), q, a5);
            a6 = Vector512.FusedMultiplyAdd(Vector512.Create(k[6]), q, a6);
            a7 = Vector512.FusedMultiplyAdd(Vector512.Create(k[7]), q, a7);
            a8 = Vector512.FusedMultiplyAdd(Vector512.Create(k[8]), q, a8);
            a9 = Vector512.FusedMultiplyAdd(Vector512.Create(k[9]), q, a9);
            a10 = Vector512.FusedMultiplyAdd(Vector512.Create(k[10]), q, a10);
            a11 = Vector512.FusedMultiplyAdd(Vector512.Create(k[11]), q, a11);
            a12 = Vector512.FusedMultiplyAdd(Vector512.Create(k[12]), q, a12);
            a13 = Vector512.FusedMultiplyAdd(Vector512.Create(k[13]), q, a13);
            a14 = Vector512.FusedMultiplyAdd(Vector512.Create(k[14]), q, a14);
            a15 = Vector512.FusedMultiplyAdd(Vector512.Create(k[15]), q, a15);
        }
        a0.Store(scores); a1.Store(scores + 16); a2.Store(scores + 32); a3.Store(scores + 48);
        a4.Store(scores + 64); a5.Store(scores + 80); a6.Store(scores + 96); a7.Store(scores + 112);
        a8.Store(scores + 128); a9.Store(scores + 144); a10.Store(scores + 160); a11.Store(scores + 176);
        a12.Store(scores + 192); a13.Store(scores + 208); a14.Store(scores + 224); a15.Store(scores + 240);
    }

    /// <summary>
    /// Value sums of 16 channels for the 16 rows over the tile's <paramref name="count"/> positions:
    /// <c>outputs[i, r] += Σ_j values[i, j] × weights[j, r]</c>, the value element broadcast; the 16 sums stay in
    /// registers over the tile. <paramref name="values"/> is the tile's first group's <c>[headDim, 16]</c> buffer at
    /// the block's first channel; the next group's is <c>headDim × 16</c> floats on.
    /// </summary>
    private static void Values16(float* values, int headDim, float* weights, int count, float* outputs)
    {
        var a0 = Vector512.Load(outputs); var a1 = Vector512.Load(outputs + 16); var a2 = Vector512.Load(outputs + 32); var a3 = Vector512.Load(outputs + 48);
        var a4 = Vector512.Load(outputs + 64); var a5 = Vector512.Load(outputs + 80); var a6 = Vector512.Load(outputs + 96); var a7 = Vector512.Load(outputs + 112);
        var a8 = Vector512.Load(outputs + 128); var a9 = Vector512.Load(outputs + 144); var a10 = Vector512.Load(outputs + 160); var a11 = Vector512.Load(outputs + 176);
        var a12 = Vector512.Load(outputs + 192); var a13 = Vector512.Load(outputs + 208); var a14 = Vector512.Load(outputs + 224); var a15 = Vector512.Load(outputs + 240);
        for (int first = 0; first < count; first += Lanes, values += headDim * Lanes)
        {
            float* v = values;
            for (int j = first, end = Math.Min(count, first + Lanes); j < end; j++, v++)
            {
                var p = Vector512.Load(weights + j * Lanes);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Create(v[0]), p, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Create(v[16]), p, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Create(v[32]), p, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Create(v[48]), p, a3);
                a4 = Vector512.FusedMultiplyAdd(Vector512.Create(v[64]), p, a4);
                a5 = Vector512.FusedMultiplyAdd(Vector512.Create(v[80]), p, a5);
                a6 = Vector512.FusedMultiplyAdd(Vector512.Create(v[96]), p, a6);
                a7 = Vector512.FusedMultiplyAdd(Vector512.Create(v[112]), p, a7);
                a8 = Vector512.FusedMultiplyAdd(Vector512.Create(v[128]), p, a8);
                a9 = Vector512.FusedMultiplyAdd(Vector512.Create(v[144]), p, a9);
                a10 = Vector512.FusedMultiplyAdd(Vector512.Create(v[160]), p, a10);
                a11 = Vector512.FusedMultiplyAdd(Vector512.Create(v[176]), p, a11);
                a12 = Vector512.FusedMultiplyAdd(Vector512.Create(v[192]), p, a12);
                a13 = Vector512.FusedMultiplyAdd(Vector512.Create(v[208]), p, a13);
                a14 = Vector512.FusedMultiplyAdd(Vector512.Create(v[224]), p, a14);
                a15 = Vector512.FusedMultiplyAdd(Vector512.Create(v[240]), p, a15);
            }
        }
        a0.Store(outputs); a1.Store(outputs + 16); a2.Store(outputs + 32); a3.Store(outputs + 48);
        a4.Store(outputs + 64); a5.Store(outputs + 80); a6.Store(outputs + 96); a7.Store(outputs + 112);
        a8.Store(outputs + 128); a9.Store(outputs + 144); a10.Store(outputs + 160); a11.Store(outputs + 176);
        a12.Store(outputs + 192); a13.Store(outputs + 208); a14.Store(outputs + 224); a15.Store(outputs + 240);
    }

    /// <summary><see cref="Values16"/> for one channel (the last of a head width that is no multiple of 16).</summary>
    private static void Values1(float* values, int headDim, float* weights, int count, float* outputs)
    {
        var a = Vector512.Load(outputs);
        for (int first = 0; first < count; first += Lanes, values += headDim * Lanes)
            for (int j = first, end = Math.Min(count, first + Lanes); j < end; j++)
                a = Vector512.FusedMultiplyAdd(Vector512.Create(values[j - first]), Vector512.Load(weights + j * Lanes), a);
        a.Store(outputs);
    }
}
