using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// One token against a small f32 matrix (Stories260K: 64 to 512 rows of 64 or 172), sixteen rows at a time (eight on
/// AVX2): sixteen accumulators share each activation vector, and their sixteen horizontal sums come out of one transposing
/// reduction tree (45 shuffles and adds) as one vector of outputs, where a row at a time pays a full horizontal
/// sum and a call per output (a quarter of a Stories260K decode step went there).
/// </summary>
/// <remarks>
/// Only for matrices that run on the calling thread (<see cref="LinearKernel.ParallelThresholdMacs"/>) and rows of
/// at least 16: sixteen concurrent weight streams would defeat the prefetcher on matrices that come from DRAM, and
/// those are large. A row length that is not a multiple of 16 ends with one overlapping load of the row's last 16
/// weights against an activation vector whose already-counted lanes are zero (in bounds, and the zeroed lanes
/// multiply weights of the same row, so a NaN weight still yields NaN).
/// </remarks>
internal static unsafe class SmallDecode
{
    /// <summary>Whether <see cref="Project"/> takes this projection.</summary>
    public static bool Applies(int numTokens, WeightDType dtype, int inDim, long macs) =>
        numTokens == 1 && dtype == WeightDType.F32 && macs < LinearKernel.ParallelThresholdMacs
        && (CpuFeatures.UseVector512 ? inDim >= 16 : CpuFeatures.UseFloatPanels && inDim >= 8);

    /// <summary>
    /// y[r] (+)= w[r, :] · x for rows in whole groups of 16 (AVX-512) or 8 (AVX2); returns the number of rows done (the
    /// rest is the caller's).
    /// </summary>
    public static int Project(float* x, float* w, int inDim, float* y, int outDim, bool accumulate)
    {
        if (!CpuFeatures.UseVector512) return Project8(x, w, inDim, y, outDim, accumulate);
        int k = inDim, full = k & ~15, tail = k - full;
        // The last 16 activations with the lanes the main loop already counted zeroed (all zero when k % 16 == 0).
        var xTail = Vector512.LoadUnsafe(ref *(x + k - 16));
        if (tail != 0)
        {
            var lane = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            xTail = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(lane, Vector512.Create(16 - tail)).AsSingle(), xTail, Vector512<float>.Zero);
        }
        int r = 0;
        for (; r <= outDim - 16; r += 16)
        {
            var sums = Rows16(x, w + (nint)r * k, k, full, tail != 0, xTail);
            float* yr = y + r;
            if (accumulate) sums += Vector512.Load(yr);
            sums.Store(yr);
        }
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static Vector512<float> Rows16(float* x, float* w, nint k, int full, bool hasTail, Vector512<float> xTail)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector512<float> a8 = default, a9 = default, a10 = default, a11 = default, a12 = default, a13 = default, a14 = default, a15 = default;
        for (int i = 0; i < full; i += 16)
        {
            var v = Vector512.Load(x + i);
            float* p = w + i;
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(p), v, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(p + k), v, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 2 * k), v, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 3 * k), v, a3);
            a4 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 4 * k), v, a4);
            a5 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 5 * k), v, a5);
            a6 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 6 * k), v, a6);
            a7 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 7 * k), v, a7);
            a8 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 8 * k), v, a8);
            a9 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 9 * k), v, a9);
            a10 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 10 * k), v, a10);
            a11 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 11 * k), v, a11);
            a12 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 12 * k), v, a12);
            a13 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 13 * k), v, a13);
            a14 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 14 * k), v, a14);
            a15 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 15 * k), v, a15);
        }
        if (hasTail)
        {
            float* p = w + k - 16;
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(p), xTail, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(p + k), xTail, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 2 * k), xTail, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 3 * k), xTail, a3);
            a4 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 4 * k), xTail, a4);
            a5 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 5 * k), xTail, a5);
            a6 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 6 * k), xTail, a6);
            a7 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 7 * k), xTail, a7);
            a8 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 8 * k), xTail, a8);
            a9 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 9 * k), xTail, a9);
            a10 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 10 * k), xTail, a10);
            a11 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 11 * k), xTail, a11);
            a12 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 12 * k), xTail, a12);
            a13 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 13 * k), xTail, a13);
            a14 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 14 * k), xTail, a14);
            a15 = Vector512.FusedMultiplyAdd(Vector512.Load(p + 15 * k), xTail, a15);
        }
        return LaneSums.Of16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15);
    }

    /// <summary>
    /// The AVX2 form of <see cref="Project"/>: eight rows at a time, eight Vector256 accumulators sharing each activation
    /// vector, their eight horizontal sums out of one tree of six horizontal adds and two 128-bit permutes. A row
    /// length that is not a multiple of 8 ends as <see cref="Project"/>'s does, with one overlapping load of the last 8.
    /// </summary>
    private static int Project8(float* x, float* w, int inDim, float* y, int outDim, bool accumulate)
    {
        int k = inDim, full = k & ~7, tail = k - full;
        var xTail = Vector256.LoadUnsafe(ref *(x + k - 8));
        if (tail != 0)
        {
            var lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
            xTail = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(lane, Vector256.Create(8 - tail)).AsSingle(), xTail, Vector256<float>.Zero);
        }
        int r = 0;
        for (; r <= outDim - 8; r += 8)
        {
            var sums = Rows8(x, w + (nint)r * k, k, full, tail != 0, xTail);
            float* yr = y + r;
            if (accumulate) sums += Vector256.Load(yr);
            sums.Store(yr);
        }
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static Vector256<float> Rows8(float* x, float* w, nint k, int full, bool hasTail, Vector256<float> xTail)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int i = 0; i < full; i += 8)
        {
            var v = Vector256.Load(x + i);
            float* p = w + i;
            a0 = Vector256.FusedMultiplyAdd(Vector256.Load(p), v, a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Load(p + k), v, a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 2 * k), v, a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 3 * k), v, a3);
            a4 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 4 * k), v, a4);
            a5 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 5 * k), v, a5);
            a6 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 6 * k), v, a6);
            a7 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 7 * k), v, a7);
        }
        if (hasTail)
        {
            float* p = w + k - 8;
            a0 = Vector256.FusedMultiplyAdd(Vector256.Load(p), xTail, a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Load(p + k), xTail, a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 2 * k), xTail, a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 3 * k), xTail, a3);
            a4 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 4 * k), xTail, a4);
            a5 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 5 * k), xTail, a5);
            a6 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 6 * k), xTail, a6);
            a7 = Vector256.FusedMultiplyAdd(Vector256.Load(p + 7 * k), xTail, a7);
        }
        // Per 128-bit lane: (Σ a0, Σ a1, Σ a2, Σ a3) of that lane's four elements, likewise a4..a7; then the two lanes added.
        var q0123 = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));
        var q4567 = Avx.HorizontalAdd(Avx.HorizontalAdd(a4, a5), Avx.HorizontalAdd(a6, a7));
        return Avx.Permute2x128(q0123, q4567, 0x20) + Avx.Permute2x128(q0123, q4567, 0x31);
    }

}
