using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Quantization;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// An <see cref="IWeightSource"/> that re-encodes the f32 matrices of another source as one
/// <see cref="WeightDType"/> (with <see cref="WeightConversion.Encode"/>), e.g. to benchmark random weights
/// in q8_0 without a file. Vectors (norm weights) stay f32, as the binder widens them anyway. A matrix
/// whose rows are not whole quantization blocks (Stories260K's <c>w2</c> has rows of 172 weights) cannot
/// be stored block-quantized and stays f32; <see cref="KeptAsF32"/> lists those. The converted bytes live
/// in native memory owned here; the inner source is disposed once converted.
/// </summary>
public sealed unsafe class ConvertedWeightSource : IWeightSource
{
    private readonly List<WeightTensor> _tensors = new();
    private readonly Dictionary<string, WeightTensor> _byName = new(StringComparer.Ordinal);
    private readonly List<string> _keptAsF32 = new();
    private bool _disposed;

    /// <summary>
    /// Converts every 2-D f32 tensor of <paramref name="source"/> to <paramref name="dtype"/>; copies the
    /// rest as they are. Takes ownership of <paramref name="source"/> and disposes it before returning
    /// (also on failure), so the f32 copy does not stay resident beside the converted one.
    /// </summary>
    public ConvertedWeightSource(IWeightSource source, WeightDType dtype)
    {
        DType = dtype;
        Description = $"{source.Description} as {WeightDTypes.Name(dtype)}";
        try
        {
            foreach (var tensor in source.Tensors) Add(tensor);
        }
        catch
        {
            Dispose();
            throw;
        }
        finally
        {
            source.Dispose();
        }
    }

    /// <summary>The type the matrices were converted to.</summary>
    public WeightDType DType { get; }

    /// <summary>Names of matrices that stayed f32 because their rows are not whole blocks of <see cref="DType"/>.</summary>
    public IReadOnlyList<string> KeptAsF32 => _keptAsF32;

    /// <inheritdoc />
    public string Description { get; }

    /// <inheritdoc />
    public IReadOnlyCollection<WeightTensor> Tensors => _tensors;

    /// <inheritdoc />
    public bool TryGetTensor(string name, out WeightTensor tensor) => _byName.TryGetValue(name, out tensor!);

    /// <inheritdoc />
    public void Release(string name)
    {
        if (!_byName.Remove(name, out var tensor)) return;
        _tensors.Remove(tensor);
        NativeMemory.AlignedFree((void*)tensor.Data);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var tensor in _tensors) NativeMemory.AlignedFree((void*)tensor.Data);
        _tensors.Clear();
        _byName.Clear();
    }

    private void Add(WeightTensor tensor)
    {
        var target = tensor.DType;
        if (tensor.DType == WeightDType.F32 && tensor.Shape.Length == 2 && DType != WeightDType.F32)
        {
            if (tensor.Shape[1] % WeightDTypes.BlockSize(DType) == 0) target = DType;
            else _keptAsF32.Add(tensor.Name);
        }
        long size = WeightDTypes.SizeInBytes(target, tensor.NumElements);
        // 64-byte alignment (2 MiB and huge pages when large), as ModelWeights.Allocate and InMemoryWeightSource use.
        var p = (byte*)Interop.LargePages.Allocate((nuint)size);
        var converted = tensor with { DType = target, Data = (nint)p, SizeInBytes = size, Shape = (long[])tensor.Shape.Clone() };
        _tensors.Add(converted);
        _byName.Add(converted.Name, converted);
        if (target == tensor.DType)
        {
            Buffer.MemoryCopy((void*)tensor.Data, p, size, size);
            return;
        }
        // Row by row, so a tensor larger than one span (2^31 bytes) converts too.
        int cols = checked((int)tensor.Shape[1]);
        long rows = tensor.Shape[0];
        long rowSize = WeightDTypes.SizeInBytes(target, cols);
        for (long r = 0; r < rows; r++)
        {
            var row = new ReadOnlySpan<float>((float*)tensor.Data + r * cols, cols);
            WeightConversion.Encode(row, target, new Span<byte>(p + r * rowSize, checked((int)rowSize)));
        }
    }
}
