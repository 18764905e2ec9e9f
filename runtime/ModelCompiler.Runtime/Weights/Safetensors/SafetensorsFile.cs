using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text.Json;

namespace ModelCompiler.Runtime.Weights.Safetensors;

/// <summary>
/// A single-file safetensors checkpoint (an 8-byte little-endian header length N, N bytes of JSON, then the
/// data) memory-mapped read-only. The header is parsed with <see cref="JsonDocument"/> (no reflection, so
/// Native-AOT safe) and every entry's <c>data_offsets</c> checked: inside the file, ordered, not overlapping,
/// and exactly shape × element size long. Hugging Face llama names are exposed under our checkpoint names
/// (<see cref="TensorNames"/>); the q/k rows are in Hugging Face's half rotary layout (<see cref="RopeConvention"/>).
/// Sharded checkpoints (<c>model.safetensors.index.json</c>) are not supported.
/// </summary>
public sealed unsafe class SafetensorsFile : IWeightSource
{
    /// <summary>The largest header accepted (the format's own limit is 100 MB).</summary>
    public const long MaxHeaderSizeInBytes = 100L * 1024 * 1024;

    private readonly MappedFile _map;
    private readonly List<WeightTensor> _tensors = new();
    private readonly Dictionary<string, WeightTensor> _byName = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (string FileName, string DType)> _unsupported = new(StringComparer.Ordinal);
    private bool _disposed;

    private SafetensorsFile(MappedFile map) { _map = map; }

    /// <summary>The <c>__metadata__</c> strings of the header.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; private set; } = new Dictionary<string, string>();

    /// <inheritdoc />
    public string Description => $"{_map.Path} (safetensors)";

    /// <inheritdoc />
    public IReadOnlyCollection<WeightTensor> Tensors => _tensors;

    /// <inheritdoc />
    public RopeStyle? RopeConvention => RopeStyle.Half;

    /// <summary>Looks a tensor up by our name or the file's; a tensor of an unsupported dtype is a <see cref="ModelLoadException"/> naming it.</summary>
    public bool TryGetTensor(string name, out WeightTensor tensor)
    {
        if (_byName.TryGetValue(name, out tensor!)) return true;
        if (_unsupported.TryGetValue(name, out var u))
            throw new ModelLoadException($"{_map.Path}: tensor '{u.FileName}' is {u.DType}, which this runtime cannot compute with (supported: F32, F16, BF16)");
        return false;
    }

