using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>A compile-time count (1 to 4 here, 5 to 12 beside <see cref="FloatPanel"/>) for the generic tiles: the JIT and AOT fold every <c>Count</c> test.</summary>
internal interface ICount { static abstract int Count { get; } }
internal struct One : ICount { public static int Count => 1; }
internal struct Two : ICount { public static int Count => 2; }
internal struct Three : ICount { public static int Count => 3; }
internal struct Four : ICount { public static int Count => 4; }

/// <summary>Reads 16 consecutive weights of a float-typed row as f32 (and one for the tails).</summary>
internal unsafe interface IFloatRow
{
    static abstract Vector512<float> Load16(byte* row, int k);
    static abstract float Load1(byte* row, int k);
}

internal unsafe struct F32Row : IFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int k) => Vector512.Load((float*)row + k);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* row, int k) => ((float*)row)[k];
}

internal unsafe struct Bf16Row : IFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int k) => HalfBits.BFloat16ToSingle(Vector256.Load((ushort*)row + k));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* row, int k) => HalfBits.BFloat16ToSingle(((ushort*)row)[k]);
}

internal unsafe struct F16Row : IFloatRow
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int k) => HalfBits.HalfToSingle(Vector256.Load((ushort*)row + k));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load1(byte* row, int k) => HalfBits.HalfToSingle(((ushort*)row)[k]);
}

