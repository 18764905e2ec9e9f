using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>Reads one 32-weight block of a GGUF-quantized row as 32 signed bytes and its f16 scale.</summary>
internal unsafe interface IQuantizedRow
{
    /// <summary>Bytes per block (34 for q8_0, 18 for q4_0).</summary>
    static abstract int BlockSizeInBytes { get; }
    /// <summary>The 32 weights of the block at <paramref name="block"/> as signed bytes, in element order.</summary>
    static abstract Vector256<sbyte> LoadWeights(byte* block);
}

internal unsafe struct Q8_0Row : IQuantizedRow
{
    public static int BlockSizeInBytes => 34;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> LoadWeights(byte* block) => Vector256.Load((sbyte*)(block + 2));
}

internal unsafe struct Q4_0Row : IQuantizedRow
{
    public static int BlockSizeInBytes => 18;
    // Element j is the low nibble of byte j and element j + 16 its high nibble; both offset by 8.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> LoadWeights(byte* block)
    {
        var packed = Vector128.Load(block + 2);
        var low = packed & Vector128.Create((byte)0x0F);
        var high = Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F);
        return (Vector256.Create(low, high) - Vector256.Create((byte)8)).AsSByte();
    }
}

/// <summary>
/// The integer microkernel of q8_0/q4_0 projections read in the stored GGUF layout (matrices that were not packed,
/// <see cref="PackedQuantizedLayout"/>; e.g. on AVX2 CPUs without AVX-VNNI): R weight rows × T activation rows quantized to int8
/// blocks of 32 (<see cref="ActivationQuantizer"/>). Per block and pair: the signs of x moved onto w
/// (<c>sign(w, x)</c>) so that <c>|x|</c> is the unsigned operand of vpdpbusd (AVX-VNNI) or of maddubs + madd (AVX2;
/// |x| ≤ 127 and |w| ≤ 128 keep the i16 pair sums below saturation), eight i32 lane sums converted to f32 and
/// accumulated with the product of the two block scales. One horizontal sum per output at the end.
/// </summary>
internal static unsafe class QuantizedTile
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot(Vector256<byte> absX, Vector256<sbyte> w, Vector256<sbyte> x, Vector256<float> scale, Vector256<float> acc)
    {
        var signedW = Avx2.Sign(w, x);
        Vector256<int> sums = CpuFeatures.UseVnni
            ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, absX, signedW)
            : Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(absX, signedW), Vector256.Create((short)1));
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scale, acc);
    }

    /// <param name="w">First weight row.</param>
    /// <param name="wStride">Bytes between weight rows.</param>
    /// <param name="qx">First quantized activation row (k signed bytes).</param>
    /// <param name="dx">Block scales of the first activation row (k / 32 floats).</param>
    /// <param name="xStride">Bytes between consecutive quantized rows (k).</param>
    /// <param name="scaleStride">Floats between consecutive rows' block scales.</param>
    /// <param name="numBlocks">Blocks per row (k / 32).</param>
    /// <param name="y">Output of (row 0, token 0); token t, row r at <c>y[t * yStride + r]</c>.</param>
    /// <param name="yStride">Floats between output rows.</param>
    /// <param name="accumulate">Add to y instead of overwriting it.</param>
    public static void Run<TRow, TRows, TTokens>(byte* w, nint wStride, sbyte* qx, float* dx, nint xStride, nint scaleStride, int numBlocks, float* y, nint yStride, bool accumulate)
        where TRow : struct, IQuantizedRow where TRows : struct, ICount where TTokens : struct, ICount
    {
        var a00 = Vector256<float>.Zero; var a01 = Vector256<float>.Zero; var a02 = Vector256<float>.Zero; var a03 = Vector256<float>.Zero;
        var a10 = Vector256<float>.Zero; var a11 = Vector256<float>.Zero; var a12 = Vector256<float>.Zero; var a13 = Vector256<float>.Zero;
        var a20 = Vector256<float>.Zero; var a21 = Vector256<float>.Zero; var a22 = Vector256<float>.Zero; var a23 = Vector256<float>.Zero;
        var a30 = Vector256<float>.Zero; var a31 = Vector256<float>.Zero; var a32 = Vector256<float>.Zero; var a33 = Vector256<float>.Zero;
        int r = TRows.Count, t = TTokens.Count;
        int blockBytes = TRow.BlockSizeInBytes;
        float* table = HalfBits.HalfToSingleTable;
        byte* w0 = w, w1 = w + wStride, w2 = w + 2 * wStride, w3 = w + 3 * wStride;
        for (int b = 0; b < numBlocks; b++, w0 += blockBytes, w1 += blockBytes, w2 += blockBytes, w3 += blockBytes)
        {
            var v0 = TRow.LoadWeights(w0);
            var v1 = r > 1 ? TRow.LoadWeights(w1) : default;
            var v2 = r > 2 ? TRow.LoadWeights(w2) : default;
            var v3 = r > 3 ? TRow.LoadWeights(w3) : default;
            var d0 = Vector256.Create(table[*(ushort*)w0]);
            var d1 = r > 1 ? Vector256.Create(table[*(ushort*)w1]) : default;
            var d2 = r > 2 ? Vector256.Create(table[*(ushort*)w2]) : default;
            var d3 = r > 3 ? Vector256.Create(table[*(ushort*)w3]) : default;
            // Decode reads 4 short rows side by side, too much arithmetic per byte for the out-of-order window to
            // keep enough misses in flight: fetch the same place of the next 4-row group (the next rows in memory).
            if (t < 4)
            {
                Sse.Prefetch0(w0 + 4 * wStride);
                if (r > 1) Sse.Prefetch0(w1 + 4 * wStride);
                if (r > 2) Sse.Prefetch0(w2 + 4 * wStride);
                if (r > 3) Sse.Prefetch0(w3 + 4 * wStride);
            }

            var x = Vector256.Load(qx + b * 32);
            var ax = Avx2.Abs(x);
            var dxv = Vector256.Create(dx[b]);
            a00 = BlockDot(ax, v0, x, d0 * dxv, a00);
            if (r > 1) a10 = BlockDot(ax, v1, x, d1 * dxv, a10);
            if (r > 2) a20 = BlockDot(ax, v2, x, d2 * dxv, a20);
            if (r > 3) a30 = BlockDot(ax, v3, x, d3 * dxv, a30);
            if (t > 1)
            {
                x = Vector256.Load(qx + xStride + b * 32);
                ax = Avx2.Abs(x);
                dxv = Vector256.Create(dx[scaleStride + b]);
                a01 = BlockDot(ax, v0, x, d0 * dxv, a01);
                if (r > 1) a11 = BlockDot(ax, v1, x, d1 * dxv, a11);
                if (r > 2) a21 = BlockDot(ax, v2, x, d2 * dxv, a21);
                if (r > 3) a31 = BlockDot(ax, v3, x, d3 * dxv, a31);
            }
            if (t > 2)
            {
                x = Vector256.Load(qx + 2 * xStride + b * 32);
                ax = Avx2.Abs(x);
                dxv = Vector256.Create(dx[2 * scaleStride + b]);
                a02 = BlockDot(ax, v0, x, d0 * dxv, a02);
                if (r > 1) a12 = BlockDot(ax, v1, x, d1 * dxv, a12);
                if (r > 2) a22 = BlockDot(ax, v2, x, d2 * dxv, a22);
                if (r > 3) a32 = BlockDot(ax, v3, x, d3 * dxv, a32);
            }
            if (t > 3)
            {
                x = Vector256.Load(qx + 3 * xStride + b * 32);
                ax = Avx2.Abs(x);
                dxv = Vector256.Create(dx[3 * scaleStride + b]);
                a03 = BlockDot(ax, v0, x, d0 * dxv, a03);
                if (r > 1) a13 = BlockDot(ax, v1, x, d1 * dxv, a13);
                if (r > 2) a23 = BlockDot(ax, v2, x, d2 * dxv, a23);
                if (r > 3) a33 = BlockDot(ax, v3, x, d3 * dxv, a33);
            }
        }
        Store(a00, y, accumulate);
        if (r > 1) Store(a10, y + 1, accumulate);
        if (r > 2) Store(a20, y + 2, accumulate);
        if (r > 3) Store(a30, y + 3, accumulate);
        if (t > 1)
        {
            float* yt = y + yStride;
            Store(a01, yt, accumulate);
            if (r > 1) Store(a11, yt + 1, accumulate);
            if (r > 2) Store(a21, yt + 2, accumulate);
            if (r > 3) Store(a31, yt + 3, accumulate);
        }
        if (t > 2)
        {
            float* yt = y + 2 * yStride;
            Store(a02, yt, accumulate);
            if (r > 1) Store(a12, yt + 1, accumulate);
            if (r > 2) Store(a22, yt + 2, accumulate);
            if (r > 3) Store(a32, yt + 3, accumulate);
        }
        if (t > 3)
        {
            float* yt = y + 3 * yStride;
            Store(a03, yt, accumulate);
            if (r > 1) Store(a13, yt + 1, accumulate);
            if (r > 2) Store(a23, yt + 2, accumulate);
            if (r > 3) Store(a33, yt + 3, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> acc, float* y, bool accumulate)
    {
        float sum = Vector256.Sum(acc);
        *y = accumulate ? *y + sum : sum;
    }

    /// <summary>Runs <paramref name="numTokens"/> quantized activation rows against R weight rows, four tokens at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Tokens<TRow, TRows>(byte* w, nint wStride, sbyte* qx, float* dx, nint xStride, nint scaleStride, int numBlocks, int numTokens, float* y, nint yStride, bool accumulate)
        where TRow : struct, IQuantizedRow where TRows : struct, ICount
    {
        int t = 0;
        for (; t <= numTokens - 4; t += 4)
            Run<TRow, TRows, Four>(w, wStride, qx + t * xStride, dx + t * scaleStride, xStride, scaleStride, numBlocks, y + t * yStride, yStride, accumulate);
        switch (numTokens - t)
        {
            case 1: Run<TRow, TRows, One>(w, wStride, qx + t * xStride, dx + t * scaleStride, xStride, scaleStride, numBlocks, y + t * yStride, yStride, accumulate); break;
            case 2: Run<TRow, TRows, Two>(w, wStride, qx + t * xStride, dx + t * scaleStride, xStride, scaleStride, numBlocks, y + t * yStride, yStride, accumulate); break;
            case 3: Run<TRow, TRows, Three>(w, wStride, qx + t * xStride, dx + t * scaleStride, xStride, scaleStride, numBlocks, y + t * yStride, yStride, accumulate); break;
        }
    }
}

/// <summary>
/// Quantizes activation rows to int8 blocks of 32 the way llama.cpp quantizes q8_0 activations: per block
/// <c>d = max|x| / 127</c>, <c>q = round(x / d)</c> (nearest even), so <c>|q| ≤ 127</c> and each element is off by at
/// most <c>d / 2</c>.
/// </summary>
internal static unsafe class ActivationQuantizer
{
    /// <summary>Quantizes <paramref name="numTokens"/> rows of <paramref name="k"/> floats (k a multiple of 32).</summary>
    /// <param name="x"><c>[numTokens, k]</c> activations.</param>
    /// <param name="numTokens">Rows.</param>
    /// <param name="k">Row width, a multiple of 32.</param>
    /// <param name="qx"><c>[numTokens, k]</c> quantized values.</param>
    /// <param name="dx"><c>[numTokens, k / 32]</c> block scales.</param>
    /// <param name="start">Null, or <c>[numTokens, k / 32]</c> receiving <c>-weightOffset · Σq</c> per block: the
    /// start value of a block's integer sum against weights stored with <paramref name="weightOffset"/> added
    /// (<see cref="PackedQuantizedLayout"/>).</param>
    /// <param name="weightOffset">The packed weights' offset (128 for q8_0, 8 for q4_0).</param>
    public static void Quantize(float* x, int numTokens, int k, sbyte* qx, float* dx, int* start = null, int weightOffset = 0)
    {
        int numBlocks = k / 32;
        var permutation = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);
        for (int t = 0; t < numTokens; t++)
        {
            float* row = x + (nint)t * k;
            sbyte* qRow = qx + (nint)t * k;
            float* dRow = dx + (nint)t * numBlocks;
            for (int b = 0; b < numBlocks; b++)
            {
                float* p = row + b * 32;
                var v0 = Vector256.Load(p); var v1 = Vector256.Load(p + 8); var v2 = Vector256.Load(p + 16); var v3 = Vector256.Load(p + 24);
                var m = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
                var m4 = Vector128.Max(m.GetLower(), m.GetUpper());
                var m2 = Vector128.Max(m4, Sse.MoveHighToLow(m4, m4));
                float amax = MathF.Max(m2.ToScalar(), m2.GetElement(1));
                float d = amax / 127f;
                var id = Vector256.Create(amax != 0 ? 127f / amax : 0f);
                dRow[b] = d;
                var q0 = Avx.ConvertToVector256Int32(v0 * id); var q1 = Avx.ConvertToVector256Int32(v1 * id);
                var q2 = Avx.ConvertToVector256Int32(v2 * id); var q3 = Avx.ConvertToVector256Int32(v3 * id);
                // packs work within 128-bit lanes; the permutation puts the 32 bytes back in element order.
                var packed = Avx2.PackSignedSaturate(Avx2.PackSignedSaturate(q0, q1), Avx2.PackSignedSaturate(q2, q3));
                Avx2.PermuteVar8x32(packed.AsInt32(), permutation).AsSByte().Store(qRow + b * 32);
                if (start is not null) start[(nint)t * numBlocks + b] = -weightOffset * Vector256.Sum((q0 + q1) + (q2 + q3));
            }
        }
    }
}
