using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels.MatMul;

internal struct Five : ICount { public static int Count => 5; }
internal struct Six : ICount { public static int Count => 6; }
internal struct Seven : ICount { public static int Count => 7; }
internal struct Eight : ICount { public static int Count => 8; }
internal struct Nine : ICount { public static int Count => 9; }
internal struct Ten : ICount { public static int Count => 10; }
internal struct Eleven : ICount { public static int Count => 11; }
internal struct Twelve : ICount { public static int Count => 12; }

/// <summary>The element type of a float panel: how the 32 rows' weights at one k are loaded as two Vector512 of f32.</summary>
internal unsafe interface IPanelElement
{
    /// <summary>Bytes of one k (32 weights).</summary>
    static abstract int BytesPerK { get; }
    /// <summary>Rows 0–15 of the k at <paramref name="p"/>.</summary>
    static abstract Vector512<float> Low(byte* p);
    /// <summary>Rows 16–31 of the k at <paramref name="p"/>.</summary>
    static abstract Vector512<float> High(byte* p);
    /// <summary>Rows <c>8·quarter</c> to <c>8·quarter + 7</c> of the k at <paramref name="p"/> (the AVX2 kernels, <see cref="FloatPanel256"/>).</summary>
    static abstract Vector256<float> Quarter(byte* p, int quarter);
    /// <summary>
    /// What the loads leave out: the weights they return times this power of two are the stored ones, so the kernels
    /// multiply their sums by it before storing them (1 but for f16).
    /// </summary>
    static abstract float OutputScale { get; }
}

