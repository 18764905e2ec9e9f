using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// <see cref="FloatPanel"/>'s kernels for CPUs with AVX2 and FMA but no AVX-512, over the same load-time panels
/// (<see cref="FloatPanelLayout"/>: 32 rows, k-major). AVX2 has 16 vector registers of 8 floats, so the outer-product
/// microkernel takes a panel as two halves of 16 rows (two Vector256 per k) against groups of up to
/// <see cref="MaxTokens"/> tokens: 2·6 accumulators, 2 weight vectors and 1 broadcast fill 15 of the 16 registers.
/// Per k and half: two panel loads, one broadcast per token, two FMAs per token, so it stays FMA-bound like the
/// AVX-512 kernel. One token reads the panel's four quarters per k (<see cref="Single{TPanel}"/>).
/// </summary>
/// <remarks>
/// The microkernel's outputs are each the sum over k in order, in f32 (one accumulator per output), exactly as
/// <see cref="FloatPanel"/>'s, so a prefill gives the same floats on either instruction set.
/// </remarks>
internal static unsafe class FloatPanel256
{
    /// <summary>Most tokens per microkernel call: 2·6 accumulators + 2 weight vectors + 1 broadcast in 16 ymm registers.</summary>
    public const int MaxTokens = 6;

    /// <summary>
    /// Rows <c>[16·half, 16·half + 16)</c> of one panel × tokens <c>[0, T)</c>:
    /// <c>y[t * yStride + r] (+)= Σ_i panel[i * 32 + 16·half + r] · x[t * xStride + i]</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run<TTokens, TPanel>(byte* panel, int half, float* x, nint xStride, int k, float* y, nint yStride, bool accumulate)
        where TTokens : struct, ICount where TPanel : struct, IPanelElement
    {
        int n = TTokens.Count;
        Vector256<float> c0a = default, c0b = default, c1a = default, c1b = default, c2a = default, c2b = default;
        Vector256<float> c3a = default, c3b = default, c4a = default, c4b = default, c5a = default, c5b = default;
        nint s = xStride;
        nint step = TPanel.BytesPerK;
        int first = 2 * half;
        byte* end = panel + k * step;
        for (float* xp = x; panel < end; panel += step, xp++)
        {
            var w0 = TPanel.Quarter(panel, first);
            var w1 = TPanel.Quarter(panel, first + 1);
            Vector256<float> b;
            { b = Vector256.Create(xp[0]); c0a = Vector256.FusedMultiplyAdd(w0, b, c0a); c0b = Vector256.FusedMultiplyAdd(w1, b, c0b); }
            if (n > 1) { b = Vector256.Create(xp[s]); c1a = Vector256.FusedMultiplyAdd(w0, b, c1a); c1b = Vector256.FusedMultiplyAdd(w1, b, c1b); }
            if (n > 2) { b = Vector256.Create(xp[2 * s]); c2a = Vector256.FusedMultiplyAdd(w0, b, c2a); c2b = Vector256.FusedMultiplyAdd(w1, b, c2b); }
            if (n > 3) { b = Vector256.Create(xp[3 * s]); c3a = Vector256.FusedMultiplyAdd(w0, b, c3a); c3b = Vector256.FusedMultiplyAdd(w1, b, c3b); }
            if (n > 4) { b = Vector256.Create(xp[4 * s]); c4a = Vector256.FusedMultiplyAdd(w0, b, c4a); c4b = Vector256.FusedMultiplyAdd(w1, b, c4b); }
            if (n > 5) { b = Vector256.Create(xp[5 * s]); c5a = Vector256.FusedMultiplyAdd(w0, b, c5a); c5b = Vector256.FusedMultiplyAdd(w1, b, c5b); }
        }
        float* yh = y + 16 * half;
        float scale = TPanel.OutputScale;
        Store(c0a, c0b, yh, accumulate, scale);
        if (n > 1) Store(c1a, c1b, yh + yStride, accumulate, scale);
        if (n > 2) Store(c2a, c2b, yh + 2 * yStride, accumulate, scale);
        if (n > 3) Store(c3a, c3b, yh + 3 * yStride, accumulate, scale);
        if (n > 4) Store(c4a, c4b, yh + 4 * yStride, accumulate, scale);
        if (n > 5) Store(c5a, c5b, yh + 5 * yStride, accumulate, scale);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> a, Vector256<float> b, float* y, bool accumulate, float scale = 1f)
    {
        if (scale != 1f)
        {
            a *= scale;
            b *= scale;
        }
        if (accumulate)
        {
            a += Vector256.Load(y);
            b += Vector256.Load(y + 8);
        }
        a.Store(y);
        b.Store(y + 8);
    }

