using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>Which packed weight type a <see cref="PackedQuantizedTile"/> instance reads.</summary>
internal interface IPackedWeights
{
    /// <summary>True for q4_0 (two k-groups per stored byte vector), false for q8_0.</summary>
    static abstract bool IsNibbles { get; }
}

internal struct PackedQ8_0 : IPackedWeights { public static bool IsNibbles => false; }
internal struct PackedQ4_0 : IPackedWeights { public static bool IsNibbles => true; }

/// <summary>
/// The q8_0/q4_0 microkernel over <see cref="PackedQuantizedLayout"/>: one group of 8 weight rows × 1–4 tokens
/// whose activations are int8 blocks (<see cref="ActivationQuantizer"/>, with the weights' offset folded into a
/// per-block start value). Per 32-weight block the 8 weight vectors are loaded (and for q4_0 split into nibbles)
/// once and reused for every token; per token, 8 vpdpbusd with 4 broadcast activation bytes each give the 8 rows'
/// exact integer dot products in the 8 lanes, which one FMA scales by (8 weight scales × the token's scale) into
/// an f32 accumulator. No horizontal sums: the 8 lanes are 8 consecutive outputs, stored as one vector.
/// </summary>
/// <remarks>
/// About 4.5 instructions per 256 multiply-adds per token plus ~20 per block for loads and the f16 scales, against
/// ~8 per 32 for the GGUF-layout <see cref="QuantizedTile"/>: decode becomes memory-bound, and prefill is bound by
/// vpdpbusd throughput (32 MACs per instruction against 16 per f32 FMA of Vector512).
/// </remarks>
internal static unsafe class PackedQuantizedTile
{
    /// <param name="w">The group's first block.</param>
    /// <param name="numBlocks">Blocks per row (k / 32).</param>
    /// <param name="qx">First token's quantized activations (k signed bytes); token t at <c>qx + t * k</c>.</param>
    /// <param name="dx">First token's block scales; token t at <c>dx + t * numBlocks</c>.</param>
    /// <param name="start">First token's per-block integer start values (−offset·Σa); token t at <c>start + t * numBlocks</c>.</param>
    /// <param name="k">Input width (bytes between tokens of <paramref name="qx"/>).</param>
    /// <param name="y">Output of (row 0 of the group, token 0); token t at <c>y + t * yStride</c>.</param>
    /// <param name="yStride">Floats between tokens' outputs.</param>
    /// <param name="numRows">Real rows in the group (1–8; the rest are padding and not stored).</param>
    /// <param name="accumulate">Add to y instead of overwriting it.</param>
    /// <param name="scales">With more than one token: the group's scales as f32, 8 per block (<see cref="WidenScales"/>),
    /// converted once for all the group's token tiles; with one token they are converted here.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Run<TWeights, TTokens>(byte* w, int numBlocks, sbyte* qx, float* dx, int* start, nint k, float* y, nint yStride, int numRows, bool accumulate, float* scales)
        where TWeights : struct, IPackedWeights where TTokens : struct, ICount
    {
        int t = TTokens.Count;
        int blockSize = TWeights.IsNibbles ? PackedQuantizedLayout.ScalesSizeInBytes + 128 : PackedQuantizedLayout.ScalesSizeInBytes + 256;
        var acc0 = Vector256<float>.Zero; var acc1 = Vector256<float>.Zero; var acc2 = Vector256<float>.Zero; var acc3 = Vector256<float>.Zero;
        int* x0 = (int*)qx, x1 = (int*)(qx + k), x2 = (int*)(qx + 2 * k), x3 = (int*)(qx + 3 * k);
        nint nb = numBlocks;
        var low = Vector256.Create((byte)0x0F);
        var high = Vector256.Create((byte)0xF0);
        for (int b = 0; b < numBlocks; b++, w += blockSize, x0 += 8, x1 += 8, x2 += 8, x3 += 8)
        {
            var blockScales = t == 1 ? HalfBits.FiniteHalfToSingle(Vector128.Load((short*)w)) : Vector256.Load(scales + 8 * b);
            Vector256<byte> w0, w1, w2, w3, w4, w5, w6, w7;
            byte* q = w + PackedQuantizedLayout.ScalesSizeInBytes;
            if (TWeights.IsNibbles)
            {
                var p0 = Vector256.Load(q); var p1 = Vector256.Load(q + 32); var p2 = Vector256.Load(q + 64); var p3 = Vector256.Load(q + 96);
                w0 = p0 & low; w1 = p1 & low; w2 = p2 & low; w3 = p3 & low;
                if (t == 1)
                {
                    // One token: the high nibbles stay where they are (16·(w + 8), masked); TokenNibbles sums them in a
                    // chain of their own and divides that sum by 16 once per block, instead of four shifts per block.
                    w4 = p0 & high; w5 = p1 & high; w6 = p2 & high; w7 = p3 & high;
                }
                else
                {
                    // More tokens: one shift per vector serves every token.
                    w4 = Vector256.ShiftRightLogical(p0.AsUInt16(), 4).AsByte() & low;
                    w5 = Vector256.ShiftRightLogical(p1.AsUInt16(), 4).AsByte() & low;
                    w6 = Vector256.ShiftRightLogical(p2.AsUInt16(), 4).AsByte() & low;
                    w7 = Vector256.ShiftRightLogical(p3.AsUInt16(), 4).AsByte() & low;
                }
            }
            else
            {
                w0 = Vector256.Load(q); w1 = Vector256.Load(q + 32); w2 = Vector256.Load(q + 64); w3 = Vector256.Load(q + 96);
                w4 = Vector256.Load(q + 128); w5 = Vector256.Load(q + 160); w6 = Vector256.Load(q + 192); w7 = Vector256.Load(q + 224);
            }
            acc0 = t == 1 && TWeights.IsNibbles
                ? TokenNibbles(x0, start + b, dx + b, blockScales, w0, w1, w2, w3, w4, w5, w6, w7, acc0)
                : Token(x0, start + b, dx + b, blockScales, w0, w1, w2, w3, w4, w5, w6, w7, acc0, twoChains: t == 1);
            if (t > 1) acc1 = Token(x1, start + nb + b, dx + nb + b, blockScales, w0, w1, w2, w3, w4, w5, w6, w7, acc1, twoChains: false);
            if (t > 2) acc2 = Token(x2, start + 2 * nb + b, dx + 2 * nb + b, blockScales, w0, w1, w2, w3, w4, w5, w6, w7, acc2, twoChains: false);
            if (t > 3) acc3 = Token(x3, start + 3 * nb + b, dx + 3 * nb + b, blockScales, w0, w1, w2, w3, w4, w5, w6, w7, acc3, twoChains: false);
        }
        Store(acc0, y, numRows, accumulate);
        if (t > 1) Store(acc1, y + yStride, numRows, accumulate);
        if (t > 2) Store(acc2, y + 2 * yStride, numRows, accumulate);
        if (t > 3) Store(acc3, y + 3 * yStride, numRows, accumulate);
    }