/// <summary>f32 panels (load-time f32 matrices, and the per-call scratch panels of every float type).</summary>
internal unsafe struct F32Panel : IPanelElement
{
    public static int BytesPerK => 128;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Low(byte* p) => Vector512.Load((float*)p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> High(byte* p) => Vector512.Load((float*)p + 16);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Quarter(byte* p, int quarter) => Vector256.Load((float*)p + 8 * quarter);
    public static float OutputScale => 1f;
}

/// <summary>bf16 panels, widened in registers (a shift): half the bytes of f32 per k.</summary>
internal unsafe struct Bf16Panel : IPanelElement
{
    public static int BytesPerK => 64;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Low(byte* p) => HalfBits.BFloat16ToSingle(Vector256.Load((ushort*)p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> High(byte* p) => HalfBits.BFloat16ToSingle(Vector256.Load((ushort*)p + 16));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Quarter(byte* p, int quarter) => HalfBits.BFloat16ToSingle(Vector128.Load((ushort*)p + 8 * quarter));
    public static float OutputScale => 1f;
}

/// <summary>
/// f16 panels, widened in registers in three instructions per vector (<see cref="HalfBits.ScaledFiniteHalfToSingle(Vector256{short})"/>:
/// each weight 2^-112 times its value, exactly), the sums rescaled once at the end (<see cref="OutputScale"/>); the general
/// widening's eleven instructions made f16 decode ~1.5× slower than bf16 for the same bytes. Only for panels without
/// infinity or NaN, which <see cref="FloatPanelLayout.HasFiniteHalves"/> checks before packing. Each product is exact, and
/// so is every partial sum whose magnitude stays at 2^-14 or more; below that the scaled sums are f32 subnormals,
/// rounded to 2^-149 (2^-37 at the true scale) instead of to 24 bits.
/// </summary>
internal unsafe struct F16Panel : IPanelElement
{
    public static int BytesPerK => 64;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Low(byte* p) => HalfBits.ScaledFiniteHalfToSingle(Vector256.Load((short*)p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> High(byte* p) => HalfBits.ScaledFiniteHalfToSingle(Vector256.Load((short*)p + 16));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Quarter(byte* p, int quarter) => HalfBits.ScaledFiniteHalfToSingle(Vector128.Load((short*)p + 8 * quarter));
    public static float OutputScale => HalfBits.FiniteHalfScale;
}

/// <summary>
/// The outer-product (BLIS-style) microkernel of the float projections with many tokens (AVX-512): a panel of
/// <see cref="PanelRows"/> weight rows is packed once per token block into per-thread scratch, transposed so that
/// the 32 rows' weights at one k are two consecutive Vector512s (f16/bf16 widened to f32 on the way), and every
/// group of up to <see cref="MaxTokens"/> tokens is then multiplied against it: per k, two panel loads, one broadcast
/// of x[t, k] per token and two FMAs per token into 2·T accumulators. No horizontal sums, no k tails (k is walked
/// one value at a time), and the outputs of a token are 32 contiguous floats, so the tile is FMA-bound.
/// </summary>
/// <remarks>
/// Each output is the sum over k in order, in f32 (one accumulator per output): the rounding error is at most
/// k·2⁻²⁴·Σ|wx| and about √k·2⁻²⁴·Σ|wx| for random signs.
/// The packing cost (a 16×16 transpose per 256 weights) is paid once per panel and token block, so it is
/// amortized over the block's tokens; below <see cref="LinearKernel.MinTokensToPack"/> tokens the dot-product
/// tile in <see cref="FloatTile"/>, which reads the weights in place, is cheaper.
/// </remarks>
internal static unsafe class FloatPanel
{
    /// <summary>Weight rows per packed panel: two Vector512 of f32.</summary>
    public const int PanelRows = 32;
    /// <summary>Most tokens per microkernel call: 2·12 accumulators + 2 weight vectors + 1 broadcast fit in 32 zmm.</summary>
    public const int MaxTokens = 12;

    /// <summary>
    /// Packs rows <c>[0, numRows)</c> (at most 32) of a float-typed matrix into <paramref name="panel"/>:
    /// <c>panel[i * 32 + r] = W[r, i]</c> for i in <c>[0, k)</c>; rows <c>numRows..31</c> are zero.
    /// </summary>
    /// <param name="w">First weight row.</param>
    /// <param name="rowBytes">Bytes between weight rows.</param>
    /// <param name="numRows">Rows to pack (1..32).</param>
    /// <param name="k">Row length.</param>
    /// <param name="panel">Destination, <c>32 * k</c> floats, 64-byte aligned.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pack<TRow>(byte* w, nint rowBytes, int numRows, int k, float* panel) where TRow : struct, IFloatRow
    {
        for (int half = 0; half < 2; half++)
        {
            int rows = Math.Min(16, numRows - 16 * half);
            float* destination = panel + 16 * half;
            if (rows <= 0)
            {
                for (int i = 0; i < k; i++) Vector512<float>.Zero.Store(destination + i * PanelRows);
                continue;
            }
            byte* first = w + 16 * half * rowBytes;
            int j = 0;
            if (rows == 16)
            {
                for (; j <= k - 16; j += 16) Transpose16<TRow>(first, rowBytes, j, destination + j * PanelRows);
            }
            for (; j < k; j++)
            {
                float* column = destination + j * PanelRows;
                for (int r = 0; r < 16; r++) column[r] = r < rows ? TRow.Load1(first + r * rowBytes, j) : 0f;
            }
        }
    }

    /// <summary>Loads 16 rows × 16 k-values at <paramref name="j"/> and stores them transposed, one Vector512 per k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose16<TRow>(byte* w, nint rowBytes, int j, float* destination) where TRow : struct, IFloatRow
    {
        var r0 = TRow.Load16(w + 0 * rowBytes, j);
        var r1 = TRow.Load16(w + 1 * rowBytes, j);
        var r2 = TRow.Load16(w + 2 * rowBytes, j);
        var r3 = TRow.Load16(w + 3 * rowBytes, j);
        var r4 = TRow.Load16(w + 4 * rowBytes, j);
        var r5 = TRow.Load16(w + 5 * rowBytes, j);
        var r6 = TRow.Load16(w + 6 * rowBytes, j);
        var r7 = TRow.Load16(w + 7 * rowBytes, j);
        var r8 = TRow.Load16(w + 8 * rowBytes, j);
        var r9 = TRow.Load16(w + 9 * rowBytes, j);
        var r10 = TRow.Load16(w + 10 * rowBytes, j);
        var r11 = TRow.Load16(w + 11 * rowBytes, j);
        var r12 = TRow.Load16(w + 12 * rowBytes, j);
        var r13 = TRow.Load16(w + 13 * rowBytes, j);
        var r14 = TRow.Load16(w + 14 * rowBytes, j);
        var r15 = TRow.Load16(w + 15 * rowBytes, j);
        // Within 128-bit lanes: 4×4 transposes of each group of four rows.
        var t0 = Avx512F.UnpackLow(r0, r1); var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3); var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5); var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7); var t7 = Avx512F.UnpackHigh(r6, r7);
        var t8 = Avx512F.UnpackLow(r8, r9); var t9 = Avx512F.UnpackHigh(r8, r9);
        var t10 = Avx512F.UnpackLow(r10, r11); var t11 = Avx512F.UnpackHigh(r10, r11);
        var t12 = Avx512F.UnpackLow(r12, r13); var t13 = Avx512F.UnpackHigh(r12, r13);
        var t14 = Avx512F.UnpackLow(r14, r15); var t15 = Avx512F.UnpackHigh(r14, r15);
        r0 = Avx512F.Shuffle(t0, t2, 0x44); r1 = Avx512F.Shuffle(t0, t2, 0xEE); r2 = Avx512F.Shuffle(t1, t3, 0x44); r3 = Avx512F.Shuffle(t1, t3, 0xEE);
        r4 = Avx512F.Shuffle(t4, t6, 0x44); r5 = Avx512F.Shuffle(t4, t6, 0xEE); r6 = Avx512F.Shuffle(t5, t7, 0x44); r7 = Avx512F.Shuffle(t5, t7, 0xEE);
        r8 = Avx512F.Shuffle(t8, t10, 0x44); r9 = Avx512F.Shuffle(t8, t10, 0xEE); r10 = Avx512F.Shuffle(t9, t11, 0x44); r11 = Avx512F.Shuffle(t9, t11, 0xEE);
        r12 = Avx512F.Shuffle(t12, t14, 0x44); r13 = Avx512F.Shuffle(t12, t14, 0xEE); r14 = Avx512F.Shuffle(t13, t15, 0x44); r15 = Avx512F.Shuffle(t13, t15, 0xEE);
        // Then the 128-bit lanes across groups.
        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88); t4 = Avx512F.Shuffle4x128(r0, r4, 0xDD);
        t1 = Avx512F.Shuffle4x128(r1, r5, 0x88); t5 = Avx512F.Shuffle4x128(r1, r5, 0xDD);
        t2 = Avx512F.Shuffle4x128(r2, r6, 0x88); t6 = Avx512F.Shuffle4x128(r2, r6, 0xDD);
        t3 = Avx512F.Shuffle4x128(r3, r7, 0x88); t7 = Avx512F.Shuffle4x128(r3, r7, 0xDD);
        t8 = Avx512F.Shuffle4x128(r8, r12, 0x88); t12 = Avx512F.Shuffle4x128(r8, r12, 0xDD);
        t9 = Avx512F.Shuffle4x128(r9, r13, 0x88); t13 = Avx512F.Shuffle4x128(r9, r13, 0xDD);
        t10 = Avx512F.Shuffle4x128(r10, r14, 0x88); t14 = Avx512F.Shuffle4x128(r10, r14, 0xDD);
        t11 = Avx512F.Shuffle4x128(r11, r15, 0x88); t15 = Avx512F.Shuffle4x128(r11, r15, 0xDD);
        Avx512F.Shuffle4x128(t0, t8, 0x88).Store(destination + 0 * PanelRows); Avx512F.Shuffle4x128(t0, t8, 0xDD).Store(destination + 8 * PanelRows);
        Avx512F.Shuffle4x128(t1, t9, 0x88).Store(destination + 1 * PanelRows); Avx512F.Shuffle4x128(t1, t9, 0xDD).Store(destination + 9 * PanelRows);
        Avx512F.Shuffle4x128(t2, t10, 0x88).Store(destination + 2 * PanelRows); Avx512F.Shuffle4x128(t2, t10, 0xDD).Store(destination + 10 * PanelRows);
        Avx512F.Shuffle4x128(t3, t11, 0x88).Store(destination + 3 * PanelRows); Avx512F.Shuffle4x128(t3, t11, 0xDD).Store(destination + 11 * PanelRows);
        Avx512F.Shuffle4x128(t4, t12, 0x88).Store(destination + 4 * PanelRows); Avx512F.Shuffle4x128(t4, t12, 0xDD).Store(destination + 12 * PanelRows);
        Avx512F.Shuffle4x128(t5, t13, 0x88).Store(destination + 5 * PanelRows); Avx512F.Shuffle4x128(t5, t13, 0xDD).Store(destination + 13 * PanelRows);
        Avx512F.Shuffle4x128(t6, t14, 0x88).Store(destination + 6 * PanelRows); Avx512F.Shuffle4x128(t6, t14, 0xDD).Store(destination + 14 * PanelRows);
        Avx512F.Shuffle4x128(t7, t15, 0x88).Store(destination + 7 * PanelRows); Avx512F.Shuffle4x128(t7, t15, 0xDD).Store(destination + 15 * PanelRows);
    }

