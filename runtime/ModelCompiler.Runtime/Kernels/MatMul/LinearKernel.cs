using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using ModelCompiler.Runtime.Threading;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// <c>y (+)= x Wᵀ</c> for every stored weight type, split over the worker pool by blocks of output rows (each
/// thread streams its own part of W once; the activations are shared and stay in cache).
/// </summary>
/// <remarks>
/// How each case is computed:
/// <list type="bullet">
/// <item>q8_0/q4_0 matrices packed at load (<see cref="WeightMatrix.PackedData"/>, on CPUs with AVX-VNNI), any token
/// count: the activations are quantized to int8 blocks once per call and <see cref="PackedQuantizedTile"/> runs
/// 8-row groups × 1–4 tokens (decode) or 16 rows × 4 tokens (prefill), all in integer dot products.</item>
/// <item>f32/f16/bf16 matrices packed at load into 32-row panels (<see cref="FloatPanelLayout"/>, the large ones, on CPUs
/// with AVX-512, and bf16/f16 on CPUs with AVX2 and FMA), any token count: <see cref="FloatPanel"/>'s kernels, or <see cref="FloatPanel256"/>'s
/// without AVX-512.</item>
/// <item>Other f32/f16/bf16 matrices with at least <see cref="MinTokensToPack"/> tokens (prefill, batched decode): each panel of
/// 32 weight rows is packed (transposed, widened to f32) into per-thread scratch once per token block and
/// <see cref="FloatPanel"/>'s outer-product microkernel runs every token of the block against it. Without AVX-512 the
/// same for f32 (which keeps its rows there), with <see cref="FloatPanel256.PackF32"/> and <see cref="FloatPanel256"/>'s
/// microkernel.</item>
/// <item>f32/f16/bf16 with fewer tokens: <see cref="FloatTile"/> reads the weights in place (f16/bf16 widened in
/// registers).</item>
/// <item>Unpacked q8_0/q4_0 with fewer than <see cref="MinTokensToDequantize"/> tokens (decode): the activations are
/// quantized to int8 blocks once per call and <see cref="QuantizedTile"/> takes integer dot products.</item>
/// <item>q8_0/q4_0 with many tokens (prefill): each group of 4 weight rows is widened to f32 in
/// per-thread scratch once per token block and run through the f32 tile, so the conversion is amortized over
/// the tokens and the inner loop is the FMA-bound f32 one.</item>
/// <item>f32 at one token, small enough to stay on the calling thread: <see cref="SmallDecode"/>, sixteen rows at a time
/// (eight on AVX2).</item>
/// <item>Otherwise, without AVX-512 (or AVX2 for the quantized types), a portable path decodes rows and uses the
/// Vector256/Vector128 dot product.</item>
/// </list>
/// Decode (one token) walks the weight rows one at a time: one sequential stream per thread is what the
/// hardware prefetcher follows best (measured on Zen 5 at 768x32000 from DRAM, one thread: f32 26 → 35 GB/s,
/// q8_0 17 → 26 GB/s against 4 rows side by side).
/// Tokens are processed in blocks whose activations fit in L2 (<see cref="ActivationBlockBytes"/>); inside a
/// block each weight-row group meets every token, four at a time.
/// </remarks>
internal static unsafe class LinearKernel
{
    /// <summary>Below this many multiply-adds a projection runs on the calling thread (a hand-off costs ~1–2 µs).</summary>
    public const long ParallelThresholdMacs = 1 << 17;
    /// <summary>From this many tokens, quantized weights are widened once per token block instead of in the inner loop.</summary>
    public const int MinTokensToDequantize = 16;
    /// <summary>
    /// From this many tokens, float weights are packed into 32-row panels for the outer-product microkernel. Measured
    /// (quick bench, one thread, 768x2304 and 2048x768): at 8 and 12 tokens the packing costs more than it saves, at
    /// 16 packed is 0–25% faster (f32 most), at 24–32 15–40%.
    /// </summary>
    public const int MinTokensToPack = 16;
    /// <summary>
    /// Chunks per thread of a projection split over the pool when it is too small for <see cref="TailFraction"/>'s
    /// split. A projection streams its weights once, and each chunk boundary restarts a thread's sequential stream (the
    /// hardware prefetcher ramps up again at the new address) and takes a claim on the shared chunk counter; a Llama110M
    /// step's projections are 0.3–1.8 MB each in q4_0 (20–110 KB chunks at eight per thread). Measured with the
    /// benchmarks' <c>quick step</c> mode (the 49 projections of a step, DRAM-resident, two threads) with a temporary
    /// switch that alternated the chunk counts pass by pass, so that the shared machine's load fell on each alike
    /// (2026-12-02, load 10–12): eight chunks per thread took 4–11% longer than two for q4_0 (median of the per-pass
    /// ratios over three runs of 150–400 passes) and their fastest pass 1.91–1.97 ms against 1.47–1.58 ms, and a fourth
    /// run at load 4.7 read 5% (1.79 against 1.61 ms); q8_0, bf16 and f32 were 0–5% faster with two in the first runs and
    /// no different in the last. One chunk per thread was no better than two.
    /// </summary>
    public const int ChunksPerThread = 2;
    /// <summary>
    /// Share of a projection's rows dealt as small chunks after each thread's one large chunk (one long sequential
    /// stream per thread). With equal chunks the thread that finishes its last chunk first waits for the other, on
    /// average for half a chunk: with two chunks per thread, a perf profile of f32 decode had the worker spinning for 7%
    /// of all samples (~14% of its time), nearly all of it while the main thread ran its last chunk. Measured for one
    /// token (`bench --random-weights 1 --dtype D --prompt-tokens 16 --gen-tokens 128 --repetitions 3 --threads 2`, five
    /// runs of each binary alternating, helpers paused, 2026-12-02 05:10 UTC): decode medians f32 87.4 → 96.1, bf16
    /// 145.2 → 153.8, q4_0 443 → 477 tokens/s against two equal chunks per thread, and the worker's spin in a profile
    /// 7.0% → 5.0% of the samples. Several tokens used eight equal chunks per thread until the same split measured
    /// faster there too: <c>quick step DTYPE PASSES TOKENS</c> with a temporary switch alternating the two pass by pass
    /// (2026-12-02 06:40 UTC, load ~1.3), median per-pass time ratios f32 0.90 (16 tokens, a 16-sequence serving step),
    /// 0.93 (32), 0.96 (128); bf16 0.94 (16), 0.975 (128); q4_0 0.98 (16), 0.99 (128); q8_0 0.99 (16), 1.01 (128).
    /// Leaving the last units one per chunk instead (so that the first thread done waits at most one unit) was no
    /// better: each chunk boundary breaks a stream and its look-ahead prefetch. Also tried and dropped (2026-12-02):
    /// a 10% tail (2–8% faster in paired <c>quick step</c> passes for one token, inside the noise end to end), and
    /// work stealing in the pool (each thread a contiguous home range of 32 KiB chunks, then single chunks from the back
    /// of the other's): q8_0 decode 381 against 416 tokens/s and a 16-token q8_0 prefill 1,270 against 1,420, six
    /// alternating runs each.
    /// </summary>
    public const double TailFraction = 0.25;
    /// <summary>
    /// Fewest weight bytes of a tail chunk. The tail after the large chunks is dealt in shrinking chunks, each half of a
    /// thread's even share of what is left (OpenMP's "guided" schedule) down to this size, so that the thread that
    /// finishes first waits at most about one small chunk for the other instead of half of one of four equal tail
    /// chunks (Llama110M's 32,000-row LM head: 3 MB each in bf16), while the first tail chunks stay long streams.
    /// Measured against the four equal tail chunks with <c>quick step DTYPE PASSES TOKENS</c> and a temporary switch
    /// alternating the two pass by pass (2026-12-02 12:20 UTC, 200 passes for one token, 60 for 16, 16 for 128): median
    /// per-pass time ratios, one token, at 32 / 64 / 128 / 256 KiB: bf16 0.992 / 0.984 / 0.993 / 0.978, q4_0 1.011 /
    /// 0.993 / 0.981 / 0.996, f32 0.978 / 0.979 / 0.972 / 0.977; at 128 KiB, 16 tokens f32 0.979, bf16 0.986, q8_0
    /// 0.993, and 128 tokens f32 0.974, bf16 0.961, q8_0 0.982.
    /// </summary>
    public const int MinTailChunkBytes = 128 * 1024;
    /// <summary>
    /// <see cref="TailFraction"/> for one-token projections of packed q8_0/q4_0 weights. Their matrices are small (0.3–1.8
    /// MB a layer in q4_0) and their kernels have the least arithmetic per byte to cover a restarted stream, so a
    /// shorter tail (longer large chunks) pays: <c>quick step q4_0 300 1</c> with a temporary switch alternating the
    /// tail share pass by pass against 25% (2026-12-02 12:40 UTC, after the guided tail): median per-pass ratios 0.935,
    /// 0.897, 0.910 and 0.949 at 10%, 0.951 and 0.940 at 15%, 0.953 at 5%; q8_0 0.995 and 0.980 at 10%, 0.977 at 15%.
    /// Float panels are slower with it (f32 1.023 at 10%, 1.052 at 15%; bf16 0.99–1.0), and 16 or 128 tokens of q4_0 or
    /// q8_0 no better (1.011, 0.997, 1.021), so they keep <see cref="TailFraction"/>.
    /// </summary>
    public const double PackedDecodeTailFraction = 0.10;
    /// <summary>Activation bytes per token block: about a third of Zen 5's 1 MiB L2.</summary>
    public const int ActivationBlockBytes = 384 * 1024;

