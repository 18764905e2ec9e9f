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
    public WeightMatrix(nint data, WeightDType dtype, int rows, int cols) : this(data, dtype, rows, cols, 0) { }

    /// <summary>
    /// Describes a matrix that also has a copy in the CPU projections' packed layout at <paramref name="packedData"/>
    /// (0 for none); see <see cref="PackedData"/>.
    /// </summary>
    public WeightMatrix(nint data, WeightDType dtype, int rows, int cols, nint packedData)
    {
        Data = data;
        DType = dtype;
        Rows = rows;
        Cols = cols;
        RowSizeInBytes = (int)WeightDTypes.SizeInBytes(dtype, cols);
        PackedData = packedData;
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
    /// <summary>
    /// 0, or the address of the same weights repacked at load time for the CPU's projections, which then read it
    /// instead of <see cref="Data"/>: q8_0/q4_0 in row-interleaved groups of 8 (<c>Kernels.MatMul.PackedQuantizedLayout</c>;
    /// the stored rows stay), f32/f16/bf16 in k-major 32-row panels (<c>Kernels.MatMul.FloatPanelLayout</c>; the panels
    /// replace the rows, and <see cref="Data"/> is 0 where the rows were freed). <c>ModelWeights.CopyRow</c> reads a row
    /// of either.
    /// </summary>
    public nint PackedData { get; }

    /// <summary>The bytes of row <paramref name="row"/> as stored; an error for a matrix whose rows were replaced by float panels.</summary>
    public ReadOnlySpan<byte> Row(int row)
    {
        if (Data == 0) throw new InvalidOperationException("The matrix's rows were replaced by the CPU's float panels; read a row with ModelWeights.CopyRow.");
        return new((byte*)Data + (long)row * RowSizeInBytes, RowSizeInBytes);
    }

    /// <summary>The whole matrix as floats; only for <see cref="WeightDType.F32"/>.</summary>
    public ReadOnlySpan<float> AsFloats()
    {
        if (DType != WeightDType.F32) throw new InvalidOperationException($"The matrix is {WeightDTypes.Name(DType)}, not f32.");
        if (Data == 0) throw new InvalidOperationException("The matrix's rows were replaced by the CPU's float panels; read a row with ModelWeights.CopyRow.");
        return new((void*)Data, checked(Rows * Cols));
    }
}
