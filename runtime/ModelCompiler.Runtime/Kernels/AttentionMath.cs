using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using ModelCompiler.Runtime.Kernels.MatMul;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>The softmax steps of attention over a tile of scores: the maximum, and exp(x − max) with its sum.</summary>
internal static unsafe class AttentionMath
{
    /// <summary>Largest of <paramref name="count"/> scores (at least one).</summary>
    public static float Max(float* x, int count)
    {
        int i = 0;
        float max = float.NegativeInfinity;
        if (CpuFeatures.UseVector512 && count >= 16)
        {
            var m = Vector512.Load(x);
            for (i = 16; i <= count - 16; i += 16) m = Vector512.Max(m, Vector512.Load(x + i));
            var m4 = Vector128.Max(Vector128.Max(m.GetLower().GetLower(), m.GetLower().GetUpper()), Vector128.Max(m.GetUpper().GetLower(), m.GetUpper().GetUpper()));
            max = MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
        }
        for (; i < count; i++) max = MathF.Max(max, x[i]);
        return max;
    }

    /// <summary>
    /// <see cref="Max"/> with AVX-512 for a buffer with room for <paramref name="count"/> rounded up to 16: the last
    /// partial vector is read whole and its lanes past <paramref name="count"/> ignored.
    /// </summary>
    public static float MaxPadded(float* x, int count)
    {
        var m = Vector512.Create(float.NegativeInfinity);
        int i = 0;
        for (; i <= count - 16; i += 16) m = Vector512.Max(m, Vector512.Load(x + i));
        if (i < count) m = Vector512.Max(m, Vector512.ConditionalSelect(ValidLanes(count - i), Vector512.Load(x + i), Vector512.Create(float.NegativeInfinity)));
        var m4 = Vector128.Max(Vector128.Max(m.GetLower().GetLower(), m.GetLower().GetUpper()), Vector128.Max(m.GetUpper().GetLower(), m.GetUpper().GetUpper()));
        return MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
    }

    /// <summary>
    /// <see cref="ExpSubtract"/> with AVX-512 for a buffer with room for <paramref name="count"/> rounded up to 16:
    /// the last partial vector is computed whole (lanes past <paramref name="count"/> hold anything afterwards) and
    /// only its valid lanes are summed.
    /// </summary>
    public static float ExpSubtractPadded(float* x, int count, float max)
    {
        var m = Vector512.Create(max);
        var acc = Vector512<float>.Zero;
        int i = 0;
        for (; i <= count - 16; i += 16)
        {
            var e = ExpNonPositive(Vector512.Load(x + i) - m);
            e.Store(x + i);
            acc += e;
        }
        if (i < count)
        {
            var e = ExpNonPositive(Vector512.Load(x + i) - m) & ValidLanes(count - i);
            e.Store(x + i);
            acc += e;
        }
        return Sum(acc);
    }