    /// <summary>
    /// Tokens <c>[0, T)</c> × the 32 packed rows: <c>y[t * yStride + r] (+)= Σ_i panel[i * 32 + r] · x[t * xStride + i]</c>.
    /// </summary>
    /// <param name="panel">Packed panel (<see cref="Pack{TRow}"/>, or a load-time panel of <see cref="FloatPanelLayout"/>), <c>k</c> × <typeparamref name="TPanel"/>'s bytes per k.</param>
    /// <param name="x">First activation row.</param>
    /// <param name="xStride">Floats between activation rows.</param>
    /// <param name="k">Row length (inDim).</param>
    /// <param name="y">Output of (token 0, panel row 0); 32 floats per token are written.</param>
    /// <param name="yStride">Floats between output rows (outDim).</param>
    /// <param name="accumulate">Add to y instead of overwriting it.</param>
    /// <param name="prefetch">Start of bytes to fetch into L2 along the way (the next panel's weights), a few 64-byte lines every fourth k.</param>
    /// <param name="prefetchLines">Lines to fetch.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TTokens, TPanel>(byte* panel, float* x, nint xStride, int k, float* y, nint yStride, bool accumulate, byte* prefetch, nint prefetchLines)
        where TTokens : struct, ICount where TPanel : struct, IPanelElement
    {
        int n = TTokens.Count;
        Vector512<float> c0a = default, c0b = default;
        Vector512<float> c1a = default, c1b = default;
        Vector512<float> c2a = default, c2b = default;
        Vector512<float> c3a = default, c3b = default;
        Vector512<float> c4a = default, c4b = default;
        Vector512<float> c5a = default, c5b = default;
        Vector512<float> c6a = default, c6b = default;
        Vector512<float> c7a = default, c7b = default;
        Vector512<float> c8a = default, c8b = default;
        Vector512<float> c9a = default, c9b = default;
        Vector512<float> c10a = default, c10b = default;
        Vector512<float> c11a = default, c11b = default;
        nint s = xStride;
        nint step = TPanel.BytesPerK;
        byte* end = panel + k * step;
        byte* prefetchEnd = prefetch + prefetchLines * 64;
        // Lines per fourth k so that the whole range is fetched within this call (1 for a 128-token prefill's 11
        // groups, 4 for a 16-token decode step's 2 groups of f32 rows).
        nint prefetchStep = 64 * Math.Max(1, (prefetchLines + k / 4 - 1) / Math.Max(1, k / 4));
        for (float* xp = x; panel < end; panel += step, xp++)
        {
            // A few lines every fourth k: a steady trickle; a line every k regardless of need queued up behind DRAM
            // and stalled the FMAs (~8% of this loop's samples in a perf profile of a 128-token prefill).
            if (((nint)xp & 15) == 0 && prefetch < prefetchEnd)
            {
                for (nint line = 0; line < prefetchStep; line += 64) Sse.Prefetch1(prefetch + line);
                prefetch += prefetchStep;
            }
            var w0 = TPanel.Low(panel);
            var w1 = TPanel.High(panel);
            Vector512<float> b;
            { b = Vector512.Create(xp[0]); c0a = Vector512.FusedMultiplyAdd(w0, b, c0a); c0b = Vector512.FusedMultiplyAdd(w1, b, c0b); }
            if (n > 1) { b = Vector512.Create(xp[s]); c1a = Vector512.FusedMultiplyAdd(w0, b, c1a); c1b = Vector512.FusedMultiplyAdd(w1, b, c1b); }
            if (n > 2) { b = Vector512.Create(xp[2 * s]); c2a = Vector512.FusedMultiplyAdd(w0, b, c2a); c2b = Vector512.FusedMultiplyAdd(w1, b, c2b); }
            if (n > 3) { b = Vector512.Create(xp[3 * s]); c3a = Vector512.FusedMultiplyAdd(w0, b, c3a); c3b = Vector512.FusedMultiplyAdd(w1, b, c3b); }
            if (n > 4) { b = Vector512.Create(xp[4 * s]); c4a = Vector512.FusedMultiplyAdd(w0, b, c4a); c4b = Vector512.FusedMultiplyAdd(w1, b, c4b); }
            if (n > 5) { b = Vector512.Create(xp[5 * s]); c5a = Vector512.FusedMultiplyAdd(w0, b, c5a); c5b = Vector512.FusedMultiplyAdd(w1, b, c5b); }
            if (n > 6) { b = Vector512.Create(xp[6 * s]); c6a = Vector512.FusedMultiplyAdd(w0, b, c6a); c6b = Vector512.FusedMultiplyAdd(w1, b, c6b); }
            if (n > 7) { b = Vector512.Create(xp[7 * s]); c7a = Vector512.FusedMultiplyAdd(w0, b, c7a); c7b = Vector512.FusedMultiplyAdd(w1, b, c7b); }
            if (n > 8) { b = Vector512.Create(xp[8 * s]); c8a = Vector512.FusedMultiplyAdd(w0, b, c8a); c8b = Vector512.FusedMultiplyAdd(w1, b, c8b); }
            if (n > 9) { b = Vector512.Create(xp[9 * s]); c9a = Vector512.FusedMultiplyAdd(w0, b, c9a); c9b = Vector512.FusedMultiplyAdd(w1, b, c9b); }
            if (n > 10) { b = Vector512.Create(xp[10 * s]); c10a = Vector512.FusedMultiplyAdd(w0, b, c10a); c10b = Vector512.FusedMultiplyAdd(w1, b, c10b); }
            if (n > 11) { b = Vector512.Create(xp[11 * s]); c11a = Vector512.FusedMultiplyAdd(w0, b, c11a); c11b = Vector512.FusedMultiplyAdd(w1, b, c11b); }
        }
        Store(c0a, c0b, y + 0 * yStride, accumulate, TPanel.OutputScale);
        if (n > 1) Store(c1a, c1b, y + 1 * yStride, accumulate, TPanel.OutputScale);
        if (n > 2) Store(c2a, c2b, y + 2 * yStride, accumulate, TPanel.OutputScale);
        if (n > 3) Store(c3a, c3b, y + 3 * yStride, accumulate, TPanel.OutputScale);
        if (n > 4) Store(c4a, c4b, y + 4 * yStride, accumulate, TPanel.OutputScale);
        if (n > 5) Store(c5a, c5b, y + 5 * yStride, accumulate, TPanel.OutputScale);
        if (n > 6) Store(c6a, c6b, y + 6 * yStride, accumulate, TPanel.OutputScale);
        if (n > 7) Store(c7a, c7b, y + 7 * yStride, accumulate, TPanel.OutputScale);
        if (n > 8) Store(c8a, c8b, y + 8 * yStride, accumulate, TPanel.OutputScale);
        if (n > 9) Store(c9a, c9b, y + 9 * yStride, accumulate, TPanel.OutputScale);
        if (n > 10) Store(c10a, c10b, y + 10 * yStride, accumulate, TPanel.OutputScale);
        if (n > 11) Store(c11a, c11b, y + 11 * yStride, accumulate, TPanel.OutputScale);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector512<float> a, Vector512<float> b, float* y, bool accumulate, float scale = 1f)
    {
        if (scale != 1f)
        {
            a *= scale;
            b *= scale;
        }
        if (accumulate)
        {
            a += Vector512.Load(y);
            b += Vector512.Load(y + 16);
        }
        a.Store(y);
        b.Store(y + 16);
    }