    /// <summary>Opens, maps and validates <paramref name="path"/>.</summary>
    /// <exception cref="ModelLoadException">Missing, sharded, truncated, malformed JSON or inconsistent offsets.</exception>
    public static SafetensorsFile Open(string path)
    {
        if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase))
            throw new ModelLoadException($"{path}: sharded safetensors checkpoints (an index over several files) are not supported; merge the shards into one model.safetensors");
        var map = MappedFile.Open(path, "safetensors", minLength: 8 + 2);
        var file = new SafetensorsFile(map);
        try
        {
            file.Parse();
            return file;
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Checks what the file says about the model's sizes against <paramref name="config"/> (embedding shape, number
    /// of layers, classifier); the binder checks every other shape. Returns notes about harmless differences.
    /// </summary>
    public IReadOnlyList<string> CheckAgainst(ModelConfig config)
    {
        var problems = new List<string>();
        var notes = new List<string>();
        if (_byName.TryGetValue("tok_embeddings.weight", out var embedding) && embedding.Shape.Length == 2
            && (embedding.Shape[0] != config.VocabSize || embedding.Shape[1] != config.Dim))
            problems.Add($"model.embed_tokens.weight is [{embedding.Shape[0]}, {embedding.Shape[1]}] in the file but [vocabSize, dim] is [{config.VocabSize}, {config.Dim}] in the description");
        int numLayers = 0;
        while (_byName.ContainsKey($"layers.{numLayers}.attention_norm.weight")) numLayers++;
        if (numLayers != config.NumLayers)
            problems.Add($"the file has {numLayers} layers (model.layers.N.input_layernorm.weight) but numLayers is {config.NumLayers} in the description");
        bool hasHead = _byName.ContainsKey("output.weight") || _unsupported.ContainsKey("output.weight");
        if (!hasHead && !config.TiedEmbedding)
            problems.Add("the file has no lm_head.weight but the description says tiedEmbedding false");
        if (hasHead && config.TiedEmbedding)
            notes.Add($"{_map.Path}: lm_head.weight is ignored because the description ties the classifier to the embedding (as tie_word_embeddings does in Hugging Face)");
        if (problems.Count > 0) throw new ModelLoadException($"{_map.Path}: {string.Join("; ", problems)}");
        return notes;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _map.Dispose();
    }

    private ModelLoadException Error(string message) => new($"{_map.Path}: {message}");

    private void Parse()
    {
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(_map.Base, 8));
        if (headerLength > (ulong)(_map.Length - 8))
            throw Error($"truncated safetensors file: the header claims {headerLength} bytes, but only {_map.Length - 8} follow the length");
        if (headerLength > MaxHeaderSizeInBytes)
            throw Error($"safetensors header of {headerLength} bytes exceeds the format's limit of {MaxHeaderSizeInBytes}");
        long dataOffset = 8 + (long)headerLength;
        long dataSize = _map.Length - dataOffset;
        var headerBytes = new ReadOnlySpan<byte>(_map.Base + 8, (int)headerLength).ToArray();

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw Error($"safetensors header is not valid JSON ({e.Message})");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object) throw Error("safetensors header is not a JSON object");
            var entries = new List<(string Name, string DType, long[] Shape, long Begin, long End)>();
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__") { ReadMetadata(property.Value); continue; }
                entries.Add(ReadEntry(property.Name, property.Value, dataSize));
            }

            var sorted = entries.ToArray();
            Array.Sort(sorted, (a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            for (int i = 1; i < sorted.Length; i++)
                if (sorted[i].Begin < sorted[i - 1].End)
                    throw Error($"tensors '{sorted[i - 1].Name}' (bytes {sorted[i - 1].Begin}..{sorted[i - 1].End}) and '{sorted[i].Name}' (bytes {sorted[i].Begin}..{sorted[i].End}) overlap");

            foreach (var (fileName, dtypeName, shape, begin, end) in entries)
            {
                string name = TensorNames.FromHuggingFace(fileName) ?? fileName;
                WeightDType? dtype = dtypeName switch { "F32" => WeightDType.F32, "F16" => WeightDType.F16, "BF16" => WeightDType.BF16, _ => null };
                if (dtype is null)
                {
                    _unsupported.TryAdd(name, (fileName, dtypeName));
                    _unsupported.TryAdd(fileName, (fileName, dtypeName));
                    continue;
                }
                var tensor = new WeightTensor(name, dtype.Value, shape, (nint)(_map.Base + dataOffset + begin), end - begin);
                if (!_byName.TryAdd(name, tensor)) throw Error($"two tensors map to the name '{name}'");
                if (name != fileName) _byName.TryAdd(fileName, tensor);
                _tensors.Add(tensor);
            }
        }
    }

    private void ReadMetadata(JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Object) throw Error("safetensors __metadata__ is not an object");
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in element.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String) throw Error($"safetensors __metadata__ entry '{p.Name}' is not a string");
            metadata[p.Name] = p.Value.GetString()!;
        }
        Metadata = metadata;
    }

    private (string, string, long[], long, long) ReadEntry(string name, JsonElement entry, long dataSize)
    {
        if (entry.ValueKind != JsonValueKind.Object) throw Error($"safetensors entry '{name}' is not an object");
        if (!entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Error($"safetensors entry '{name}' has no string 'dtype'");
        if (!entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw Error($"safetensors entry '{name}' has no array 'shape'");
        if (!entry.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
            throw Error($"safetensors entry '{name}' has no 'data_offsets' [begin, end]");
        string dtype = dtypeElement.GetString()!;

        var shape = new long[shapeElement.GetArrayLength()];
        long numElements = 1;
        int d = 0;
        foreach (var dimension in shapeElement.EnumerateArray())
        {
            if (dimension.ValueKind != JsonValueKind.Number || !dimension.TryGetInt64(out long n) || n < 0)
                throw Error($"safetensors entry '{name}' has shape element {d} that is not a non-negative integer");
            if (n > 0 && numElements > long.MaxValue / n) throw Error($"safetensors entry '{name}' has a shape whose product overflows");
            shape[d++] = n;
            numElements *= n;
        }
        long[] offsets = new long[2];
        int i = 0;
        foreach (var o in offsetsElement.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out offsets[i]) || offsets[i] < 0)
                throw Error($"safetensors entry '{name}' has a data offset that is not a non-negative integer");
            i++;
        }
        long begin = offsets[0], end = offsets[1];
        if (begin > end) throw Error($"safetensors entry '{name}' has data_offsets [{begin}, {end}] that run backwards");
        if (end > dataSize) throw Error($"safetensors entry '{name}' ends at data byte {end}, past the end of the file ({dataSize} bytes of data)");
        int elementSize = dtype switch
        {
            "F64" or "I64" or "U64" => 8, "F32" or "I32" or "U32" => 4, "F16" or "BF16" or "I16" or "U16" => 2,
            "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1, _ => 0,
        };
        if (elementSize == 0) throw Error($"safetensors entry '{name}' has unknown dtype '{dtype}'");
        if (numElements > long.MaxValue / elementSize || numElements * elementSize != end - begin)
            throw Error(string.Format(CultureInfo.InvariantCulture, "safetensors entry '{0}' is {1} [{2}] ({3} bytes) but its data_offsets span {4} bytes",
                name, dtype, string.Join(", ", shape), numElements > long.MaxValue / elementSize ? "too many" : (numElements * elementSize).ToString(CultureInfo.InvariantCulture), end - begin));
        return (name, dtype, shape, begin, end);
    }
}
