using System;

namespace ModelCompiler.Runtime.Weights;

/// <summary>Element type of a stored tensor.</summary>
public enum WeightDType
{
    /// <summary>IEEE 32-bit float.</summary>
    F32,
    /// <summary>IEEE 16-bit float.</summary>
    F16,
    /// <summary>bfloat16 (the top 16 bits of an f32).</summary>
    BF16,
    /// <summary>GGUF Q8_0: blocks of 32 weights, an f16 scale and 32 int8 values (34 bytes).</summary>
    Q8_0,
    /// <summary>GGUF Q4_0: blocks of 32 weights, an f16 scale and 16 bytes of 4-bit values offset by 8 (18 bytes).</summary>
    Q4_0,
}

/// <summary>Sizes and names of the <see cref="WeightDType"/>s, in the GGUF block layouts.</summary>
public static class WeightDTypes
{
    /// <summary>Weights per quantization block (1 for the float types).</summary>
    public static int BlockSize(WeightDType dtype) => dtype is WeightDType.Q8_0 or WeightDType.Q4_0 ? 32 : 1;

    /// <summary>Bytes per block (per element for the float types).</summary>
    public static int BytesPerBlock(WeightDType dtype) => dtype switch
    {
        WeightDType.F32 => 4,
        WeightDType.F16 or WeightDType.BF16 => 2,
        WeightDType.Q8_0 => 34,
        WeightDType.Q4_0 => 18,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>True for the block-quantized types.</summary>
    public static bool IsBlockQuantized(WeightDType dtype) => BlockSize(dtype) > 1;

    /// <summary>Bytes of <paramref name="numElements"/> elements; a quantized count must be whole blocks.</summary>
    public static long SizeInBytes(WeightDType dtype, long numElements)
    {
        int block = BlockSize(dtype);
        if (numElements % block != 0)
            throw new ArgumentException($"{Name(dtype)} stores whole blocks of {block} weights; {numElements} is not a multiple.");
        return numElements / block * BytesPerBlock(dtype);
    }

    /// <summary>The lower-case name used in descriptions, GGUF tools and messages (<c>q8_0</c>).</summary>
    public static string Name(WeightDType dtype) => dtype switch
    {
        WeightDType.F32 => "f32",
        WeightDType.F16 => "f16",
        WeightDType.BF16 => "bf16",
        WeightDType.Q8_0 => "q8_0",
        WeightDType.Q4_0 => "q4_0",
        _ => dtype.ToString(),
    };

    /// <summary>Parses a name written by <see cref="Name"/>.</summary>
    public static bool TryParse(string name, out WeightDType dtype)
    {
        foreach (WeightDType d in Enum.GetValues<WeightDType>())
            if (string.Equals(Name(d), name, StringComparison.OrdinalIgnoreCase)) { dtype = d; return true; }
        dtype = default;
        return false;
    }
}