    /// <summary>
    /// One token against one panel (decode over load-time panels): <c>y[r] (+)= Σ_i panel[i * 32 + r] · x[i]</c> for
    /// r in <c>[0, numRows)</c>. Four k-chains of two accumulators each hide the FMA latency; the panel is read once,
    /// in order, so a thread's panels are one sequential stream for the hardware prefetcher.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Single<TPanel>(byte* panel, int numRows, float* x, int k, float* y, bool accumulate) where TPanel : struct, IPanelElement
    {
        nint step = TPanel.BytesPerK;
        Vector512<float> a0 = default, b0 = default, a1 = default, b1 = default;
        Vector512<float> a2 = default, b2 = default, a3 = default, b3 = default;
        int i = 0;
        for (; i <= k - 4; i += 4, panel += 4 * step)
        {
            var x0 = Vector512.Create(x[i]);
            var x1 = Vector512.Create(x[i + 1]);
            var x2 = Vector512.Create(x[i + 2]);
            var x3 = Vector512.Create(x[i + 3]);
            a0 = Vector512.FusedMultiplyAdd(TPanel.Low(panel), x0, a0);
            b0 = Vector512.FusedMultiplyAdd(TPanel.High(panel), x0, b0);
            a1 = Vector512.FusedMultiplyAdd(TPanel.Low(panel + step), x1, a1);
            b1 = Vector512.FusedMultiplyAdd(TPanel.High(panel + step), x1, b1);
            a2 = Vector512.FusedMultiplyAdd(TPanel.Low(panel + 2 * step), x2, a2);
            b2 = Vector512.FusedMultiplyAdd(TPanel.High(panel + 2 * step), x2, b2);
            a3 = Vector512.FusedMultiplyAdd(TPanel.Low(panel + 3 * step), x3, a3);
            b3 = Vector512.FusedMultiplyAdd(TPanel.High(panel + 3 * step), x3, b3);
        }
        for (; i < k; i++, panel += step)
        {
            var xi = Vector512.Create(x[i]);
            a0 = Vector512.FusedMultiplyAdd(TPanel.Low(panel), xi, a0);
            b0 = Vector512.FusedMultiplyAdd(TPanel.High(panel), xi, b0);
        }
        var low = (a0 + a1) + (a2 + a3);
        var high = (b0 + b1) + (b2 + b3);
        if (TPanel.OutputScale != 1f)
        {
            low *= TPanel.OutputScale;
            high *= TPanel.OutputScale;
        }
        if (numRows == PanelRows)
        {
            Store(low, high, y, accumulate);
            return;
        }
        float* tile = stackalloc float[PanelRows];
        low.Store(tile);
        high.Store(tile + 16);
        StoreTile(tile, 1, numRows, y, 0, accumulate);
    }