    private enum Mode { Direct, Dequantize, Int8, Portable, Packed, Panels, LoadedPanels }

    private struct Job : IParallelJob
    {
        public float* X;
        public float* Y;
        public byte* W;
        public nint RowBytes;
        public WeightDType DType;
        public int NumTokens, InDim, OutDim, TokensPerBlock;
        /// <summary>Floats between activation rows in <see cref="X"/> in the panel mode (InDim, or InDim + 16 when padded).</summary>
        public int XStride;
        public bool Accumulate;
        public Mode Mode;
        public sbyte* Qx;
        public float* Dx;
        public int* Start;

        /// <summary>Rows per unit of the split (the tile's 4, the packed layout's 8-row group or the 32-row panel).</summary>
        public int UnitRows;
        public int NumUnits, NumChunks;
        /// <summary>Leading chunks of <see cref="LargeUnits"/> units each (one per thread; 0 when there are too few units).</summary>
        public int NumLargeChunks, LargeUnits;
        /// <summary>Fewest units of a tail chunk (<see cref="MinTailChunkBytes"/> of weights, at least one unit).</summary>
        public int MinTailUnits;

        // The first NumLargeChunks chunks take LargeUnits units each; the others take shrinking shares of what is left
        // (GuidedTailUnits). Without large chunks, the units are dealt evenly (ParallelRows.ShareStart: sizes differ by
        // at most one unit).
        public void Execute(int chunk)
        {
            int firstUnit, endUnit;
            if (chunk < NumLargeChunks)
            {
                firstUnit = chunk * LargeUnits;
                endUnit = firstUnit + LargeUnits;
            }
            else if (NumLargeChunks > 0)
            {
                // The tail's sizes follow from the units left before each chunk, so chunk i walks the i before it
                // (a few dozen at most: each takes at least a 2 × threads share of what is left, or MinTailUnits).
                firstUnit = endUnit = NumLargeChunks * LargeUnits;
                for (int j = NumLargeChunks; j <= chunk; j++)
                {
                    firstUnit = endUnit;
                    endUnit = firstUnit + GuidedTailUnits(NumUnits - firstUnit, NumLargeChunks, MinTailUnits);
                }
            }
            else
            {
                firstUnit = ParallelRows.ShareStart(NumUnits, NumChunks, chunk);
                endUnit = ParallelRows.ShareStart(NumUnits, NumChunks, chunk + 1);
            }
            Rows(ref this, firstUnit * UnitRows, Math.Min(endUnit * UnitRows, OutDim));
        }
    }