    /// <summary>
    /// Runs <paramref name="numTokens"/> tokens (any count) against one panel, in near-equal groups of at most
    /// <see cref="MaxTokens"/> (16 tokens as 6 + 5 + 5), each group against both halves of the panel. Only the first
    /// <paramref name="numRows"/> outputs of each token are written.
    /// </summary>
    public static void Tokens<TPanel>(byte* panel, int numRows, float* x, nint xStride, int numTokens, int k, float* y, nint yStride, bool accumulate) where TPanel : struct, IPanelElement
    {
        int numGroups = (numTokens + MaxTokens - 1) / MaxTokens;
        // A panel with fewer than 32 real rows (the end of the matrix) goes through a 32-wide tile on the stack.
        float* tile = stackalloc float[MaxTokens * FloatPanel.PanelRows];
        int t = 0;
        for (int g = 0; g < numGroups; g++)
        {
            int count = (numTokens - t) / (numGroups - g);
            float* xg = x + t * xStride;
            float* yg = y + t * yStride;
            if (numRows == FloatPanel.PanelRows)
            {
                Group<TPanel>(count, panel, 0, xg, xStride, k, yg, yStride, accumulate);
                Group<TPanel>(count, panel, 1, xg, xStride, k, yg, yStride, accumulate);
            }
            else
            {
                Group<TPanel>(count, panel, 0, xg, xStride, k, tile, FloatPanel.PanelRows, false);
                if (numRows > 16) Group<TPanel>(count, panel, 1, xg, xStride, k, tile, FloatPanel.PanelRows, false);
                FloatPanel.StoreTile(tile, count, numRows, yg, yStride, accumulate);
            }
            t += count;
        }
    }

    private static void Group<TPanel>(int count, byte* panel, int half, float* x, nint xStride, int k, float* y, nint yStride, bool accumulate)
        where TPanel : struct, IPanelElement
    {
        switch (count)
        {
            case 1: Run<One, TPanel>(panel, half, x, xStride, k, y, yStride, accumulate); break;
            case 2: Run<Two, TPanel>(panel, half, x, xStride, k, y, yStride, accumulate); break;
            case 3: Run<Three, TPanel>(panel, half, x, xStride, k, y, yStride, accumulate); break;
            case 4: Run<Four, TPanel>(panel, half, x, xStride, k, y, yStride, accumulate); break;
            case 5: Run<Five, TPanel>(panel, half, x, xStride, k, y, yStride, accumulate); break;
            case 6: Run<Six, TPanel>(panel, half, x, xStride, k, y, yStride, accumulate); break;
            default: throw new ArgumentOutOfRangeException(nameof(count), count, "A group has 1 to 6 tokens.");
        }
    }

    /// <summary>
    /// Packs rows <c>[0, numRows)</c> (at most 32) of an f32 matrix into <paramref name="panel"/> in the load-time layout
    /// (<c>panel[i * 32 + r] = W[r, i]</c>, rows <c>numRows..31</c> zero), for the matrices that keep their rows on AVX2
    /// and meet many tokens at once: 8 × 8 blocks transposed in registers (unpack, shuffle, 128-bit permute), the k
    /// columns past the last multiple of 8 and the missing rows one element at a time.
    /// </summary>
    /// <param name="w">First weight row.</param>
    /// <param name="rowBytes">Bytes between weight rows.</param>
    /// <param name="numRows">Rows to pack (1..32).</param>
    /// <param name="k">Row length.</param>
    /// <param name="panel">Destination, <c>32 * k</c> floats.</param>
    public static void PackF32(byte* w, nint rowBytes, int numRows, int k, float* panel)
    {
        int fullGroups = numRows / 8, k8 = k & ~7;
        for (int g = 0; g < fullGroups; g++)
        {
            byte* rows = w + 8 * g * rowBytes;
            float* destination = panel + 8 * g;
            for (int i = 0; i < k8; i += 8) Transpose8(rows, rowBytes, i, destination + (nint)i * FloatPanel.PanelRows);
            for (int i = k8; i < k; i++)
                for (int r = 0; r < 8; r++) destination[(nint)i * FloatPanel.PanelRows + r] = ((float*)(rows + r * rowBytes))[i];
        }
        // The partial group and the padding rows.
        for (int r = 8 * fullGroups; r < FloatPanel.PanelRows; r++)
        {
            float* row = r < numRows ? (float*)(w + r * rowBytes) : null;
            for (int i = 0; i < k; i++) panel[(nint)i * FloatPanel.PanelRows + r] = row is null ? 0f : row[i];
        }
    }

