using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>
/// Sixteen horizontal sums at once (AVX-512F): the lane sums of 16 vectors as one vector, by a transposing tree of 30
/// shuffles and 15 additions instead of 16 horizontal sums of about ten instructions each. The small matrices' row dot
/// products (<see cref="MatMul.SmallDecode"/>) and decode attention's per-channel outputs
/// (<see cref="AttentionMath.SumEach16"/>) end with it.
/// </summary>
internal static class LaneSums
{
    /// <summary>
    /// Lane i of the result: the sum of <c>a{i}</c>'s 16 lanes. Within each 128-bit quarter the lanes are added in pairs
    /// (j, j + 2), then the pairs; then the quarters as (0 + 1) + (2 + 3). The order is part of the contract (tests hold
    /// it bit for bit).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Of16(
        Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3,
        Vector512<float> a4, Vector512<float> a5, Vector512<float> a6, Vector512<float> a7,
        Vector512<float> a8, Vector512<float> a9, Vector512<float> a10, Vector512<float> a11,
        Vector512<float> a12, Vector512<float> a13, Vector512<float> a14, Vector512<float> a15)
    {
        // Per 128-bit quarter: four vectors' sums of that quarter.
        var g0 = Quad(a0, a1, a2, a3);
        var g1 = Quad(a4, a5, a6, a7);
        var g2 = Quad(a8, a9, a10, a11);
        var g3 = Quad(a12, a13, a14, a15);
        // Quarters (g0.Q0 + Q1, g0.Q2 + Q3, g1.Q0 + Q1, g1.Q2 + Q3) and likewise for g2, g3; then one quarter per group.
        var h01 = Avx512F.Shuffle4x128(g0, g1, 0x88) + Avx512F.Shuffle4x128(g0, g1, 0xDD);
        var h23 = Avx512F.Shuffle4x128(g2, g3, 0x88) + Avx512F.Shuffle4x128(g2, g3, 0xDD);
        return Avx512F.Shuffle4x128(h01, h23, 0x88) + Avx512F.Shuffle4x128(h01, h23, 0xDD);
    }

    /// <summary>In each 128-bit quarter: (Σ quarter of a, Σ of b, Σ of c, Σ of d), each as (l0 + l2) + (l1 + l3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Quad(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var ab = Avx512F.UnpackLow(a, b) + Avx512F.UnpackHigh(a, b);   // (a0+a2, b0+b2, a1+a3, b1+b3)
        var cd = Avx512F.UnpackLow(c, d) + Avx512F.UnpackHigh(c, d);
        return Avx512F.Shuffle(ab, cd, 0x44) + Avx512F.Shuffle(ab, cd, 0xEE);
    }
}
