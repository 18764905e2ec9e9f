using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// An <see cref="IWeightSource"/> over f32 tensors held in native memory that this object owns: for tests
/// and for random models of any shape without a file. The data is copied in at construction, so the
/// caller's arrays can be reused; pointers stay valid until <see cref="Dispose"/>.
/// </summary>
public sealed unsafe class InMemoryWeightSource : IWeightSource
{
    private readonly List<WeightTensor> _tensors = new();
    private readonly Dictionary<string, WeightTensor> _byName = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <summary>
    /// Copies every entry into native memory. Throws <see cref="ArgumentException"/> when a shape does not
    /// match its data's length or a name repeats.
    /// </summary>
    /// <param name="description">What this is, for messages.</param>
    /// <param name="entries">Tensors: checkpoint name, shape (outermost first), row-major data.</param>
    public InMemoryWeightSource(string description, IEnumerable<(string Name, long[] Shape, float[] Data)> entries)
    {
        Description = description;
        try
        {
            foreach (var (name, shape, data) in entries) Add(name, shape, data);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

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

    /// <summary>
    /// A Llama model with deterministic random weights under the llama2.c names that
    /// <see cref="Llama2cCheckpoint"/> exposes (<c>output.weight</c> only when the embedding is untied).
    /// Norm weights are uniform in [0.9, 1.1]; matrices uniform in ±0.02·√3 (standard deviation 0.02).
    /// The values depend only on the shapes and <paramref name="seed"/>, never on the machine.
    /// </summary>
    public static InMemoryWeightSource CreateRandomLlama(ModelConfig config, int seed)
    {
        var random = new SplitMix64((ulong)(uint)seed);
        int dim = config.Dim, kvDim = config.KvDim, hidden = config.HiddenDim, vocab = config.VocabSize;
        var entries = new List<(string, long[], float[])>();

        void Matrix(string name, int rows, int cols) => entries.Add((name, new long[] { rows, cols }, Fill(ref random, rows * cols, center: 0f, halfWidth: 0.02f * MathF.Sqrt(3f))));
        void Norm(string name) => entries.Add((name, new long[] { dim }, Fill(ref random, dim, center: 1f, halfWidth: 0.1f)));
        void Bias(string name, int n) => entries.Add((name, new long[] { n }, Fill(ref random, n, center: 0f, halfWidth: 0.1f)));

        Matrix("tok_embeddings.weight", vocab, dim);
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            string prefix = $"layers.{layer}.";
            Norm(prefix + "attention_norm.weight");
            Matrix(prefix + "attention.wq.weight", dim, dim);
            Matrix(prefix + "attention.wk.weight", kvDim, dim);
            Matrix(prefix + "attention.wv.weight", kvDim, dim);
            Matrix(prefix + "attention.wo.weight", dim, dim);
            if (config.QkvBias)
            {
                Bias(prefix + "attention.wq.bias", dim);
                Bias(prefix + "attention.wk.bias", kvDim);
                Bias(prefix + "attention.wv.bias", kvDim);
            }
            Norm(prefix + "ffn_norm.weight");
            Matrix(prefix + "feed_forward.w1.weight", hidden, dim);
            Matrix(prefix + "feed_forward.w2.weight", dim, hidden);
            Matrix(prefix + "feed_forward.w3.weight", hidden, dim);
        }
        Norm("norm.weight");
        if (!config.TiedEmbedding) Matrix("output.weight", vocab, dim);

        return new InMemoryWeightSource($"random {config.Name} (seed {seed})", entries);
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

    private void Add(string name, long[] shape, float[] data)
    {
        long numElements = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"Tensor '{name}' has a negative dimension.", nameof(shape));
            numElements *= d;
        }
        if (numElements != data.Length)
            throw new ArgumentException($"Tensor '{name}' has shape [{string.Join(", ", shape)}] ({numElements} elements) but {data.Length} values.", nameof(data));
        if (_byName.ContainsKey(name)) throw new ArgumentException($"Tensor '{name}' appears twice.", nameof(name));

        long sizeInBytes = numElements * sizeof(float);
        // The allocation ModelWeights.Allocate uses, so kernels see the same alignment and pages either way.
        var p = (float*)Interop.LargePages.Allocate((nuint)sizeInBytes);
        data.AsSpan().CopyTo(new Span<float>(p, data.Length));
        var tensor = new WeightTensor(name, WeightDType.F32, (long[])shape.Clone(), (nint)p, sizeInBytes);
        _tensors.Add(tensor);
        _byName.Add(name, tensor);
    }

    private static float[] Fill(ref SplitMix64 random, int count, float center, float halfWidth)
    {
        var values = new float[count];
        for (int i = 0; i < values.Length; i++) values[i] = center + halfWidth * (2f * random.NextFloat() - 1f);
        return values;
    }
}