    public static void Project(float* x, int numTokens, WeightMatrix w, float* y, int inDim, int outDim, bool accumulate)
    {
        if (numTokens <= 0 || outDim == 0) return;
        var job = new Job
        {
            X = x, Y = y, W = (byte*)w.Data, RowBytes = w.RowSizeInBytes, DType = w.DType,
            NumTokens = numTokens, InDim = inDim, OutDim = outDim, Accumulate = accumulate,
        };
        bool quantized = w.DType is WeightDType.Q8_0 or WeightDType.Q4_0;
        if (quantized && w.PackedData != 0 && PackedQuantizedLayout.IsSupported)
        {
            job.Mode = Mode.Packed;
            job.W = (byte*)w.PackedData;
        }
        else if (FloatPanelLayout.IsPacked(w) && CpuFeatures.UseFloatPanels)
        {
            job.Mode = Mode.LoadedPanels;
            job.W = (byte*)w.PackedData;
        }
        else if (!CpuFeatures.UseVector512)
            job.Mode = quantized ? (CpuFeatures.UseInt8 && numTokens < MinTokensToDequantize ? Mode.Int8 : Mode.Portable)
                // f32 rows on AVX2 (see FloatPanelLayout.ShouldPack) with many tokens: panels packed per call, like AVX-512's small matrices.
                : w.DType == WeightDType.F32 && CpuFeatures.UseFloatPanels && numTokens >= MinTokensToPack ? Mode.Panels : Mode.Portable;
        else if (!quantized) job.Mode = numTokens >= MinTokensToPack ? Mode.Panels : Mode.Direct;
        else if (numTokens >= MinTokensToDequantize) job.Mode = Mode.Dequantize;
        else job.Mode = CpuFeatures.UseInt8 ? Mode.Int8 : Mode.Dequantize;

        job.TokensPerBlock = Math.Max(4, ActivationBlockBytes / (inDim * sizeof(float)) & ~3);
        job.XStride = inDim;
        bool panels = job.Mode is Mode.Panels or Mode.LoadedPanels;
        if (panels)
        {
            // Equal blocks (130 tokens as 65 + 65, not 128 + 2): each block pays one packing of every panel.
            int numBlocks = (numTokens + job.TokensPerBlock - 1) / job.TokensPerBlock;
            job.TokensPerBlock = (numTokens + numBlocks - 1) / numBlocks;
        }
        if (panels && numTokens > 4 && inDim * sizeof(float) % 4096 == 0)
        {
            // The microkernel reads up to 12 activation rows side by side; rows 4 KiB apart all fall in one L1 set
            // (12 ways), so they would evict each other every k. A copy with rows 64 bytes further apart costs a
            // few percent of one projection and measured ~1.4x on the 2048-wide one (2048 vs 2032 columns).
            int stride = inDim + 16;
            float* padded = (float*)Scratch.Activations((nint)numTokens * stride * sizeof(float));
            var copy = new PadRows { Source = x, Destination = padded, InDim = inDim, Stride = stride };
            ParallelRows.Run(ref copy, numTokens, inDim);
            job.X = padded;
            job.XStride = stride;
        }
        if (job.Mode == Mode.Int8)
        {
            int numBlocks = inDim / 32;
            byte* scratch = Scratch.Activations((nint)numTokens * inDim + (nint)numTokens * numBlocks * sizeof(float) + 64);
            job.Dx = (float*)scratch;
            job.Qx = (sbyte*)(scratch + (((nint)numTokens * numBlocks * sizeof(float) + 63) & ~63));
            ActivationQuantizer.Quantize(x, numTokens, inDim, job.Qx, job.Dx);
        }
        else if (job.Mode == Mode.Packed)
        {
            int numBlocks = inDim / 32;
            nint scalesBytes = ((nint)numTokens * numBlocks * sizeof(float) + 63) & ~63;
            byte* scratch = Scratch.Activations((nint)numTokens * inDim + 2 * scalesBytes);
            job.Dx = (float*)scratch;
            job.Start = (int*)(scratch + scalesBytes);
            job.Qx = (sbyte*)(scratch + 2 * scalesBytes);
            ActivationQuantizer.Quantize(x, numTokens, inDim, job.Qx, job.Dx, job.Start, PackedQuantizedTile.WeightOffset(w.DType));
            // Activation bytes (int8 now) per token block: the same L2 budget holds four times the tokens.
            job.TokensPerBlock = Math.Max(4, ActivationBlockBytes / inDim & ~3);
        }

        long macs = (long)numTokens * inDim * outDim;
        int threads = WorkerPool.ThreadCount;
        if (threads == 1 || macs < ParallelThresholdMacs)
        {
            // Small f32 matrices at one token take sixteen rows at a time; leftover rows go the usual way.
            int firstRow = job.Mode is Mode.Direct or Mode.Portable && SmallDecode.Applies(numTokens, w.DType, inDim, macs)
                ? SmallDecode.Project(x, (float*)w.Data, inDim, y, outDim, accumulate) : 0;
            if (firstRow < outDim) Rows(ref job, firstRow, outDim);
            return;
        }
        // Whole units: 4-row tiles, the packed layout's 8-row groups or 32-row float panels (so that only the matrix's
        // last panel can be partial). A large chunk per thread (one long sequential stream each), then the rest in
        // shrinking chunks (MinTailChunkBytes), so that the thread whose stream ran faster takes more of the tail instead
        // of waiting for the other at the end; a descheduled thread (this machine is shared) is covered by the tail. Too
        // few units for that: a few equal chunks per thread, dealt evenly (rounding the chunk size up instead split a
        // 72-panel projection into 15 chunks of 5 panels, 8 : 7 over two threads).
        job.UnitRows = panels ? FloatPanel.PanelRows : job.Mode == Mode.Packed ? PackedQuantizedLayout.RowsPerGroup : 4;
        job.NumUnits = (outDim + job.UnitRows - 1) / job.UnitRows;
        job.NumChunks = Math.Min(threads * ChunksPerThread, job.NumUnits);
        double tailFraction = job.Mode == Mode.Packed && numTokens == 1 ? PackedDecodeTailFraction : TailFraction;
        int largeUnits = (int)(job.NumUnits * (1 - tailFraction) / threads);
        if (largeUnits > 0 && job.NumUnits > threads * largeUnits)
        {
            job.NumLargeChunks = threads;
            job.LargeUnits = largeUnits;
            job.MinTailUnits = (int)Math.Max(1, MinTailChunkBytes / (job.UnitRows * job.RowBytes));
            int numTailChunks = 0;
            for (int first = threads * largeUnits; first < job.NumUnits; numTailChunks++)
                first += GuidedTailUnits(job.NumUnits - first, threads, job.MinTailUnits);
            job.NumChunks = threads + numTailChunks;
        }
        WorkerPool.Run(ref job, job.NumChunks);
    }