    /// <summary>Loads 8 rows × 8 k-values at <paramref name="i"/> and stores them transposed, one Vector256 per k, 32 floats apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(byte* rows, nint rowBytes, int i, float* destination)
    {
        var r0 = Vector256.Load((float*)rows + i);
        var r1 = Vector256.Load((float*)(rows + rowBytes) + i);
        var r2 = Vector256.Load((float*)(rows + 2 * rowBytes) + i);
        var r3 = Vector256.Load((float*)(rows + 3 * rowBytes) + i);
        var r4 = Vector256.Load((float*)(rows + 4 * rowBytes) + i);
        var r5 = Vector256.Load((float*)(rows + 5 * rowBytes) + i);
        var r6 = Vector256.Load((float*)(rows + 6 * rowBytes) + i);
        var r7 = Vector256.Load((float*)(rows + 7 * rowBytes) + i);
        // Within 128-bit lanes: pairs of rows interleaved, then 4 × 4 transposes; then the lanes' halves exchanged.
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        const int stride = FloatPanel.PanelRows;
        Avx.Permute2x128(u0, u4, 0x20).Store(destination);
        Avx.Permute2x128(u1, u5, 0x20).Store(destination + stride);
        Avx.Permute2x128(u2, u6, 0x20).Store(destination + 2 * stride);
        Avx.Permute2x128(u3, u7, 0x20).Store(destination + 3 * stride);
        Avx.Permute2x128(u0, u4, 0x31).Store(destination + 4 * stride);
        Avx.Permute2x128(u1, u5, 0x31).Store(destination + 5 * stride);
        Avx.Permute2x128(u2, u6, 0x31).Store(destination + 6 * stride);
        Avx.Permute2x128(u3, u7, 0x31).Store(destination + 7 * stride);
    }

    /// <summary>
    /// One token against one panel (decode): <c>y[r] (+)= Σ_i panel[i * 32 + r] · x[i]</c> for r in
    /// <c>[0, numRows)</c>. Two k-chains of four accumulators (the four quarters) hide the FMA latency; the panel is read
    /// once, in order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Single<TPanel>(byte* panel, int numRows, float* x, int k, float* y, bool accumulate) where TPanel : struct, IPanelElement
    {
        nint step = TPanel.BytesPerK;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
        int i = 0;
        for (; i <= k - 2; i += 2, panel += 2 * step)
        {
            var x0 = Vector256.Create(x[i]);
            var x1 = Vector256.Create(x[i + 1]);
            a0 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 0), x0, a0);
            a1 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 1), x0, a1);
            a2 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 2), x0, a2);
            a3 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 3), x0, a3);
            b0 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel + step, 0), x1, b0);
            b1 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel + step, 1), x1, b1);
            b2 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel + step, 2), x1, b2);
            b3 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel + step, 3), x1, b3);
        }
        if (i < k)
        {
            var xi = Vector256.Create(x[i]);
            a0 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 0), xi, a0);
            a1 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 1), xi, a1);
            a2 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 2), xi, a2);
            a3 = Vector256.FusedMultiplyAdd(TPanel.Quarter(panel, 3), xi, a3);
        }
        float scale = TPanel.OutputScale;
        if (numRows == FloatPanel.PanelRows)
        {
            Store(a0 + b0, a1 + b1, y, accumulate, scale);
            Store(a2 + b2, a3 + b3, y + 16, accumulate, scale);
            return;
        }
        StoreRows((a0 + b0) * scale, (a1 + b1) * scale, (a2 + b2) * scale, (a3 + b3) * scale, numRows, y, accumulate);
    }

    // A last panel of fewer than 32 rows. Kept out of Single: a stackalloc there made the JIT keep Single's eight
    // accumulators on the stack.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void StoreRows(Vector256<float> q0, Vector256<float> q1, Vector256<float> q2, Vector256<float> q3, int numRows, float* y, bool accumulate)
    {
        float* tile = stackalloc float[FloatPanel.PanelRows];
        q0.Store(tile);
        q1.Store(tile + 8);
        q2.Store(tile + 16);
        q3.Store(tile + 24);
        FloatPanel.StoreTile(tile, 1, numRows, y, 0, accumulate);
    }
}