    /// <summary>
    /// Writes (or with <paramref name="accumulate"/> adds) the first <paramref name="numRows"/> outputs of
    /// <paramref name="count"/> tokens from a 32-wide tile (<see cref="PanelRows"/> floats per token) to
    /// <c>y[t * yStride + r]</c>: how a panel with fewer than 32 real rows, the end of a matrix, is stored.
    /// </summary>
    internal static void StoreTile(float* tile, int count, int numRows, float* y, nint yStride, bool accumulate)
    {
        for (int t = 0; t < count; t++)
        {
            float* yt = y + t * yStride;
            float* source = tile + t * PanelRows;
            for (int r = 0; r < numRows; r++) yt[r] = accumulate ? yt[r] + source[r] : source[r];
        }
    }

    /// <summary>
    /// Runs <paramref name="numTokens"/> tokens (any count) against one packed panel, in near-equal groups of at most
    /// <see cref="MaxTokens"/>: 128 tokens run as 11 groups of 11 or 12 rather than 10 × 12 and a narrow 8, 16 as 2 × 8.
    /// Only the first <paramref name="numRows"/> outputs of each token are written. Along the way the
    /// <paramref name="nextPanelBytes"/> bytes at <paramref name="nextPanel"/> (the weights packed next) are fetched into
    /// L2, spread over the groups, so their DRAM latency hides behind this panel's FMAs instead of stalling the packing.
    /// </summary>
    public static void Tokens<TPanel>(byte* panel, int numRows, float* x, nint xStride, int numTokens, int k, float* y, nint yStride, bool accumulate, byte* nextPanel, nint nextPanelBytes) where TPanel : struct, IPanelElement
    {
        int numGroups = (numTokens + MaxTokens - 1) / MaxTokens;
        nint linesPerGroup = (nextPanelBytes + 64 * numGroups - 1) / (64 * numGroups);
        int t = 0;
        for (int g = 0; g < numGroups; g++)
        {
            int count = (numTokens - t) / (numGroups - g);
            byte* prefetch = nextPanel + g * linesPerGroup * 64;
            if (numRows == PanelRows) Group<TPanel>(count, panel, x + t * xStride, xStride, k, y + t * yStride, yStride, accumulate, prefetch, linesPerGroup);
            else Partial<TPanel>(count, panel, numRows, x + t * xStride, xStride, k, y + t * yStride, yStride, accumulate, prefetch, linesPerGroup);
            t += count;
        }
    }

