using System.Buffers.Binary;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Formats;

/// <summary>
/// Block encodings checked against values worked out by hand from ggml's reference quantizers
/// (<c>quantize_row_q8_0_ref</c>: d = amax/127, q = roundf(x/d), halves away from zero;
/// <c>quantize_row_q4_0_ref</c>: d = max/-8 with max the value of largest magnitude, q = min(15, (int)(x/d + 8.5)),
/// element j in the low nibble of byte j and j+16 in the high nibble), bf16 round-to-nearest-even, f16 round trip.
/// </summary>
public class WeightConversionTests
{
    [Fact]
    public void Q8_0_block_by_hand()
    {
        var x = new float[32];
        x[0] = 127; x[1] = -127; x[2] = 63.5f; x[3] = -63.5f; x[4] = 0.4f; x[5] = 1.5f; x[6] = 2.5f; x[7] = -2.5f; x[8] = 100.49f;
        var block = new byte[34];
        WeightConversion.Encode(x, WeightDType.Q8_0, block);
        Assert.Equal(0x3C00, BinaryPrimitives.ReadUInt16LittleEndian(block)); // d = 127/127 = 1.0 in f16
        sbyte[] expected = [127, -127, 64, -64, 0, 2, 3, -3, 100];
        for (int j = 0; j < expected.Length; j++) Assert.Equal(expected[j], (sbyte)block[2 + j]);
        for (int j = expected.Length; j < 32; j++) Assert.Equal(0, block[2 + j]);

        var decoded = new float[32];
        WeightConversion.Decode(block, WeightDType.Q8_0, decoded);
        Assert.Equal(expected.Select(v => (float)v), decoded[..expected.Length]);
    }

    [Fact]
    public void Q8_0_all_zero_block_has_zero_scale()
    {
        var block = new byte[34];
        Array.Fill(block, (byte)0xAA);
        WeightConversion.Encode(new float[32], WeightDType.Q8_0, block);
        Assert.All(block, b => Assert.Equal(0, b));
    }

    [Fact]
    public void Q4_0_blocks_by_hand_negative_and_positive_extreme()
    {
        // Block 0: the largest magnitude is -8, so d = -8 / -8 = 1.
        // Block 1: the largest magnitude is +8, so d = 8 / -8 = -1 and the codes run the other way.
        var x = new float[64];
        float[] firstValues = [-8, 7, 7.4f, 0, 0.5f, -0.5f, -0.6f, 3.2f];
        firstValues.CopyTo(x, 0);
        x[16] = 1; x[17] = -3;
        x[32] = 8; x[33] = -7; x[34] = 2;
        var blocks = new byte[36];
        WeightConversion.Encode(x, WeightDType.Q4_0, blocks);

        Assert.Equal(0x3C00, BinaryPrimitives.ReadUInt16LittleEndian(blocks));          // +1.0
        int[] lowCodes = [0, 15, 15, 8, 9, 8, 7, 11];                                   // (int)(x + 8.5), capped at 15
        for (int j = 0; j < lowCodes.Length; j++) Assert.Equal(lowCodes[j], blocks[2 + j] & 0xF);
        Assert.Equal(9, blocks[2] >> 4);     // x[16] = 1  → 9
        Assert.Equal(5, blocks[3] >> 4);     // x[17] = -3 → 5
        Assert.Equal(0xBC00, BinaryPrimitives.ReadUInt16LittleEndian(blocks.AsSpan(18))); // -1.0
        Assert.Equal(0, blocks[20] & 0xF);   // x = 8  → (int)(-8 + 8.5) = 0
        Assert.Equal(15, blocks[21] & 0xF);  // x = -7 → 15
        Assert.Equal(6, blocks[22] & 0xF);   // x = 2  → 6

        var decoded = new float[64];
        WeightConversion.Decode(blocks, WeightDType.Q4_0, decoded);
        Assert.Equal(new float[] { -8, 7, 7, 0, 1, 0, -1, 3 }, decoded[..8]);
        Assert.Equal(1, decoded[16]);
        Assert.Equal(-3, decoded[17]);
        Assert.Equal(new float[] { 8, -7, 2 }, decoded[32..35]);
    }

    [Theory]
    [InlineData(0x3F808000u, (ushort)0x3F80)] // exactly half way, even below: stays
    [InlineData(0x3F818000u, (ushort)0x3F82)] // exactly half way, odd below: rounds up to even
    [InlineData(0x3F808001u, (ushort)0x3F81)] // just above half way: up
    [InlineData(0x3F807FFFu, (ushort)0x3F80)] // just below half way: down
    [InlineData(0xBF818000u, (ushort)0xBF82)] // negative ties behave the same on the magnitude
    [InlineData(0x7F7FFFFFu, (ushort)0x7F80)] // float.MaxValue rounds to +infinity
    [InlineData(0x7F800000u, (ushort)0x7F80)] // +infinity
    [InlineData(0x00000001u, (ushort)0x0000)] // smallest subnormal rounds to zero
    public void Bf16_rounds_to_nearest_even(uint f32Bits, ushort expected) =>
        Assert.Equal(expected, WeightConversion.ToBFloat16(BitConverter.UInt32BitsToSingle(f32Bits)));

    [Fact]
    public void Bf16_keeps_nan_a_nan() => Assert.True(float.IsNaN(WeightConversion.FromBFloat16(WeightConversion.ToBFloat16(float.NaN))));

    [Fact]
    public void F16_round_trips_every_non_nan_bit_pattern()
    {
        var bytes = new byte[2];
        var value = new float[1];
        for (int bits = 0; bits < 65536; bits++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(bytes, (ushort)bits);
            WeightConversion.Decode(bytes, WeightDType.F16, value);
            if (float.IsNaN(value[0])) continue;
            var back = new byte[2];
            WeightConversion.Encode(value, WeightDType.F16, back);
            Assert.Equal(bits, BinaryPrimitives.ReadUInt16LittleEndian(back));
        }
    }

    [Fact]
    public void F16_encoding_rounds_to_nearest_even()
    {
        // 1 + 2^-11 is half way between 1.0 (0x3C00) and the next f16 (0x3C01): ties to even, 0x3C00.
        var bytes = new byte[4];
        WeightConversion.Encode([1f + MathF.Pow(2, -11), 1f + 3 * MathF.Pow(2, -11)], WeightDType.F16, bytes);
        Assert.Equal(0x3C00, BinaryPrimitives.ReadUInt16LittleEndian(bytes));
        Assert.Equal(0x3C02, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(2)));
    }
}