    /// <summary>
    /// The prefill tile: two adjacent row groups (16 rows) × 4 tokens. Each broadcast activation k-group feeds two
    /// vpdpbusd (one per group) and the 8 integer sums are independent chains, so per 32-weight block it is
    /// 64 vpdpbusd against 32 broadcasts and 16 weight loads from L1.
    /// Parameters as for <see cref="Run"/>, except: <c>w</c> is the first group's first block, the second group
    /// following it <c>groupBytes</c> later; <c>scales</c> holds both groups' f32 scales, the first group's then the
    /// second's; <c>numRows</c> counts the real rows of the second group (the first is full).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RunPair<TWeights>(byte* w, nint groupBytes, int numBlocks, sbyte* qx, float* dx, int* start, nint k, float* y, nint yStride, int numRows, bool accumulate, float* scales)
        where TWeights : struct, IPackedWeights
    {
        int blockSize = TWeights.IsNibbles ? PackedQuantizedLayout.ScalesSizeInBytes + 128 : PackedQuantizedLayout.ScalesSizeInBytes + 256;
        var a00 = Vector256<float>.Zero; var a01 = Vector256<float>.Zero; var a02 = Vector256<float>.Zero; var a03 = Vector256<float>.Zero;
        var a10 = Vector256<float>.Zero; var a11 = Vector256<float>.Zero; var a12 = Vector256<float>.Zero; var a13 = Vector256<float>.Zero;
        int* x0 = (int*)qx, x1 = (int*)(qx + k), x2 = (int*)(qx + 2 * k), x3 = (int*)(qx + 3 * k);
        nint nb = numBlocks;
        float* scales1 = scales + 8 * nb;
        var low = Vector256.Create((byte)0x0F);
        for (int b = 0; b < numBlocks; b++, w += blockSize, x0 += 8, x1 += 8, x2 += 8, x3 += 8)
        {
            // s{g}{t}: group g, token t; both groups of a token start from the token's correction.
            var s00 = Avx2.BroadcastScalarToVector256(start + b); var s10 = s00;
            var s01 = Avx2.BroadcastScalarToVector256(start + nb + b); var s11 = s01;
            var s02 = Avx2.BroadcastScalarToVector256(start + 2 * nb + b); var s12 = s02;
            var s03 = Avx2.BroadcastScalarToVector256(start + 3 * nb + b); var s13 = s03;
            byte* q0 = w + PackedQuantizedLayout.ScalesSizeInBytes, q1 = q0 + groupBytes;
            if (TWeights.IsNibbles)
            {
                byte* end = q0 + 128;
                for (nint j = 0; q0 < end; j++, q0 += 32, q1 += 32)
                {
                    var p0 = Vector256.Load(q0); var p1 = Vector256.Load(q1);
                    var u0 = p0 & low; var u1 = p1 & low;
                    var bx = Vector256.Create(x0[j]).AsSByte(); s00 = AvxVnni.MultiplyWideningAndAdd(s00, u0, bx); s10 = AvxVnni.MultiplyWideningAndAdd(s10, u1, bx);
                    bx = Vector256.Create(x1[j]).AsSByte(); s01 = AvxVnni.MultiplyWideningAndAdd(s01, u0, bx); s11 = AvxVnni.MultiplyWideningAndAdd(s11, u1, bx);
                    bx = Vector256.Create(x2[j]).AsSByte(); s02 = AvxVnni.MultiplyWideningAndAdd(s02, u0, bx); s12 = AvxVnni.MultiplyWideningAndAdd(s12, u1, bx);
                    bx = Vector256.Create(x3[j]).AsSByte(); s03 = AvxVnni.MultiplyWideningAndAdd(s03, u0, bx); s13 = AvxVnni.MultiplyWideningAndAdd(s13, u1, bx);
                    u0 = Vector256.ShiftRightLogical(p0.AsUInt16(), 4).AsByte() & low; u1 = Vector256.ShiftRightLogical(p1.AsUInt16(), 4).AsByte() & low;
                    bx = Vector256.Create(x0[j + 4]).AsSByte(); s00 = AvxVnni.MultiplyWideningAndAdd(s00, u0, bx); s10 = AvxVnni.MultiplyWideningAndAdd(s10, u1, bx);
                    bx = Vector256.Create(x1[j + 4]).AsSByte(); s01 = AvxVnni.MultiplyWideningAndAdd(s01, u0, bx); s11 = AvxVnni.MultiplyWideningAndAdd(s11, u1, bx);
                    bx = Vector256.Create(x2[j + 4]).AsSByte(); s02 = AvxVnni.MultiplyWideningAndAdd(s02, u0, bx); s12 = AvxVnni.MultiplyWideningAndAdd(s12, u1, bx);
                    bx = Vector256.Create(x3[j + 4]).AsSByte(); s03 = AvxVnni.MultiplyWideningAndAdd(s03, u0, bx); s13 = AvxVnni.MultiplyWideningAndAdd(s13, u1, bx);
                }
            }
            else
            {
                // Two k-groups per iteration, pointers bumped: the loop's own instructions stay a small share.
                byte* end = q0 + 256;
                for (nint j = 0; q0 < end; j += 2, q0 += 64, q1 += 64)
                {
                    var u0 = Vector256.Load(q0); var u1 = Vector256.Load(q1);
                    var bx = Vector256.Create(x0[j]).AsSByte(); s00 = AvxVnni.MultiplyWideningAndAdd(s00, u0, bx); s10 = AvxVnni.MultiplyWideningAndAdd(s10, u1, bx);
                    bx = Vector256.Create(x1[j]).AsSByte(); s01 = AvxVnni.MultiplyWideningAndAdd(s01, u0, bx); s11 = AvxVnni.MultiplyWideningAndAdd(s11, u1, bx);
                    bx = Vector256.Create(x2[j]).AsSByte(); s02 = AvxVnni.MultiplyWideningAndAdd(s02, u0, bx); s12 = AvxVnni.MultiplyWideningAndAdd(s12, u1, bx);
                    bx = Vector256.Create(x3[j]).AsSByte(); s03 = AvxVnni.MultiplyWideningAndAdd(s03, u0, bx); s13 = AvxVnni.MultiplyWideningAndAdd(s13, u1, bx);
                    u0 = Vector256.Load(q0 + 32); u1 = Vector256.Load(q1 + 32);
                    bx = Vector256.Create(x0[j + 1]).AsSByte(); s00 = AvxVnni.MultiplyWideningAndAdd(s00, u0, bx); s10 = AvxVnni.MultiplyWideningAndAdd(s10, u1, bx);
                    bx = Vector256.Create(x1[j + 1]).AsSByte(); s01 = AvxVnni.MultiplyWideningAndAdd(s01, u0, bx); s11 = AvxVnni.MultiplyWideningAndAdd(s11, u1, bx);
                    bx = Vector256.Create(x2[j + 1]).AsSByte(); s02 = AvxVnni.MultiplyWideningAndAdd(s02, u0, bx); s12 = AvxVnni.MultiplyWideningAndAdd(s12, u1, bx);
                    bx = Vector256.Create(x3[j + 1]).AsSByte(); s03 = AvxVnni.MultiplyWideningAndAdd(s03, u0, bx); s13 = AvxVnni.MultiplyWideningAndAdd(s13, u1, bx);
                }
            }
            var c0 = Vector256.Load(scales + 8 * b); var c1 = Vector256.Load(scales1 + 8 * b);
            var d = Avx.BroadcastScalarToVector256(dx + b);
            a00 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s00), c0 * d, a00); a10 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s10), c1 * d, a10);
            d = Avx.BroadcastScalarToVector256(dx + nb + b);
            a01 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s01), c0 * d, a01); a11 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s11), c1 * d, a11);
            d = Avx.BroadcastScalarToVector256(dx + 2 * nb + b);
            a02 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s02), c0 * d, a02); a12 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s12), c1 * d, a12);
            d = Avx.BroadcastScalarToVector256(dx + 3 * nb + b);
            a03 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s03), c0 * d, a03); a13 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s13), c1 * d, a13);
        }
        Store(a00, y, PackedQuantizedLayout.RowsPerGroup, accumulate); Store(a10, y + 8, numRows, accumulate);
        Store(a01, y + yStride, PackedQuantizedLayout.RowsPerGroup, accumulate); Store(a11, y + yStride + 8, numRows, accumulate);
        Store(a02, y + 2 * yStride, PackedQuantizedLayout.RowsPerGroup, accumulate); Store(a12, y + 2 * yStride + 8, numRows, accumulate);
        Store(a03, y + 3 * yStride, PackedQuantizedLayout.RowsPerGroup, accumulate); Store(a13, y + 3 * yStride + 8, numRows, accumulate);
    }

    // One token's block: the 8 rows' integer sums from the start value, then scaled into the accumulator. With
    // one token the 8 dependent vpdpbusd would be one latency chain, so they are split in two.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Token(int* x, int* start, float* dx, Vector256<float> scales,
        Vector256<byte> w0, Vector256<byte> w1, Vector256<byte> w2, Vector256<byte> w3,
        Vector256<byte> w4, Vector256<byte> w5, Vector256<byte> w6, Vector256<byte> w7, Vector256<float> acc, bool twoChains)
    {
        var s = AvxVnni.MultiplyWideningAndAdd(Avx2.BroadcastScalarToVector256(start), w0, Vector256.Create(x[0]).AsSByte());
        Vector256<int> sums;
        if (twoChains)
        {
            var s2 = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, w1, Vector256.Create(x[1]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w2, Vector256.Create(x[2]).AsSByte());
            s2 = AvxVnni.MultiplyWideningAndAdd(s2, w3, Vector256.Create(x[3]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w4, Vector256.Create(x[4]).AsSByte());
            s2 = AvxVnni.MultiplyWideningAndAdd(s2, w5, Vector256.Create(x[5]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w6, Vector256.Create(x[6]).AsSByte());
            s2 = AvxVnni.MultiplyWideningAndAdd(s2, w7, Vector256.Create(x[7]).AsSByte());
            sums = s + s2;
        }
        else
        {
            s = AvxVnni.MultiplyWideningAndAdd(s, w1, Vector256.Create(x[1]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w2, Vector256.Create(x[2]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w3, Vector256.Create(x[3]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w4, Vector256.Create(x[4]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w5, Vector256.Create(x[5]).AsSByte());
            s = AvxVnni.MultiplyWideningAndAdd(s, w6, Vector256.Create(x[6]).AsSByte());
            sums = AvxVnni.MultiplyWideningAndAdd(s, w7, Vector256.Create(x[7]).AsSByte());
        }
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scales * Avx.BroadcastScalarToVector256(dx), acc);
    }

    // One token's q4_0 block with the high nibbles unshifted: k-groups 0–3 (low nibbles, w0–w3) sum from the start
    // value, k-groups 4–7 (w4–w7 = 16·(w + 8)) in a second chain whose total is exactly 16 times theirs, so the
    // arithmetic shift by 4 divides it back exactly (|sum| ≤ 16 · 240 · 127 fits an int). The two chains also split
    // the 8 dependent vpdpbusd of the block in two, as Token's twoChains does.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> TokenNibbles(int* x, int* start, float* dx, Vector256<float> scales,
        Vector256<byte> w0, Vector256<byte> w1, Vector256<byte> w2, Vector256<byte> w3,
        Vector256<byte> w4, Vector256<byte> w5, Vector256<byte> w6, Vector256<byte> w7, Vector256<float> acc)
    {
        var s = AvxVnni.MultiplyWideningAndAdd(Avx2.BroadcastScalarToVector256(start), w0, Vector256.Create(x[0]).AsSByte());
        var s16 = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, w4, Vector256.Create(x[4]).AsSByte());
        s = AvxVnni.MultiplyWideningAndAdd(s, w1, Vector256.Create(x[1]).AsSByte());
        s16 = AvxVnni.MultiplyWideningAndAdd(s16, w5, Vector256.Create(x[5]).AsSByte());
        s = AvxVnni.MultiplyWideningAndAdd(s, w2, Vector256.Create(x[2]).AsSByte());
        s16 = AvxVnni.MultiplyWideningAndAdd(s16, w6, Vector256.Create(x[6]).AsSByte());
        s = AvxVnni.MultiplyWideningAndAdd(s, w3, Vector256.Create(x[3]).AsSByte());
        s16 = AvxVnni.MultiplyWideningAndAdd(s16, w7, Vector256.Create(x[7]).AsSByte());
        var sums = s + Vector256.ShiftRightArithmetic(s16, 4);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), scales * Avx.BroadcastScalarToVector256(dx), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> acc, float* y, int numRows, bool accumulate)
    {
        if (numRows == PackedQuantizedLayout.RowsPerGroup)
        {
            (accumulate ? acc + Vector256.Load(y) : acc).Store(y);
            return;
        }
        for (int r = 0; r < numRows; r++) y[r] = accumulate ? y[r] + acc.GetElement(r) : acc.GetElement(r);
    }

    /// <summary>Runs <paramref name="numTokens"/> tokens against one row group, four tokens at a time.</summary>
    public static void Tokens<TWeights>(byte* w, int numBlocks, sbyte* qx, float* dx, int* start, int k, int numTokens, float* y, nint yStride, int numRows, bool accumulate)
        where TWeights : struct, IPackedWeights
    {
        if (numTokens == 1)
        {
            Run<TWeights, One>(w, numBlocks, qx, dx, start, k, y, yStride, numRows, accumulate, null);
            return;
        }
        float* scales = Scratch.WeightRows(numBlocks * PackedQuantizedLayout.RowsPerGroup);
        WidenScales<TWeights>(w, numBlocks, scales);
        int t = 0;
        for (; t <= numTokens - 4; t += 4)
            Run<TWeights, Four>(w, numBlocks, qx + (nint)t * k, dx + (nint)t * numBlocks, start + (nint)t * numBlocks, k, y + t * yStride, yStride, numRows, accumulate, scales);
        nint rest = t;
        switch (numTokens - t)
        {
            case 1: Run<TWeights, One>(w, numBlocks, qx + rest * k, dx + rest * numBlocks, start + rest * numBlocks, k, y + rest * yStride, yStride, numRows, accumulate, null); break;
            case 2: Run<TWeights, Two>(w, numBlocks, qx + rest * k, dx + rest * numBlocks, start + rest * numBlocks, k, y + rest * yStride, yStride, numRows, accumulate, scales); break;
            case 3: Run<TWeights, Three>(w, numBlocks, qx + rest * k, dx + rest * numBlocks, start + rest * numBlocks, k, y + rest * yStride, yStride, numRows, accumulate, scales); break;
        }
    }

    /// <summary>
    /// Runs <paramref name="numTokens"/> (≥ 4) tokens against two adjacent row groups (the first full, the second
    /// with <paramref name="numRows"/> rows): 16×4 tiles, the 1–3 remaining tokens group by group.
    /// </summary>
    public static void TokensPair<TWeights>(byte* w, nint groupBytes, int numBlocks, sbyte* qx, float* dx, int* start, int k, int numTokens, float* y, nint yStride, int numRows, bool accumulate)
        where TWeights : struct, IPackedWeights
    {
        float* scales = Scratch.WeightRows(2 * numBlocks * PackedQuantizedLayout.RowsPerGroup);
        WidenScales<TWeights>(w, numBlocks, scales);
        WidenScales<TWeights>(w + groupBytes, numBlocks, scales + numBlocks * PackedQuantizedLayout.RowsPerGroup);
        int t = 0;
        for (; t <= numTokens - 4; t += 4)
            RunPair<TWeights>(w, groupBytes, numBlocks, qx + (nint)t * k, dx + (nint)t * numBlocks, start + (nint)t * numBlocks, k, y + t * yStride, yStride, numRows, accumulate, scales);
        if (t < numTokens)
        {
            nint rest = t;
            int numRest = numTokens - t;
            TokensRest<TWeights>(w, numBlocks, qx + rest * k, dx + rest * numBlocks, start + rest * numBlocks, k, numRest, y + rest * yStride, yStride, PackedQuantizedLayout.RowsPerGroup, accumulate, scales);
            TokensRest<TWeights>(w + groupBytes, numBlocks, qx + rest * k, dx + rest * numBlocks, start + rest * numBlocks, k, numRest, y + rest * yStride + 8, yStride, numRows, accumulate, scales + numBlocks * PackedQuantizedLayout.RowsPerGroup);
        }
    }

    private static void TokensRest<TWeights>(byte* w, int numBlocks, sbyte* qx, float* dx, int* start, int k, int numTokens, float* y, nint yStride, int numRows, bool accumulate, float* scales)
        where TWeights : struct, IPackedWeights
    {
        switch (numTokens)
        {
            case 1: Run<TWeights, One>(w, numBlocks, qx, dx, start, k, y, yStride, numRows, accumulate, null); break;
            case 2: Run<TWeights, Two>(w, numBlocks, qx, dx, start, k, y, yStride, numRows, accumulate, scales); break;
            case 3: Run<TWeights, Three>(w, numBlocks, qx, dx, start, k, y, yStride, numRows, accumulate, scales); break;
        }
    }

    /// <summary>The group's f16 scales (finite: checked before packing) as f32, 8 per block, into <paramref name="scales"/>.</summary>
    private static void WidenScales<TWeights>(byte* w, int numBlocks, float* scales) where TWeights : struct, IPackedWeights
    {
        int blockSize = TWeights.IsNibbles ? PackedQuantizedLayout.ScalesSizeInBytes + 128 : PackedQuantizedLayout.ScalesSizeInBytes + 256;
        for (int b = 0; b < numBlocks; b++, w += blockSize) HalfBits.FiniteHalfToSingle(Vector128.Load((short*)w)).Store(scales + 8 * b);
    }

    /// <summary>The weights' offset in the packed layout: 128 for q8_0, 8 for q4_0.</summary>
    public static int WeightOffset(WeightDType dtype) => dtype == WeightDType.Q8_0 ? 128 : 8;
}