    // A panel with fewer than 32 real rows (the end of the matrix) goes through a 32-wide tile on the stack.
    private static void Partial<TPanel>(int count, byte* panel, int numRows, float* x, nint xStride, int k, float* y, nint yStride, bool accumulate, byte* prefetch, nint prefetchLines) where TPanel : struct, IPanelElement
    {
        float* tile = stackalloc float[MaxTokens * PanelRows];
        Group<TPanel>(count, panel, x, xStride, k, tile, PanelRows, false, prefetch, prefetchLines);
        StoreTile(tile, count, numRows, y, yStride, accumulate);
    }

    private static void Group<TPanel>(int count, byte* panel, float* x, nint xStride, int k, float* y, nint yStride, bool accumulate, byte* prefetch, nint prefetchLines)
        where TPanel : struct, IPanelElement
    {
        switch (count)
        {
            case 1: Run<One, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 2: Run<Two, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 3: Run<Three, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 4: Run<Four, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 5: Run<Five, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 6: Run<Six, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 7: Run<Seven, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 8: Run<Eight, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 9: Run<Nine, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 10: Run<Ten, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 11: Run<Eleven, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
            case 12: Run<Twelve, TPanel>(panel, x, xStride, k, y, yStride, accumulate, prefetch, prefetchLines); break;
        }
    }
}
