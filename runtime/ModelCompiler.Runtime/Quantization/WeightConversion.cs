using System;
using System.Buffers.Binary;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Quantization;

/// <summary>
/// Reference conversions between f32 and every <see cref="WeightDType"/>, row by row, in the GGUF block
/// layouts (ggml's <c>quantize_row_q8_0_ref</c> / <c>q4_0_ref</c> rounding). Used to quantize weights, to
/// widen small tensors at load time and by tests; the kernels read the formats directly.
/// </summary>
public static class WeightConversion
{
    /// <summary>Encodes <paramref name="source"/> (a whole number of blocks) as <paramref name="dtype"/> into <paramref name="destination"/>.</summary>
    public static void Encode(ReadOnlySpan<float> source, WeightDType dtype, Span<byte> destination)
    {
        long needed = WeightDTypes.SizeInBytes(dtype, source.Length);
        if (destination.Length < needed) throw new ArgumentException($"{needed} bytes needed.", nameof(destination));
        switch (dtype)
        {
            case WeightDType.F32:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(destination.Slice(i * 4), source[i]);
                break;
            case WeightDType.F16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(destination.Slice(i * 2), (Half)source[i]);
                break;
            case WeightDType.BF16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination.Slice(i * 2), ToBFloat16(source[i]));
                break;
            case WeightDType.Q8_0:
                for (int b = 0; b < source.Length / 32; b++) EncodeQ8_0(source.Slice(b * 32, 32), destination.Slice(b * 34, 34));
                break;
            case WeightDType.Q4_0:
                for (int b = 0; b < source.Length / 32; b++) EncodeQ4_0(source.Slice(b * 32, 32), destination.Slice(b * 18, 18));
                break;
        }
    }

    /// <summary>Decodes <paramref name="destination"/>.Length elements of <paramref name="dtype"/> from <paramref name="source"/>.</summary>
    public static void Decode(ReadOnlySpan<byte> source, WeightDType dtype, Span<float> destination)
    {
        long needed = WeightDTypes.SizeInBytes(dtype, destination.Length);
        if (source.Length < needed) throw new ArgumentException($"{needed} bytes needed.", nameof(source));
        switch (dtype)
        {
            case WeightDType.F32:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source.Slice(i * 4));
                break;
            case WeightDType.F16:
                for (int i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(source.Slice(i * 2));
                break;
            case WeightDType.BF16:
                for (int i = 0; i < destination.Length; i++) destination[i] = FromBFloat16(BinaryPrimitives.ReadUInt16LittleEndian(source.Slice(i * 2)));
                break;
            case WeightDType.Q8_0:
                for (int b = 0; b < destination.Length / 32; b++)
                {
                    var block = source.Slice(b * 34, 34);
                    float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
                    for (int j = 0; j < 32; j++) destination[b * 32 + j] = (sbyte)block[2 + j] * d;
                }
                break;
            case WeightDType.Q4_0:
                for (int b = 0; b < destination.Length / 32; b++)
                {
                    var block = source.Slice(b * 18, 18);
                    float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
                    for (int j = 0; j < 16; j++)
                    {
                        destination[b * 32 + j] = ((block[2 + j] & 0x0F) - 8) * d;
                        destination[b * 32 + j + 16] = ((block[2 + j] >> 4) - 8) * d;
                    }
                }
                break;
        }
    }

    /// <summary>f32 → bf16 with round-to-nearest-even (NaN stays NaN).</summary>
    public static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>bf16 → f32 (exact).</summary>
    public static float FromBFloat16(ushort value) => BitConverter.UInt32BitsToSingle((uint)value << 16);

    // ggml quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d).
    private static void EncodeQ8_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        foreach (float v in x) amax = MathF.Max(amax, MathF.Abs(v));
        float d = amax / 127f;
        float id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
        for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }

    // ggml quantize_row_q4_0_ref: d = (value of largest magnitude) / -8, q = clamp(x / d + 8.5) truncated,
    // element j in the low nibble of byte j and element j + 16 in its high nibble.
    private static void EncodeQ4_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
            if (MathF.Abs(v) > amax) { amax = MathF.Abs(v); max = v; }
        float d = max / -8f;
        float id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
        for (int j = 0; j < 16; j++)
        {
            int lo = Math.Min(15, (int)(x[j] * id + 8.5f));
            int hi = Math.Min(15, (int)(x[j + 16] * id + 8.5f));
            block[2 + j] = (byte)(lo | (hi << 4));
        }
    }
}
