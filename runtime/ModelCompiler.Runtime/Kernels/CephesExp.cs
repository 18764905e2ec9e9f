using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>
/// The vector steps of Cephes' expf that attention's softmax (<see cref="AttentionMath.ExpNonPositive(Vector512{float})"/>),
/// SiLU (<see cref="Exp(Vector256{float})"/>) and the sampler's weights share: the range reduction <c>x = n·ln2 + r</c>
/// (|r| ≤ ln2/2, ln2 in two parts), the polynomial <c>e^r ≈ 1 + r + r²·P(r)</c>, in f32 FMAs, and 2ⁿ from the exponent
/// bits (<see cref="PowerOfTwo(Vector512{float})"/>; the sampler builds its own 2^(40 + n)). The 512- and 256-bit forms
/// run the same operations in the same order, so a lane's value is the same on either instruction set; the sampler's
/// results must also match the CUDA prelude's <c>mc_sample_weight</c> bit for bit (tested), so a change here is a
/// change there.
/// </summary>
internal static class CephesExp
{
    /// <summary>n = round(x / ln2) and the reduced r; returns r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Reduce(Vector512<float> x, out Vector512<float> n)
    {
        n = Vector512.Round(x * Vector512.Create(1.44269504f));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), x);
        return Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
    }

    /// <summary>e^r for a reduced <paramref name="r"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Polynomial(Vector512<float> r)
    {
        var p = Vector512.Create(1.9875691500e-4f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        return Vector512.FusedMultiplyAdd(p, r * r, r) + Vector512.Create(1f);
    }

    /// <summary>
    /// e^x in f32 for any x (SiLU's e^-x): x is clamped to [−87.33654, 88.02], where 2ⁿ is a normal float, so x below
    /// gives about 1e-38 and x above about 1.7e38 instead of 0 or ∞; within 2 ulp of the true value in between.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(-87.33654f)), Vector256.Create(88.02f));
        return Polynomial(Reduce(x, out var n)) * PowerOfTwo(n);
    }

    /// <summary>2ⁿ for a whole <paramref name="n"/> in [−126, 127] (a normal float), from its exponent bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> PowerOfTwo(Vector512<float> n) => ((Vector512.ConvertToInt32(n) + Vector512.Create(127)) << 23).AsSingle();

    /// <inheritdoc cref="PowerOfTwo(Vector512{float})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> PowerOfTwo(Vector256<float> n) => ((Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23).AsSingle();

    /// <inheritdoc cref="Reduce(Vector512{float}, out Vector512{float})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Reduce(Vector256<float> x, out Vector256<float> n)
    {
        n = Vector256.Round(x * Vector256.Create(1.44269504f));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x);
        return Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
    }

    /// <inheritdoc cref="Polynomial(Vector512{float})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Polynomial(Vector256<float> r)
    {
        var p = Vector256.Create(1.9875691500e-4f);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.3981999507e-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(8.3334519073e-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(4.1665795894e-2f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.6666665459e-1f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(5.0000001201e-1f));
        return Vector256.FusedMultiplyAdd(p, r * r, r) + Vector256.Create(1f);
    }
}