/// <summary>
/// The register-blocked microkernel of the float projections (AVX-512): R weight rows
/// × T activation rows, both contiguous along k, in up to 16 Vector512 accumulators
/// (one per output). Each step loads R weight vectors and T activation vectors for R·T FMAs, so the 4 × 4 tile
/// is FMA-bound even with the activations streaming from L2. The horizontal sums and the k tail (k not a
/// multiple of 16) are paid once per output.
/// </summary>
internal static unsafe class FloatTile
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);

    /// <param name="w">First weight row.</param>
    /// <param name="wStride">Bytes between weight rows.</param>
    /// <param name="x">First activation row.</param>
    /// <param name="xStride">Floats between activation rows.</param>
    /// <param name="k">Row length (inDim).</param>
    /// <param name="y">Output of (row 0, token 0); token t, row r at <c>y[t * yStride + r]</c>.</param>
    /// <param name="yStride">Floats between output rows (outDim).</param>
    /// <param name="accumulate">Add to y instead of overwriting it.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TRow, TRows, TTokens>(byte* w, nint wStride, float* x, nint xStride, int k, float* y, nint yStride, bool accumulate)
        where TRow : struct, IFloatRow where TRows : struct, ICount where TTokens : struct, ICount
    {
        var a00 = Vector512<float>.Zero; var a01 = Vector512<float>.Zero; var a02 = Vector512<float>.Zero; var a03 = Vector512<float>.Zero;
        var a10 = Vector512<float>.Zero; var a11 = Vector512<float>.Zero; var a12 = Vector512<float>.Zero; var a13 = Vector512<float>.Zero;
        var a20 = Vector512<float>.Zero; var a21 = Vector512<float>.Zero; var a22 = Vector512<float>.Zero; var a23 = Vector512<float>.Zero;
        var a30 = Vector512<float>.Zero; var a31 = Vector512<float>.Zero; var a32 = Vector512<float>.Zero; var a33 = Vector512<float>.Zero;
        byte* w0 = w, w1 = w + wStride, w2 = w + 2 * wStride, w3 = w + 3 * wStride;
        float* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        int r = TRows.Count, t = TTokens.Count;
        int i = 0;
        for (; i <= k - 16; i += 16)
        {
            if (t < 4 && r > 1)
            {
                // Decode is a stream of weight rows: fetch the same place of the next row group ahead of use.
                byte* next = w0 + 4 * wStride + (nint)i * (wStride / k);
                Sse.Prefetch0(next);
                Sse.Prefetch0(next + wStride);
                Sse.Prefetch0(next + 2 * wStride);
                Sse.Prefetch0(next + 3 * wStride);
            }
            var v0 = TRow.Load16(w0, i);
            var v1 = r > 1 ? TRow.Load16(w1, i) : default;
            var v2 = r > 2 ? TRow.Load16(w2, i) : default;
            var v3 = r > 3 ? TRow.Load16(w3, i) : default;
            var u = Vector512.Load(x0 + i);
            a00 = Fma(v0, u, a00);
            if (r > 1) a10 = Fma(v1, u, a10);
            if (r > 2) a20 = Fma(v2, u, a20);
            if (r > 3) a30 = Fma(v3, u, a30);
            if (t > 1)
            {
                u = Vector512.Load(x1 + i);
                a01 = Fma(v0, u, a01);
                if (r > 1) a11 = Fma(v1, u, a11);
                if (r > 2) a21 = Fma(v2, u, a21);
                if (r > 3) a31 = Fma(v3, u, a31);
            }
            if (t > 2)
            {
                u = Vector512.Load(x2 + i);
                a02 = Fma(v0, u, a02);
                if (r > 1) a12 = Fma(v1, u, a12);
                if (r > 2) a22 = Fma(v2, u, a22);
                if (r > 3) a32 = Fma(v3, u, a32);
            }
            if (t > 3)
            {
                u = Vector512.Load(x3 + i);
                a03 = Fma(v0, u, a03);
                if (r > 1) a13 = Fma(v1, u, a13);
                if (r > 2) a23 = Fma(v2, u, a23);
                if (r > 3) a33 = Fma(v3, u, a33);
            }
        }
        Finish<TRow>(a00, w0, x0, i, k, y, accumulate);
        if (r > 1) Finish<TRow>(a10, w1, x0, i, k, y + 1, accumulate);
        if (r > 2) Finish<TRow>(a20, w2, x0, i, k, y + 2, accumulate);
        if (r > 3) Finish<TRow>(a30, w3, x0, i, k, y + 3, accumulate);
        if (t > 1)
        {
            float* yt = y + yStride;
            Finish<TRow>(a01, w0, x1, i, k, yt, accumulate);
            if (r > 1) Finish<TRow>(a11, w1, x1, i, k, yt + 1, accumulate);
            if (r > 2) Finish<TRow>(a21, w2, x1, i, k, yt + 2, accumulate);
            if (r > 3) Finish<TRow>(a31, w3, x1, i, k, yt + 3, accumulate);
        }
        if (t > 2)
        {
            float* yt = y + 2 * yStride;
            Finish<TRow>(a02, w0, x2, i, k, yt, accumulate);
            if (r > 1) Finish<TRow>(a12, w1, x2, i, k, yt + 1, accumulate);
            if (r > 2) Finish<TRow>(a22, w2, x2, i, k, yt + 2, accumulate);
            if (r > 3) Finish<TRow>(a32, w3, x2, i, k, yt + 3, accumulate);
        }
        if (t > 3)
        {
            float* yt = y + 3 * yStride;
            Finish<TRow>(a03, w0, x3, i, k, yt, accumulate);
            if (r > 1) Finish<TRow>(a13, w1, x3, i, k, yt + 1, accumulate);
            if (r > 2) Finish<TRow>(a23, w2, x3, i, k, yt + 2, accumulate);
            if (r > 3) Finish<TRow>(a33, w3, x3, i, k, yt + 3, accumulate);
        }
    }

    /// <summary>
    /// One weight row against one activation row (decode): a single sequential stream with four independent
    /// accumulators, the access pattern the hardware prefetcher follows best.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RowDot<TRow>(byte* w, float* x, int k, float* y, bool accumulate) where TRow : struct, IFloatRow
    {
        var a0 = Vector512<float>.Zero; var a1 = Vector512<float>.Zero; var a2 = Vector512<float>.Zero; var a3 = Vector512<float>.Zero;
        int i = 0;
        for (; i <= k - 64; i += 64)
        {
            a0 = Fma(TRow.Load16(w, i), Vector512.Load(x + i), a0);
            a1 = Fma(TRow.Load16(w, i + 16), Vector512.Load(x + i + 16), a1);
            a2 = Fma(TRow.Load16(w, i + 32), Vector512.Load(x + i + 32), a2);
            a3 = Fma(TRow.Load16(w, i + 48), Vector512.Load(x + i + 48), a3);
        }
        for (; i <= k - 16; i += 16) a0 = Fma(TRow.Load16(w, i), Vector512.Load(x + i), a0);
        Finish<TRow>((a0 + a1) + (a2 + a3), w, x, i, k, y, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish<TRow>(Vector512<float> acc, byte* w, float* x, int from, int k, float* y, bool accumulate) where TRow : struct, IFloatRow
    {
        float sum = Vector512.Sum(acc);
        for (int i = from; i < k; i++) sum += TRow.Load1(w, i) * x[i];
        *y = accumulate ? *y + sum : sum;
    }

    /// <summary>Runs <paramref name="numTokens"/> (any count) activation rows against R weight rows, four tokens at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Tokens<TRow, TRows>(byte* w, nint wStride, float* x, nint xStride, int numTokens, int k, float* y, nint yStride, bool accumulate)
        where TRow : struct, IFloatRow where TRows : struct, ICount
    {
        int t = 0;
        for (; t <= numTokens - 4; t += 4)
            Run<TRow, TRows, Four>(w, wStride, x + t * xStride, xStride, k, y + t * yStride, yStride, accumulate);
        switch (numTokens - t)
        {
            case 1: Run<TRow, TRows, One>(w, wStride, x + t * xStride, xStride, k, y + t * yStride, yStride, accumulate); break;
            case 2: Run<TRow, TRows, Two>(w, wStride, x + t * xStride, xStride, k, y + t * yStride, yStride, accumulate); break;
            case 3: Run<TRow, TRows, Three>(w, wStride, x + t * xStride, xStride, k, y + t * yStride, yStride, accumulate); break;
        }
    }
}