    /// <summary>
    /// <see cref="MaxPadded"/> of four rows <paramref name="stride"/> floats apart, into <paramref name="max"/>[0..4):
    /// four independent chains, so that short rows (a tile of a narrow head) do not wait on one another's latency.
    /// </summary>
    public static void MaxPadded4(float* x, nint stride, int count, float* max)
    {
        var ninf = Vector512.Create(float.NegativeInfinity);
        Vector512<float> m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
        int i = 0;
        for (; i <= count - 16; i += 16)
        {
            m0 = Vector512.Max(m0, Vector512.Load(x + i));
            m1 = Vector512.Max(m1, Vector512.Load(x + stride + i));
            m2 = Vector512.Max(m2, Vector512.Load(x + 2 * stride + i));
            m3 = Vector512.Max(m3, Vector512.Load(x + 3 * stride + i));
        }
        if (i < count)
        {
            var valid = ValidLanes(count - i);
            m0 = Vector512.Max(m0, Vector512.ConditionalSelect(valid, Vector512.Load(x + i), ninf));
            m1 = Vector512.Max(m1, Vector512.ConditionalSelect(valid, Vector512.Load(x + stride + i), ninf));
            m2 = Vector512.Max(m2, Vector512.ConditionalSelect(valid, Vector512.Load(x + 2 * stride + i), ninf));
            m3 = Vector512.Max(m3, Vector512.ConditionalSelect(valid, Vector512.Load(x + 3 * stride + i), ninf));
        }
        max[0] = HorizontalMax(m0);
        max[1] = HorizontalMax(m1);
        max[2] = HorizontalMax(m2);
        max[3] = HorizontalMax(m3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalMax(Vector512<float> m)
    {
        var m4 = Vector128.Max(Vector128.Max(m.GetLower().GetLower(), m.GetLower().GetUpper()), Vector128.Max(m.GetUpper().GetLower(), m.GetUpper().GetUpper()));
        return MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
    }

    /// <summary>
    /// <see cref="ExpSubtractPadded"/> of four rows <paramref name="stride"/> floats apart, row r against
    /// <paramref name="max"/>[r], each row's sum added to <paramref name="sums"/>[r]: four independent exp chains per
    /// step. Each row's values and sum are those <see cref="ExpSubtractPadded"/> gives (same operations, same order).
    /// </summary>
    public static void ExpSubtractPadded4(float* x, nint stride, int count, float* max, float* sums)
    {
        var mx0 = Vector512.Create(max[0]); var mx1 = Vector512.Create(max[1]); var mx2 = Vector512.Create(max[2]); var mx3 = Vector512.Create(max[3]);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float* x0 = x, x1 = x + stride, x2 = x + 2 * stride, x3 = x + 3 * stride;
        int i = 0;
        for (; i <= count - 16; i += 16)
        {
            var e0 = ExpNonPositive(Vector512.Load(x0 + i) - mx0);
            var e1 = ExpNonPositive(Vector512.Load(x1 + i) - mx1);
            var e2 = ExpNonPositive(Vector512.Load(x2 + i) - mx2);
            var e3 = ExpNonPositive(Vector512.Load(x3 + i) - mx3);
            e0.Store(x0 + i); e1.Store(x1 + i); e2.Store(x2 + i); e3.Store(x3 + i);
            a0 += e0; a1 += e1; a2 += e2; a3 += e3;
        }
        if (i < count)
        {
            var valid = ValidLanes(count - i);
            var e0 = ExpNonPositive(Vector512.Load(x0 + i) - mx0) & valid;
            var e1 = ExpNonPositive(Vector512.Load(x1 + i) - mx1) & valid;
            var e2 = ExpNonPositive(Vector512.Load(x2 + i) - mx2) & valid;
            var e3 = ExpNonPositive(Vector512.Load(x3 + i) - mx3) & valid;
            e0.Store(x0 + i); e1.Store(x1 + i); e2.Store(x2 + i); e3.Store(x3 + i);
            a0 += e0; a1 += e1; a2 += e2; a3 += e3;
        }
        sums[0] += Sum(a0);
        sums[1] += Sum(a1);
        sums[2] += Sum(a2);
        sums[3] += Sum(a3);
    }

    /// <summary>All-ones in the lanes below <paramref name="count"/>, zero above.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ValidLanes(int count) =>
        Vector512.LessThan(Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), Vector512.Create(count)).AsSingle();

    /// <summary>x[i] = exp(x[i] − max) over <paramref name="count"/> elements (each ≤ max); returns their sum.</summary>
    public static float ExpSubtract(float* x, int count, float max)
    {
        int i = 0;
        float sum = 0;
        if (CpuFeatures.UseVector512)
        {
            var m = Vector512.Create(max);
            var acc = Vector512<float>.Zero;
            for (; i <= count - 16; i += 16)
            {
                var e = ExpNonPositive(Vector512.Load(x + i) - m);
                e.Store(x + i);
                acc += e;
            }
            sum = Sum(acc);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var m = Vector256.Create(max);
            var acc = Vector256<float>.Zero;
            for (; i <= count - 8; i += 8)
            {
                var e = Vector256.Exp(Vector256.Load(x + i) - m);
                e.Store(x + i);
                acc += e;
            }
            sum = Vector256.Sum(acc);
        }
        for (; i < count; i++)
        {
            x[i] = MathF.Exp(x[i] - max);
            sum += x[i];
        }
        return sum;
    }

    /// <summary>
    /// exp(x) for x ≤ 0 in f32 arithmetic (Cephes' expf: x = n ln2 + r with |r| ≤ ln2/2, a degree-7 polynomial in r,
    /// then 2^n from the exponent bits), within 2 ulp of the true value; x below −87.3 gives about 1e-38, not 0.
    /// .NET's Vector512.Exp for float goes through double and cost a tenth of a Stories260K decode step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ExpNonPositive(Vector512<float> x)
    {
        // AVX2 (CpuFeatures.UseAttentionLanes): .NET's software Vector512.Round and ConvertToInt32 go element by
        // element, so the halves take the Vector256 form (vroundps, vcvtps2dq).
        if (!Vector512.IsHardwareAccelerated) return Vector512.Create(ExpNonPositive(x.GetLower()), ExpNonPositive(x.GetUpper()));
        x = Vector512.Max(x, Vector512.Create(-87.33654f));
        return CephesExp.Polynomial(CephesExp.Reduce(x, out var n)) * CephesExp.PowerOfTwo(n);
    }

    /// <summary>
    /// <see cref="ExpNonPositive(Vector512{float})"/> on 8 lanes: the same steps (<see cref="CephesExp"/>) in the same order,
    /// so each lane's value is the same on either instruction set.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ExpNonPositive(Vector256<float> x)
    {
        x = Vector256.Max(x, Vector256.Create(-87.33654f));
        return CephesExp.Polynomial(CephesExp.Reduce(x, out var n)) * CephesExp.PowerOfTwo(n);
    }

    /// <summary>
    /// The lane sums of 16 consecutive vectors at <paramref name="vectors"/> as one vector (lane i: the sum of vector i's
    /// lanes; <see cref="LaneSums.Of16"/>, needs AVX-512F): a head's per-channel outputs of decode attention, 16 channels at a time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector512<float> SumEach16(float* vectors) => LaneSums.Of16(
        Vector512.Load(vectors), Vector512.Load(vectors + 16), Vector512.Load(vectors + 32), Vector512.Load(vectors + 48),
        Vector512.Load(vectors + 64), Vector512.Load(vectors + 80), Vector512.Load(vectors + 96), Vector512.Load(vectors + 112),
        Vector512.Load(vectors + 128), Vector512.Load(vectors + 144), Vector512.Load(vectors + 160), Vector512.Load(vectors + 176),
        Vector512.Load(vectors + 192), Vector512.Load(vectors + 208), Vector512.Load(vectors + 224), Vector512.Load(vectors + 240));

    /// <summary>The sum of 16 lanes: <c>Vector512.Sum</c>, or on AVX2 the two halves added first (one call, not sixteen elements).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Vector512.IsHardwareAccelerated ? Vector512.Sum(v) : Vector256.Sum(v.GetLower() + v.GetUpper());
}
