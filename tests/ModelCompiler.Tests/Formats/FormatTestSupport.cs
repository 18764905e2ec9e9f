using System.Runtime.InteropServices;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Tests.Formats;

/// <summary>Copies of weight sources with tensors transformed, and a source that claims a rotary convention.</summary>
internal static class FormatTestSupport
{
    /// <summary>Every tensor of <paramref name="source"/> decoded to f32, with <paramref name="transform"/> applied to q/k projections.</summary>
    public static unsafe List<(string Name, long[] Shape, float[] Data)> Entries(IWeightSource source, Func<string, long[], float[], float[]>? transform = null)
    {
        var entries = new List<(string, long[], float[])>();
        foreach (var t in source.Tensors)
        {
            var values = new float[t.NumElements];
            WeightConversion.Decode(new ReadOnlySpan<byte>((void*)t.Data, (int)t.SizeInBytes), t.DType, values);
            entries.Add((t.Name, t.Shape, transform is null ? values : transform(t.Name, t.Shape, values)));
        }
        return entries;
    }

    /// <summary>Reorders the q and k rows of a model in convention <paramref name="from"/> to <paramref name="to"/>.</summary>
    public static Func<string, long[], float[], float[]> PermuteQk(ModelConfig c, RopeStyle from, RopeStyle to) => (name, shape, values) =>
    {
        int heads = TensorNames.IsQuery(name) ? c.NumHeads : TensorNames.IsKey(name) ? c.NumKvHeads : 0;
        if (heads == 0) return values;
        var result = new float[values.Length];
        RopePermutation.PermuteRows(MemoryMarshal.AsBytes(values.AsSpan()), MemoryMarshal.AsBytes(result.AsSpan()), (int)shape[0], (int)shape[1] * 4, heads, from, to);
        return result;
    };
}

/// <summary>An in-memory source that reports a given rotary convention, as a file of that convention would.</summary>
internal sealed class ConventionSource(InMemoryWeightSource inner, RopeStyle? convention) : IWeightSource
{
    public string Description => inner.Description;
    public IReadOnlyCollection<WeightTensor> Tensors => inner.Tensors;
    public bool TryGetTensor(string name, out WeightTensor tensor) => inner.TryGetTensor(name, out tensor);
    public RopeStyle? RopeConvention => convention;
    public void Dispose() => inner.Dispose();
}
