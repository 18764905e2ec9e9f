using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// A llama2.c checkpoint (<c>run.c</c> format: a 7-int32 header, then f32 arrays stacked over layers),
/// memory-mapped read-only and exposed per layer under the Meta/llama2.c export names
/// (<c>layers.{i}.attention.wq.weight</c>, ...). The file size is checked against the header before
/// anything is mapped, so no tensor can point outside the file. The freq_cis tables are skipped: the
/// runtime computes rotary angles itself.
/// </summary>
public sealed unsafe class Llama2cCheckpoint : IWeightSource
{
    private readonly string _path;
    private readonly MappedFile _map;
    private readonly byte* _base;
    private readonly List<WeightTensor> _tensors = new();
    private readonly Dictionary<string, WeightTensor> _byName = new(StringComparer.Ordinal);

    private Llama2cCheckpoint(string path, Llama2cHeader header, MappedFile map)
    {
        _path = path;
        Header = header;
        _map = map;
        _base = map.Base;
        AddTensors();
    }

    /// <summary>The decoded header.</summary>
    public Llama2cHeader Header { get; }

    /// <inheritdoc />
    public string Description => $"{_path} (llama2.c)";

    /// <inheritdoc />
    public IReadOnlyCollection<WeightTensor> Tensors => _tensors;

    /// <inheritdoc />
    public RopeStyle? RopeConvention => RopeStyle.Interleaved;

    /// <inheritdoc />
    public bool TryGetTensor(string name, out WeightTensor tensor) => _byName.TryGetValue(name, out tensor!);

    /// <summary>
    /// Opens and maps <paramref name="path"/>. Throws <see cref="ModelLoadException"/> naming the file when it
    /// is missing, its header is not a llama2.c header, or its size is not exactly what the header implies.
    /// </summary>
    public static Llama2cCheckpoint Open(string path)
    {
        var map = MappedFile.Open(path, "llama2.c checkpoint", minLength: 1);
        try
        {
            var headerBytes = new ReadOnlySpan<byte>(map.Base, (int)Math.Min(map.Length, Llama2cHeader.SizeInBytes));
            if (!Llama2cHeader.TryParse(headerBytes, out var header, out var problem))
                throw new ModelLoadException($"{path}: not a llama2.c checkpoint ({problem})");

            long expected = header.ExpectedFileSizeInBytes;
            long found = map.Length;
            if (found < expected)
                throw new ModelLoadException($"{path}: truncated llama2.c checkpoint (expected {expected} bytes, found {found})");
            if (found > expected)
                throw new ModelLoadException($"{path}: llama2.c checkpoint has {found - expected} trailing bytes (expected {expected} bytes, found {found})");
            return new Llama2cCheckpoint(path, header, map);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Checks that the header agrees with a compiled model's description and throws a
    /// <see cref="ModelLoadException"/> naming every field that differs. A description may use a shorter
    /// context than the checkpoint's <c>seq_len</c> (to save KV memory) but not a longer one.
    /// </summary>
    public void CheckAgainst(ModelConfig config)
    {
        var problems = new List<string>();
        void Compare(string field, int inHeader, int inDescription)
        {
            if (inHeader != inDescription) problems.Add($"header says {field} {inHeader} but the description says {inDescription}");
        }

        Compare("dim", Header.Dim, config.Dim);
        Compare("hidden_dim", Header.HiddenDim, config.HiddenDim);
        Compare("n_layers", Header.NumLayers, config.NumLayers);
        Compare("n_heads", Header.NumHeads, config.NumHeads);
        Compare("n_kv_heads", Header.NumKvHeads, config.NumKvHeads);
        Compare("vocab_size", Header.VocabSize, config.VocabSize);
        if (config.MaxSeqLen > Header.MaxSeqLen)
            problems.Add($"header says seq_len {Header.MaxSeqLen} but the description says {config.MaxSeqLen}, longer than the checkpoint supports");
        if (Header.SharedClassifier != config.TiedEmbedding)
            problems.Add($"header says the classifier is {(Header.SharedClassifier ? "shared" : "not shared")} but the description says tiedEmbedding {(config.TiedEmbedding ? "true" : "false")}");

        if (problems.Count > 0) throw new ModelLoadException($"{_path}: {string.Join("; ", problems)}");
    }

    /// <inheritdoc />
    public void Dispose() => _map.Dispose();

    // Walks the file in run.c's memory_map_weights order; offsets are in bytes from the start of the file.
    private void AddTensors()
    {
        var h = Header;
        long offset = Llama2cHeader.SizeInBytes;
        int dim = h.Dim, kvDim = h.KvDim, hidden = h.HiddenDim, layers = h.NumLayers;

        Add("tok_embeddings.weight", h.VocabSize, dim);                        // [vocab, dim]
        AddPerLayer("attention_norm.weight", dim);                              // [L, dim]
        AddPerLayer("attention.wq.weight", dim, dim);                           // [L, dim, dim]
        AddPerLayer("attention.wk.weight", kvDim, dim);                         // [L, kvDim, dim]
        AddPerLayer("attention.wv.weight", kvDim, dim);                         // [L, kvDim, dim]
        AddPerLayer("attention.wo.weight", dim, dim);                           // [L, dim, dim]
        AddPerLayer("ffn_norm.weight", dim);                                    // [L, dim]
        AddPerLayer("feed_forward.w1.weight", hidden, dim);                     // [L, hidden, dim]
        AddPerLayer("feed_forward.w2.weight", dim, hidden);                     // [L, dim, hidden]
        AddPerLayer("feed_forward.w3.weight", hidden, dim);                     // [L, hidden, dim]
        Add("norm.weight", dim);                                                // [dim]
        offset += 2L * h.MaxSeqLen * (h.HeadDim / 2) * sizeof(float);           // freq_cis_real, freq_cis_imag: not exposed
        if (!h.SharedClassifier) Add("output.weight", h.VocabSize, dim);        // [vocab, dim]

        if (offset != h.ExpectedFileSizeInBytes)
            throw new InvalidOperationException($"Tensor walk ended at byte {offset}, but the header implies {h.ExpectedFileSizeInBytes}: the two layouts disagree.");

        void AddPerLayer(string suffix, params long[] shape)
        {
            for (int layer = 0; layer < layers; layer++) Add($"layers.{layer}.{suffix}", shape);
        }

        void Add(string name, params long[] shape)
        {
            long numElements = 1;
            foreach (var d in shape) numElements *= d;
            long sizeInBytes = numElements * sizeof(float);
            // Per-layer calls share one params array; each tensor gets its own copy.
            var tensor = new WeightTensor(name, WeightDType.F32, (long[])shape.Clone(), (nint)(_base + offset), sizeInBytes);
            _tensors.Add(tensor);
            _byName.Add(name, tensor);
            offset += sizeInBytes;
        }
    }
}
