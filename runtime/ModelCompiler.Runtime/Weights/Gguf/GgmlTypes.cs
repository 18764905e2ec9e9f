using System.Globalization;

namespace ModelCompiler.Runtime.Weights.Gguf;

/// <summary>
/// ggml tensor type ids as GGUF stores them (<c>enum ggml_type</c>), with block sizes so that tensors of
/// types we cannot compute with can still be bounds-checked and listed.
/// </summary>
public static class GgmlTypes
{
    /// <summary>GGML_TYPE_F32</summary>
    public const uint F32 = 0;
    /// <summary>GGML_TYPE_F16</summary>
    public const uint F16 = 1;
    /// <summary>GGML_TYPE_Q4_0</summary>
    public const uint Q4_0 = 2;
    /// <summary>GGML_TYPE_Q8_0</summary>
    public const uint Q8_0 = 8;
    /// <summary>GGML_TYPE_BF16</summary>
    public const uint BF16 = 30;

    /// <summary>The runtime type for a ggml type id, when the runtime can compute with it.</summary>
    public static bool TryToWeightDType(uint ggmlType, out WeightDType dtype)
    {
        switch (ggmlType)
        {
            case F32: dtype = WeightDType.F32; return true;
            case F16: dtype = WeightDType.F16; return true;
            case Q4_0: dtype = WeightDType.Q4_0; return true;
            case Q8_0: dtype = WeightDType.Q8_0; return true;
            case BF16: dtype = WeightDType.BF16; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>The ggml type id of a runtime type.</summary>
    public static uint FromWeightDType(WeightDType dtype) => dtype switch
    {
        WeightDType.F32 => F32,
        WeightDType.F16 => F16,
        WeightDType.Q4_0 => Q4_0,
        WeightDType.Q8_0 => Q8_0,
        WeightDType.BF16 => BF16,
        _ => throw new System.ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Weights per block and bytes per block of a ggml type (ggml's <c>type_traits</c>); false for ids this table does not know.</summary>
    public static bool TryGetBlockLayout(uint ggmlType, out int blockSize, out int bytesPerBlock)
    {
        (blockSize, bytesPerBlock) = ggmlType switch
        {
            0 => (1, 4), 1 => (1, 2), 2 => (32, 18), 3 => (32, 20), 6 => (32, 22), 7 => (32, 24),
            8 => (32, 34), 9 => (32, 36), 10 => (256, 84), 11 => (256, 110), 12 => (256, 144),
            13 => (256, 176), 14 => (256, 210), 15 => (256, 292), 16 => (256, 66), 17 => (256, 74),
            18 => (256, 98), 19 => (256, 50), 20 => (32, 18), 21 => (256, 110), 22 => (256, 82),
            23 => (256, 136), 24 => (1, 1), 25 => (1, 2), 26 => (1, 4), 27 => (1, 8), 28 => (1, 8),
            29 => (256, 56), 30 => (1, 2),
            _ => (0, 0),
        };
        return blockSize > 0;
    }

    /// <summary>ggml's name of a type id (<c>q4_K</c>), or <c>type N</c> for ids this table does not know.</summary>
    public static string Name(uint ggmlType) => ggmlType switch
    {
        0 => "f32", 1 => "f16", 2 => "q4_0", 3 => "q4_1", 6 => "q5_0", 7 => "q5_1", 8 => "q8_0", 9 => "q8_1",
        10 => "q2_K", 11 => "q3_K", 12 => "q4_K", 13 => "q5_K", 14 => "q6_K", 15 => "q8_K",
        16 => "iq2_xxs", 17 => "iq2_xs", 18 => "iq3_xxs", 19 => "iq1_s", 20 => "iq4_nl", 21 => "iq3_s",
        22 => "iq2_s", 23 => "iq4_xs", 24 => "i8", 25 => "i16", 26 => "i32", 27 => "i64", 28 => "f64",
        29 => "iq1_m", 30 => "bf16",
        _ => "type " + ggmlType.ToString(CultureInfo.InvariantCulture),
    };
}
