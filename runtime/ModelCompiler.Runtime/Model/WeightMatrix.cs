using System;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime;

/// <summary>
/// A weight matrix <c>[Rows, Cols]</c> as stored: row-major, each row <see cref="RowSizeInBytes"/> bytes of
/// <see cref="DType"/> (whole quantization blocks). Kernels read the format directly; the bytes belong to
/// the <see cref="ModelWeights"/> it came from.
/// </summary>
public readonly unsafe struct WeightMatrix
{
    /// <summary>Describes <paramref name="rows"/> × <paramref name="cols"/> weights of <paramref name="dtype"/> at <paramref name="data"/>.</summary>
    public WeightMatrix(nint data, WeightDType dtype, int rows, int cols)
    {
        Data = data;
        DType = dtype;
        Rows = rows;
        Cols = cols;
        RowSizeInBytes = (int)WeightDTypes.SizeInBytes(dtype, cols);
    }

    /// <summary>Address of row 0.</summary>
    public nint Data { get; }
    /// <summary>Storage type.</summary>
    public WeightDType DType { get; }
    /// <summary>Output features.</summary>
    public int Rows { get; }
    /// <summary>Input features.</summary>
    public int Cols { get; }
    /// <summary>Bytes per row.</summary>
    public int RowSizeInBytes { get; }

    /// <summary>The bytes of row <paramref name="row"/>.</summary>
    public ReadOnlySpan<byte> Row(int row) => new((byte*)Data + (long)row * RowSizeInBytes, RowSizeInBytes);

    /// <summary>The whole matrix as floats; only for <see cref="WeightDType.F32"/>.</summary>
    public ReadOnlySpan<float> AsFloats()
    {
        if (DType != WeightDType.F32) throw new InvalidOperationException($"The matrix is {WeightDTypes.Name(DType)}, not f32.");
        return new((void*)Data, checked(Rows * Cols));
    }
}
