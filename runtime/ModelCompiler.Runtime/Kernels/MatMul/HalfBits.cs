using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// f16 and bf16 to f32 without tables or F16C (which .NET does not expose). f16: the 15 magnitude bits shifted
/// into an f32's exponent and mantissa make a float 2^112 times too small (subnormal halves become f32
/// subnormals), so one multiply rescales every finite value exactly; infinities and NaNs get the all-ones
/// exponent explicitly. bf16: the top half of an f32, so a shift.
/// </summary>
internal static class HalfBits
{
    private const float TwoPow112 = 5.192296858534828e33f;

    // Every f16 bit pattern as f32 (256 KiB), for the per-block scales of q8_0/q4_0: one load (or a broadcast
    // straight from memory) instead of a dozen scalar instructions per block, which is what bounded the
    // quantized decode (llama.cpp uses the same table).
    // Kernels read the address once, outside their loops, so no class-initialization check sits in a loop.
    public static readonly unsafe float* HalfToSingleTable = BuildTable();

    private static unsafe float* BuildTable()
    {
        var table = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (int h = 0; h < 65536; h++) table[h] = HalfToSingle((ushort)h);
        return table;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HalfToSingle(ushort h)
    {
        uint bits = (uint)(h & 0x7FFF) << 13;
        float magnitude = (h & 0x7C00) == 0x7C00
            ? BitConverter.UInt32BitsToSingle(bits | 0x7F800000)
            : BitConverter.UInt32BitsToSingle(bits) * TwoPow112;
        return BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(magnitude) | ((uint)(h & 0x8000) << 16));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BFloat16ToSingle(ushort h) => BitConverter.UInt32BitsToSingle((uint)h << 16);

    /// <summary>16 f16 values to f32 (needs AVX-512F).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> HalfToSingle(Vector256<ushort> halves)
    {
        var h = Avx512F.ConvertToVector512Int32(halves).AsUInt32();
        var bits = (h & Vector512.Create(0x7FFFu)) << 13;
        var finite = bits.AsSingle() * Vector512.Create(TwoPow112);
        var isInfOrNaN = Vector512.Equals(h & Vector512.Create(0x7C00u), Vector512.Create(0x7C00u));
        var magnitude = Vector512.ConditionalSelect(isInfOrNaN, bits | Vector512.Create(0x7F800000u), finite.AsUInt32());
        return (magnitude | ((h & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>8 f16 values to f32 (needs AVX2): the per-row scales of a packed quantized block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> HalfToSingle(Vector128<ushort> halves)
    {
        var h = Avx2.ConvertToVector256Int32(halves).AsUInt32();
        var bits = (h & Vector256.Create(0x7FFFu)) << 13;
        var finite = bits.AsSingle() * Vector256.Create(TwoPow112);
        var isInfOrNaN = Vector256.Equals(h & Vector256.Create(0x7C00u), Vector256.Create(0x7C00u));
        var magnitude = Vector256.ConditionalSelect(isInfOrNaN, bits | Vector256.Create(0x7F800000u), finite.AsUInt32());
        return (magnitude | ((h & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>
    /// 8 finite f16 values to f32 in four instructions (needs AVX2): sign-extended to 32 bits and shifted left by 13,
    /// the sign's copies land in bits 28–31 and the exponent and mantissa in 13–27; masking bits 28–30 leaves the
    /// sign in place and a float 2^112 too small, rescaled exactly by one multiply (subnormals included). Infinity
    /// and NaN come out finite and wrong, so only for values known to be finite: the scales of packed matrices,
    /// which <see cref="PackedQuantizedLayout.HasFiniteScales"/> checks before packing. Used per block by the
    /// quantized decode, where the general form's eleven instructions were a fifth of the kernel's.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> FiniteHalfToSingle(Vector128<short> halves)
    {
        var bits = Avx2.ConvertToVector256Int32(halves) << 13;
        return (bits & Vector256.Create(unchecked((int)0x8FFFE000))).AsSingle() * Vector256.Create(TwoPow112);
    }

    /// <summary>
    /// What <see cref="ScaledFiniteHalfToSingle(Vector256{short})"/> and its siblings leave out: each of their results times
    /// this power of two is the f16 value, exactly.
    /// </summary>
    public const float FiniteHalfScale = TwoPow112;

    /// <summary>
    /// 16 finite f16 values as f32 times 2^-112 (needs AVX-512F), in three instructions: <see cref="FiniteHalfToSingle"/>
    /// without its multiply. A caller that pairs every element with a factor of its own (a query element, a softmax
    /// weight) multiplies that factor by <see cref="FiniteHalfScale"/> instead: scaling by a power of two is exact, so
    /// the product, and every sum built from it, is the same as with the widened value, as long as the scaled factor
    /// stays finite. Exact for every finite f16 (subnormal ones become f32 subnormals); infinity and NaN come out finite
    /// and wrong.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ScaledFiniteHalfToSingle(Vector256<short> halves) =>
        ((Avx512F.ConvertToVector512Int32(halves) << 13) & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle();

    /// <summary><see cref="ScaledFiniteHalfToSingle(Vector256{short})"/> for 8 values (needs AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ScaledFiniteHalfToSingle(Vector128<short> halves) =>
        ((Avx2.ConvertToVector256Int32(halves) << 13) & Vector256.Create(unchecked((int)0x8FFFE000))).AsSingle();

    /// <summary><see cref="ScaledFiniteHalfToSingle(Vector256{short})"/> for one value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ScaledFiniteHalfToSingle(ushort h) => BitConverter.Int32BitsToSingle(((short)h << 13) & unchecked((int)0x8FFFE000));

    /// <summary>4 f16 values (one per 32-bit lane) to f32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> HalfToSingle(Vector128<uint> h)
    {
        var bits = (h & Vector128.Create(0x7FFFu)) << 13;
        var finite = bits.AsSingle() * Vector128.Create(TwoPow112);
        var isInfOrNaN = Vector128.Equals(h & Vector128.Create(0x7C00u), Vector128.Create(0x7C00u));
        var magnitude = Vector128.ConditionalSelect(isInfOrNaN, bits | Vector128.Create(0x7F800000u), finite.AsUInt32());
        return (magnitude | ((h & Vector128.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>8 bf16 values to f32 (needs AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> BFloat16ToSingle(Vector128<ushort> values) =>
        (Avx2.ConvertToVector256Int32(values).AsUInt32() << 16).AsSingle();

    /// <summary>16 bf16 values to f32 (needs AVX-512F).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> BFloat16ToSingle(Vector256<ushort> values) =>
        (Avx512F.ConvertToVector512Int32(values).AsUInt32() << 16).AsSingle();
}