    /// <summary>Units of the next tail chunk: half of a thread's even share of what is left, at least <paramref name="minUnits"/>.</summary>
    private static int GuidedTailUnits(int remaining, int threads, int minUnits) =>
        Math.Min(remaining, Math.Max(minUnits, (remaining + 2 * threads - 1) / (2 * threads)));

    /// <summary>Copies <c>[rows, InDim]</c> activations to rows <see cref="Stride"/> floats apart (the panel mode's padding).</summary>
    private struct PadRows : IRowRange
    {
        public float* Source, Destination;
        public int InDim, Stride;

        public readonly void Rows(int first, int end)
        {
            for (int t = first; t < end; t++)
                Buffer.MemoryCopy(Source + (nint)t * InDim, Destination + (nint)t * Stride, (long)InDim * sizeof(float), (long)InDim * sizeof(float));
        }
    }

    private static void ComputeRows(ref Job job, int firstRow, int endRow)
    {
        for (int t0 = 0; t0 < job.NumTokens; t0 += job.TokensPerBlock)
        {
            int numTokens = Math.Min(job.TokensPerBlock, job.NumTokens - t0);
            int r = firstRow;
            for (; r <= endRow - 4; r += 4) Group<Four>(ref job, r, t0, numTokens);
            for (; r < endRow; r++) Group<One>(ref job, r, t0, numTokens);
        }
    }

