using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>
/// The CPU kernels the generated engines call, one static method per (fused) operation. Activations are
/// f32, row-major <c>[numTokens, width]</c> unless a row stride is given. The kernels never allocate on the
/// heap; dot products accumulate in f32 with SIMD (Vector512 where the hardware has it, then Vector256,
/// Vector128, scalar tails) so odd widths work everywhere.
/// </summary>
public static partial class CpuKernels
{
    /// <summary>Sum of a[i]*b[i] over the length of <paramref name="a"/>, accumulated in f32.</summary>
    internal static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int length = a.Length;
        // The unchecked loads below rely on this; one check per dot product is noise next to the loop.
        if (b.Length < length) throw new ArgumentException($"Dot product of {length} elements over a span of {b.Length}.", nameof(b));
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        int i = 0;
        float sum = 0f;
        if (Vector512.IsHardwareAccelerated && length >= Vector512<float>.Count)
        {
            // Four independent accumulators hide the FMA latency; they are summed once at the end.
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            var acc2 = Vector512<float>.Zero;
            var acc3 = Vector512<float>.Zero;
            for (; i <= length - 64; i += 64)
            {
                acc0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref pa, (nuint)i), Vector512.LoadUnsafe(ref pb, (nuint)i), acc0);
                acc1 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref pa, (nuint)(i + 16)), Vector512.LoadUnsafe(ref pb, (nuint)(i + 16)), acc1);
                acc2 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref pa, (nuint)(i + 32)), Vector512.LoadUnsafe(ref pb, (nuint)(i + 32)), acc2);
                acc3 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref pa, (nuint)(i + 48)), Vector512.LoadUnsafe(ref pb, (nuint)(i + 48)), acc3);
            }
            for (; i <= length - 16; i += 16)
                acc0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref pa, (nuint)i), Vector512.LoadUnsafe(ref pb, (nuint)i), acc0);
            sum = Vector512.Sum((acc0 + acc1) + (acc2 + acc3));
        }
        else if (Vector256.IsHardwareAccelerated && length >= Vector256<float>.Count)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            for (; i <= length - 16; i += 16)
            {
                acc0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref pa, (nuint)i), Vector256.LoadUnsafe(ref pb, (nuint)i), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref pa, (nuint)(i + 8)), Vector256.LoadUnsafe(ref pb, (nuint)(i + 8)), acc1);
            }
            for (; i <= length - 8; i += 8)
                acc0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref pa, (nuint)i), Vector256.LoadUnsafe(ref pb, (nuint)i), acc0);
            sum = Vector256.Sum(acc0 + acc1);
        }
        else if (Vector128.IsHardwareAccelerated && length >= Vector128<float>.Count)
        {
            var acc = Vector128<float>.Zero;
            for (; i <= length - 4; i += 4)
                acc = Vector128.FusedMultiplyAdd(Vector128.LoadUnsafe(ref pa, (nuint)i), Vector128.LoadUnsafe(ref pb, (nuint)i), acc);
            sum = Vector128.Sum(acc);
        }
        for (; i < length; i++) sum = MathF.FusedMultiplyAdd(Unsafe.Add(ref pa, i), Unsafe.Add(ref pb, i), sum);
        return sum;
    }

    /// <summary>y[i] = x[i] * scale for the length of <paramref name="x"/>; y may be x.</summary>
    internal static void Scale(ReadOnlySpan<float> x, float scale, Span<float> y)
    {
        int length = x.Length;
        if (y.Length < length) throw new ArgumentException($"Scaling {length} elements into a span of {y.Length}.", nameof(y));
        ref float px = ref MemoryMarshal.GetReference(x);
        ref float py = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var s = Vector256.Create(scale);
            for (; i <= length - 8; i += 8) (Vector256.LoadUnsafe(ref px, (nuint)i) * s).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < length; i++) Unsafe.Add(ref py, i) = Unsafe.Add(ref px, i) * scale;
    }

    /// <summary>y[i] += x[i] * scale for the length of <paramref name="x"/> (the attention value update).</summary>
    internal static void MultiplyAdd(ReadOnlySpan<float> x, float scale, Span<float> y)
    {
        int length = x.Length;
        if (y.Length < length) throw new ArgumentException($"Accumulating {length} elements into a span of {y.Length}.", nameof(y));
        ref float px = ref MemoryMarshal.GetReference(x);
        ref float py = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var s = Vector256.Create(scale);
            for (; i <= length - 8; i += 8)
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref px, (nuint)i), s, Vector256.LoadUnsafe(ref py, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < length; i++) Unsafe.Add(ref py, i) = MathF.FusedMultiplyAdd(Unsafe.Add(ref px, i), scale, Unsafe.Add(ref py, i));
    }
}
