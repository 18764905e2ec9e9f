using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// A test-only <see cref="IWeightSource"/> over float arrays: each tensor is copied into native memory so
/// <see cref="WeightTensor.Data"/> is a stable pointer, as it is for a memory-mapped file.
/// </summary>
internal sealed unsafe class TestWeights : IWeightSource
{
    private readonly Dictionary<string, WeightTensor> _tensors = new(StringComparer.Ordinal);
    private readonly List<nint> _allocations = new();

    public string Description => "test weights (in memory)";

    public IReadOnlyCollection<WeightTensor> Tensors => _tensors.Values;

    public void Add(string name, float[] data, params long[] shape)
    {
        long numElements = shape.Aggregate(1L, (a, b) => a * b);
        if (numElements != data.Length) throw new ArgumentException($"{name}: {data.Length} floats for shape [{string.Join(", ", shape)}].");
        nint pointer = (nint)NativeMemory.Alloc((nuint)data.Length, sizeof(float));
        _allocations.Add(pointer);
        data.AsSpan().CopyTo(new Span<float>((void*)pointer, data.Length));
        _tensors.Add(name, new WeightTensor(name, WeightDType.F32, shape, pointer, (long)data.Length * sizeof(float)));
    }

    public bool TryGetTensor(string name, out WeightTensor tensor) => _tensors.TryGetValue(name, out tensor!);

    public void Dispose()
    {
        foreach (var pointer in _allocations) NativeMemory.Free((void*)pointer);
        _allocations.Clear();
        _tensors.Clear();
    }
}