    /// <summary>Output rows [firstRow, endRow) in the job's mode: the one entry point of every thread's share.</summary>
    private static void Rows(ref Job job, int firstRow, int endRow)
    {
        switch (job.Mode)
        {
            case Mode.Packed: PackedRows(ref job, firstRow, endRow); break;
            case Mode.Panels: RunPanels(ref job, firstRow, endRow); break;
            case Mode.LoadedPanels:
                switch (job.DType)
                {
                    case WeightDType.F32: RunLoadedPanels<F32Panel>(ref job, firstRow, endRow); break;
                    case WeightDType.BF16: RunLoadedPanels<Bf16Panel>(ref job, firstRow, endRow); break;
                    default: RunLoadedPanels<F16Panel>(ref job, firstRow, endRow); break;
                }
                break;
            default: ComputeRows(ref job, firstRow, endRow); break;
        }
    }

    // Packed q8_0/q4_0 (any token count): per token block, each pair of 8-row groups (one group for fewer than 4
    // tokens, or the chunk's last odd group) meets every token, four at a time; the groups' weights (k/32 blocks
    // of 144-272 bytes each) stay in L1 across those passes. Decode streams the chunk's groups in memory order.
    private static void PackedRows(ref Job job, int firstRow, int endRow)
    {
        int k = job.InDim, numBlocks = k / 32;
        int groupBytes = numBlocks * PackedQuantizedLayout.BlockSizeInBytes(job.DType);
        for (int t0 = 0; t0 < job.NumTokens; t0 += job.TokensPerBlock)
        {
            int numTokens = Math.Min(job.TokensPerBlock, job.NumTokens - t0);
            sbyte* qx = job.Qx + (nint)t0 * k;
            float* dx = job.Dx + (nint)t0 * numBlocks;
            int* start = job.Start + (nint)t0 * numBlocks;
            int r = firstRow;
            // Many tokens: two groups at a time (16 rows × 4 tokens per tile).
            if (numTokens >= 4)
            {
                for (; r < endRow - PackedQuantizedLayout.RowsPerGroup; r += 2 * PackedQuantizedLayout.RowsPerGroup)
                {
                    byte* w = job.W + (nint)(r / PackedQuantizedLayout.RowsPerGroup) * groupBytes;
                    float* y = job.Y + (nint)t0 * job.OutDim + r;
                    int numRows = Math.Min(PackedQuantizedLayout.RowsPerGroup, endRow - r - PackedQuantizedLayout.RowsPerGroup);
                    if (job.DType == WeightDType.Q8_0)
                        PackedQuantizedTile.TokensPair<PackedQ8_0>(w, groupBytes, numBlocks, qx, dx, start, k, numTokens, y, job.OutDim, numRows, job.Accumulate);
                    else
                        PackedQuantizedTile.TokensPair<PackedQ4_0>(w, groupBytes, numBlocks, qx, dx, start, k, numTokens, y, job.OutDim, numRows, job.Accumulate);
                }
            }
            for (; r < endRow; r += PackedQuantizedLayout.RowsPerGroup)
            {
                byte* w = job.W + (nint)(r / PackedQuantizedLayout.RowsPerGroup) * groupBytes;
                float* y = job.Y + (nint)t0 * job.OutDim + r;
                int numRows = Math.Min(PackedQuantizedLayout.RowsPerGroup, endRow - r);
                if (job.DType == WeightDType.Q8_0)
                    PackedQuantizedTile.Tokens<PackedQ8_0>(w, numBlocks, qx, dx, start, k, numTokens, y, job.OutDim, numRows, job.Accumulate);
                else
                    PackedQuantizedTile.Tokens<PackedQ4_0>(w, numBlocks, qx, dx, start, k, numTokens, y, job.OutDim, numRows, job.Accumulate);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Group<TRows>(ref Job job, int row, int t0, int numTokens) where TRows : struct, ICount
    {
        int k = job.InDim;
        byte* w = job.W + row * job.RowBytes;
        float* x = job.X + (nint)t0 * k;
        float* y = job.Y + (nint)t0 * job.OutDim + row;
        switch (job.Mode)
        {
            case Mode.Direct when numTokens == 1:
                for (int i = 0; i < TRows.Count; i++)
                {
                    byte* wr = w + i * job.RowBytes;
                    switch (job.DType)
                    {
                        case WeightDType.F32: FloatTile.RowDot<F32Row>(wr, x, k, y + i, job.Accumulate); break;
                        case WeightDType.BF16: FloatTile.RowDot<Bf16Row>(wr, x, k, y + i, job.Accumulate); break;
                        default: FloatTile.RowDot<F16Row>(wr, x, k, y + i, job.Accumulate); break;
                    }
                }
                break;
            case Mode.Direct:
                switch (job.DType)
                {
                    case WeightDType.F32: FloatTile.Tokens<F32Row, TRows>(w, job.RowBytes, x, k, numTokens, k, y, job.OutDim, job.Accumulate); break;
                    case WeightDType.BF16: FloatTile.Tokens<Bf16Row, TRows>(w, job.RowBytes, x, k, numTokens, k, y, job.OutDim, job.Accumulate); break;
                    case WeightDType.F16: FloatTile.Tokens<F16Row, TRows>(w, job.RowBytes, x, k, numTokens, k, y, job.OutDim, job.Accumulate); break;
                    default: throw new InvalidOperationException();
                }
                break;
            case Mode.Dequantize:
            {
                float* rows = Scratch.WeightRows(4 * k);
                for (int i = 0; i < TRows.Count; i++) Widen(w + i * job.RowBytes, job.DType, k, rows + i * k);
                FloatTile.Tokens<F32Row, TRows>((byte*)rows, (nint)k * sizeof(float), x, k, numTokens, k, y, job.OutDim, job.Accumulate);
                break;
            }
            case Mode.Int8:
            {
                int numBlocks = k / 32;
                sbyte* qx = job.Qx + (nint)t0 * k;
                float* dx = job.Dx + (nint)t0 * numBlocks;
                if (numTokens == 1)
                {
                    for (int i = 0; i < TRows.Count; i++)
                    {
                        if (job.DType == WeightDType.Q8_0) QuantizedTile.Run<Q8_0Row, One, One>(w + i * job.RowBytes, job.RowBytes, qx, dx, k, numBlocks, numBlocks, y + i, job.OutDim, job.Accumulate);
                        else QuantizedTile.Run<Q4_0Row, One, One>(w + i * job.RowBytes, job.RowBytes, qx, dx, k, numBlocks, numBlocks, y + i, job.OutDim, job.Accumulate);
                    }
                }
                else if (job.DType == WeightDType.Q8_0)
                    QuantizedTile.Tokens<Q8_0Row, TRows>(w, job.RowBytes, qx, dx, k, numBlocks, numBlocks, numTokens, y, job.OutDim, job.Accumulate);
                else
                    QuantizedTile.Tokens<Q4_0Row, TRows>(w, job.RowBytes, qx, dx, k, numBlocks, numBlocks, numTokens, y, job.OutDim, job.Accumulate);
                break;
            }
            default:
                Portable(ref job, row, TRows.Count, t0, numTokens);
                break;
        }
    }

    private static void RunPanels(ref Job job, int firstRow, int endRow)
    {
        int k = job.InDim;
        float* panel = Scratch.WeightRows(FloatPanel.PanelRows * k);
        for (int t0 = 0; t0 < job.NumTokens; t0 += job.TokensPerBlock)
        {
            int numTokens = Math.Min(job.TokensPerBlock, job.NumTokens - t0);
            for (int r = firstRow; r < endRow; r += FloatPanel.PanelRows)
            {
                int numRows = Math.Min(FloatPanel.PanelRows, endRow - r);
                byte* w = job.W + r * job.RowBytes;
                if (!CpuFeatures.UseVector512)
                {
                    // AVX2: f32 only (see Project).
                    FloatPanel256.PackF32(w, job.RowBytes, numRows, k, panel);
                    FloatPanel256.Tokens<F32Panel>((byte*)panel, numRows, job.X + (nint)t0 * job.XStride, job.XStride, numTokens, k, job.Y + (nint)t0 * job.OutDim + r, job.OutDim, job.Accumulate);
                    continue;
                }
                switch (job.DType)
                {
                    case WeightDType.F32: FloatPanel.Pack<F32Row>(w, job.RowBytes, numRows, k, panel); break;
                    case WeightDType.BF16: FloatPanel.Pack<Bf16Row>(w, job.RowBytes, numRows, k, panel); break;
                    default: FloatPanel.Pack<F16Row>(w, job.RowBytes, numRows, k, panel); break;
                }
                // The next 32 rows (this chunk's next panel, or the start of a neighbouring chunk, which then sits in
                // the shared L3 for the thread that takes it).
                int nextRows = Math.Min(FloatPanel.PanelRows, job.OutDim - (r + numRows));
                FloatPanel.Tokens<F32Panel>((byte*)panel, numRows, job.X + (nint)t0 * job.XStride, job.XStride, numTokens, k, job.Y + (nint)t0 * job.OutDim + r, job.OutDim, job.Accumulate,
                    w + numRows * job.RowBytes, Math.Max(0, nextRows) * job.RowBytes);
            }
        }
    }

    // Load-time panels (FloatPanelLayout), any token count: nothing to pack; one token takes the panel's k-major
    // stream with four k-chains, more run the microkernel (the AVX2 forms without AVX-512). A chunk starts on a panel
    // boundary (chunks are whole panels), so only the matrix's last panel can be partial.
    private static void RunLoadedPanels<TPanel>(ref Job job, int firstRow, int endRow) where TPanel : struct, IPanelElement
    {
        int k = job.InDim;
        nint panelBytes = (nint)k * TPanel.BytesPerK;
        for (int t0 = 0; t0 < job.NumTokens; t0 += job.TokensPerBlock)
        {
            int numTokens = Math.Min(job.TokensPerBlock, job.NumTokens - t0);
            float* x = job.X + (nint)t0 * job.XStride;
            for (int r = firstRow; r < endRow; r += FloatPanel.PanelRows)
            {
                int numRows = Math.Min(FloatPanel.PanelRows, endRow - r);
                byte* panel = job.W + r / FloatPanel.PanelRows * panelBytes;
                float* y = job.Y + (nint)t0 * job.OutDim + r;
                if (!CpuFeatures.UseVector512)
                {
                    if (numTokens == 1) FloatPanel256.Single<TPanel>(panel, numRows, x, k, y, job.Accumulate);
                    else FloatPanel256.Tokens<TPanel>(panel, numRows, x, job.XStride, numTokens, k, y, job.OutDim, job.Accumulate);
                    continue;
                }
                if (numTokens == 1)
                {
                    FloatPanel.Single<TPanel>(panel, numRows, x, k, y, job.Accumulate);
                    continue;
                }
                // The next panel is prefetched only when this chunk goes on to it: past the chunk's end it is another
                // chunk's, likely the other thread's, whose L2 our prefetch does not fill (prefetching it anyway cost
                // 3–5% of a 16-token step's projections, `quick step f32 20 16`, three alternating runs).
                bool lastOfChunk = r + FloatPanel.PanelRows >= endRow;
                FloatPanel.Tokens<TPanel>(panel, numRows, x, job.XStride, numTokens, k, y, job.OutDim, job.Accumulate, panel + panelBytes, lastOfChunk ? 0 : panelBytes);
            }
        }
    }

    private static void Portable(ref Job job, int row, int numRows, int t0, int numTokens)
    {
        int k = job.InDim;
        float* decoded = Scratch.WeightRows(k);
        for (int i = 0; i < numRows; i++)
        {
            byte* w = job.W + (row + i) * job.RowBytes;
            ReadOnlySpan<float> weights;
            if (job.DType == WeightDType.F32) weights = new ReadOnlySpan<float>(w, k);
            else
            {
                Quantization.WeightConversion.Decode(new ReadOnlySpan<byte>(w, (int)job.RowBytes), job.DType, new Span<float>(decoded, k));
                weights = new ReadOnlySpan<float>(decoded, k);
            }
            for (int t = t0; t < t0 + numTokens; t++)
            {
                float value = CpuKernels.Dot(weights, new ReadOnlySpan<float>(job.X + (nint)t * k, k));
                float* y = job.Y + (nint)t * job.OutDim + row + i;
                *y = job.Accumulate ? *y + value : value;
            }
        }
    }

    /// <summary>Widens one row of <paramref name="k"/> weights to f32 (AVX-512 path).</summary>
    private static void Widen(byte* row, WeightDType dtype, int k, float* destination)
    {
        // Only unpacked q8_0/q4_0 come here (Dequantize mode); float types go through FloatPanel's packing.
        switch (dtype)
        {
            case WeightDType.Q8_0:
                for (int b = 0; b < k / 32; b++)
                {
                    byte* block = row + b * 34;
                    var d = Vector512.Create(HalfBits.HalfToSingle(*(ushort*)block));
                    var q = Vector256.Load((sbyte*)(block + 2));
                    (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(q.GetLower())) * d).Store(destination + b * 32);
                    (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(q.GetUpper())) * d).Store(destination + b * 32 + 16);
                }
                return;
            case WeightDType.Q4_0:
                for (int b = 0; b < k / 32; b++)
                {
                    byte* block = row + b * 18;
                    var d = Vector512.Create(HalfBits.HalfToSingle(*(ushort*)block));
                    var q = Q4_0Row.LoadWeights(block);
                    (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(q.GetLower())) * d).Store(destination + b * 32);
                    (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(q.GetUpper())) * d).Store(destination + b * 32 + 16);
                }
                return;
        }
    }
}
