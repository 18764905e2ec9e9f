using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace ModelCompiler.Runtime.Weights.Gguf;

/// <summary>One tensor's entry in a GGUF file's tensor table, whatever its type.</summary>
/// <param name="GgufName">The name in the file (llama.cpp's, <c>blk.0.attn_q.weight</c>).</param>
/// <param name="Name">Our checkpoint name (<c>layers.0.attention.wq.weight</c>), or the file's name when the table does not know it.</param>
/// <param name="GgmlType">The ggml type id.</param>
/// <param name="Shape">Outermost first (<c>[ne1, ne0]</c> for a matrix).</param>
/// <param name="Offset">Byte offset from the start of the data section.</param>
/// <param name="SizeInBytes">Bytes of data, or -1 for a type whose block layout is unknown.</param>
public sealed record GgufTensorInfo(string GgufName, string Name, uint GgmlType, long[] Shape, long Offset, long SizeInBytes);

/// <summary>
/// A GGUF file (versions 2 and 3, little-endian) memory-mapped read-only: metadata, the tensor table, and
/// the tensors of types the runtime computes with (f32, f16, bf16, q8_0, q4_0) under our checkpoint names
/// (<see cref="TensorNames"/>). Every length, count and offset is checked against the file before it is used:
/// a truncated or hostile file is a <see cref="ModelLoadException"/> naming the file and the problem. The q/k row
/// order (<see cref="RopeConvention"/>) follows the architecture, as llama.cpp writes it: interleaved for llama, half for qwen2.
/// </summary>
public sealed unsafe class GgufFile : IWeightSource
{
    /// <summary>The magic, "GGUF" in file order.</summary>
    public static ReadOnlySpan<byte> Magic => "GGUF"u8;

    /// <summary>The default <c>general.alignment</c>.</summary>
    public const uint DefaultAlignment = 32;

    private const int MaxDims = 4;                 // GGML_MAX_DIMS
    private const int MaxArrayNesting = 8;
    private const long MinTensorInfoSize = 8 + 4 + 8 + 4 + 8; // name length, n_dims, one dim, type, offset
    private const long MinKeyValueSize = 8 + 4 + 1;           // key length, type, a one-byte value

    private readonly MappedFile _map;
    private readonly List<WeightTensor> _tensors = new();
    private readonly Dictionary<string, WeightTensor> _byName = new(StringComparer.Ordinal);
    private readonly Dictionary<string, GgufTensorInfo> _unsupported = new(StringComparer.Ordinal);
    private bool _disposed;

    private GgufFile(MappedFile map)
    {
        _map = map;
        Metadata = new GgufMetadata();
        TensorInfos = Array.Empty<GgufTensorInfo>();
    }

    /// <summary>Format version (2 or 3).</summary>
    public uint Version { get; private set; }
    /// <summary>All key/value metadata.</summary>
    public GgufMetadata Metadata { get; }
    /// <summary>Data alignment in bytes (<c>general.alignment</c>, default 32).</summary>
    public uint Alignment { get; private set; } = DefaultAlignment;
    /// <summary>Offset of the data section from the start of the file.</summary>
    public long DataOffset { get; private set; }
    /// <summary>Every tensor of the file, in file order, supported types or not.</summary>
    public IReadOnlyList<GgufTensorInfo> TensorInfos { get; private set; }
    /// <summary>The file path.</summary>
    public string Path => _map.Path;

    /// <inheritdoc />
    public string Description => $"{_map.Path} (GGUF v{Version})";

    /// <inheritdoc />
    public IReadOnlyCollection<WeightTensor> Tensors => _tensors;

    /// <summary>
    /// How q/k rows are ordered for rotary embedding, from <c>general.architecture</c>
    /// (<see cref="RopeConventionOf"/>): interleaved for llama, half for qwen2.
    /// </summary>
    public RopeStyle? RopeConvention => RopeConventionOf(Architecture);

    /// <summary>The file's <c>general.architecture</c>, or "" when it has none.</summary>
    public string Architecture => Metadata.TryGetString("general.architecture", out string arch) ? arch : "";

    /// <summary>The architectures whose files this runtime reads: the llama family, in llama.cpp's names.</summary>
    public static IReadOnlyList<string> SupportedArchitectures { get; } = new[] { "llama", "qwen2" };

    /// <summary>
    /// The rotary row order of a llama.cpp architecture's files. llama.cpp's converter permutes a llama's q/k rows
    /// into Meta's interleaved layout (<c>LLAMA_ROPE_TYPE_NORM</c>); a qwen2's it stores as Hugging Face does and
    /// rotates halves (<c>LLAMA_ROPE_TYPE_NEOX</c>).
    /// </summary>
    public static RopeStyle RopeConventionOf(string architecture) => architecture == "qwen2" ? RopeStyle.Half : RopeStyle.Interleaved;

    /// <summary>
    /// Looks a tensor up by our name or by the file's name. A tensor of a type the runtime cannot compute with
    /// is a <see cref="ModelLoadException"/> naming it and its type (it is needed, so failing late would only hide why).
    /// </summary>
    public bool TryGetTensor(string name, out WeightTensor tensor)
    {
        if (_byName.TryGetValue(name, out tensor!)) return true;
        if (_unsupported.TryGetValue(name, out var info))
            throw new ModelLoadException($"{_map.Path}: tensor '{info.GgufName}' ({info.Name}) is {GgmlTypes.Name(info.GgmlType)}, which this runtime cannot compute with (supported: f32, f16, bf16, q8_0, q4_0)");
        return false;
    }

    /// <summary>Opens, maps and validates <paramref name="path"/>.</summary>
    /// <exception cref="ModelLoadException">Missing, not GGUF, an unsupported version, truncated, or inconsistent.</exception>
    public static GgufFile Open(string path)
    {
        var map = MappedFile.Open(path, "GGUF", minLength: 4 + 4 + 8 + 8);
        var file = new GgufFile(map);
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
    /// Checks the file against a compiled model's configuration. Values that change the computation (sizes,
    /// rotary base, norm epsilon, a missing untied classifier, missing q/k/v biases) are a <see cref="ModelLoadException"/>
    /// naming the field, the file's value and the description's; harmless differences (context length, name) are returned as notes.
    /// Metadata is read under the file's architecture prefix (<c>llama.</c>, <c>qwen2.</c>).
    /// </summary>
    public IReadOnlyList<string> CheckAgainst(ModelConfig config)
    {
        var problems = new List<string>();
        var notes = new List<string>();
        string arch = Architecture;
        if (arch.Length == 0)
            throw new ModelLoadException($"{Path}: GGUF file has no general.architecture; this engine runs {string.Join(" or ", SupportedArchitectures)}");
        if (!((IList<string>)SupportedArchitectures).Contains(arch))
            throw new ModelLoadException($"{Path}: general.architecture is '{arch}' in the file, but this engine runs {string.Join(" or ", SupportedArchitectures)}");

        void CompareInt(string suffix, long? fallback, int expected, string field)
        {
            string key = arch + "." + suffix;
            long value;
            if (Metadata.TryGetInteger(key, out long v)) value = v;
            else if (fallback is { } f) value = f;
            else { problems.Add($"{key} is missing (the description says {field} {expected})"); return; }
            if (value != expected) problems.Add($"{key} is {value} in the file but {field} is {expected} in the description");
        }
        void CompareFloat(string suffix, double fallback, double expected, string field)
        {
            string key = arch + "." + suffix;
            double value = Metadata.TryGetNumber(key, out double v) ? v : fallback;
            // Stored as f32; compare at f32 precision so 1e-5 written by either side matches.
            if (Math.Abs(value - expected) > 1e-6 * Math.Max(Math.Abs(expected), 1e-30))
                problems.Add(string.Format(CultureInfo.InvariantCulture, "{0} is {1:R} in the file but {2} is {3:R} in the description", key, (float)value, field, (float)expected));
        }

        CompareInt("embedding_length", null, config.Dim, "dim");
        CompareInt("block_count", null, config.NumLayers, "numLayers");
        CompareInt("attention.head_count", null, config.NumHeads, "numHeads");
        long heads = Metadata.TryGetInteger(arch + ".attention.head_count", out long h) ? h : config.NumHeads;
        CompareInt("attention.head_count_kv", heads, config.NumKvHeads, "numKvHeads");
        CompareInt("feed_forward_length", null, config.HiddenDim, "hiddenDim");
        CompareFloat("rope.freq_base", 10000.0, config.RopeTheta, "ropeTheta");
        CompareFloat("attention.layer_norm_rms_epsilon", 1e-5, config.NormEps, "normEps");
        if (Metadata.TryGetInteger(arch + ".rope.dimension_count", out long ropeDims) && ropeDims != config.HeadDim)
            problems.Add($"{arch}.rope.dimension_count is {ropeDims} in the file, but the engine rotates whole heads of {config.HeadDim} (partial rotary is not supported)");
        if (Metadata.TryGetValue(arch + ".rope.scaling.type", out _, out var scaling) && scaling is string scalingType && scalingType is not ("none" or ""))
            problems.Add($"{arch}.rope.scaling.type is '{scalingType}' in the file; rotary scaling is not supported");
        if (_byName.ContainsKey("rope_freqs.weight") || _unsupported.ContainsKey("rope_freqs.weight"))
            problems.Add("the file has rope_freqs.weight (per-frequency rotary scaling, as Llama 3.1 uses); rotary scaling is not supported");
        if (config.QkvBias && FirstMissingBias(config.NumLayers) is string missing)
            problems.Add($"the description says qkvBias true but the file has no {missing} (a file without q/k/v biases would compute a different model)");
        if (_byName.TryGetValue("tok_embeddings.weight", out var embedding) || _unsupported.ContainsKey("tok_embeddings.weight"))
        {
            long rows = embedding?.Shape[0] ?? _unsupported["tok_embeddings.weight"].Shape[0];
            if (rows != config.VocabSize) problems.Add($"token_embd.weight has {rows} rows (the vocabulary size) in the file but vocabSize is {config.VocabSize} in the description");
        }
        bool hasOutput = _byName.ContainsKey("output.weight") || _unsupported.ContainsKey("output.weight");
        if (!hasOutput && !config.TiedEmbedding)
            problems.Add("the file has no output.weight (its classifier is the token embedding) but the description says tiedEmbedding false");
        if (hasOutput && config.TiedEmbedding)
        {
            // llama.cpp would use the file's own classifier; a tied engine reads the embedding instead.
            // Harmless when they are the same bytes (some converters write both), wrong otherwise.
            if (_byName.TryGetValue("output.weight", out var head) && embedding is not null && SameBytes(head, embedding))
                notes.Add($"{Path}: output.weight equals token_embd.weight; using the tied classifier");
            else
                problems.Add("the file has its own output.weight, different from token_embd.weight, but the description says tiedEmbedding true, so the engine would ignore it (compile a description with tiedEmbedding false for this file)");
        }

        if (Metadata.TryGetInteger(arch + ".context_length", out long context) && context != config.MaxSeqLen)
            notes.Add($"{Path}: {arch}.context_length is {context} in the file, the description's maxSeqLen is {config.MaxSeqLen}; using {config.MaxSeqLen}");
        if (Metadata.TryGetString("general.name", out string name) && name != config.Name)
            notes.Add($"{Path}: general.name is '{name}' in the file, the model is '{config.Name}'");

        if (problems.Count > 0) throw new ModelLoadException($"{Path}: {string.Join("; ", problems)}");
        return notes;
    }

    // llama.cpp's name of the first q/k/v bias the file lacks, or null when every layer has all three.
    private string? FirstMissingBias(int numLayers)
    {
        for (int layer = 0; layer < numLayers; layer++)
            foreach (var suffix in new[] { "attn_q.bias", "attn_k.bias", "attn_v.bias" })
            {
                string ggufName = $"blk.{layer}.{suffix}";
                if (!_byName.ContainsKey(ggufName) && !_unsupported.ContainsKey(ggufName)) return ggufName;
            }
        return null;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _map.Dispose();
    }

    private void Parse()
    {
        var c = new ByteCursor(_map.Base, _map.Length, _map.Path, "GGUF");
        if (!c.Bytes(4, "the magic").SequenceEqual(Magic))
            throw c.Error("not a GGUF file (the first four bytes are not 'GGUF')");
        uint version = c.U32("the version");
        if (version == 1) throw c.Error("GGUF version 1 is not supported (it predates 64-bit counts); convert the model again with a current llama.cpp");
        if (version is not (2 or 3))
        {
            string hint = (version & 0xFFFF) == 0 ? " (a big-endian file? only little-endian GGUF is supported)" : "";
            throw c.Error($"unsupported GGUF version {version}{hint}; this reader knows versions 2 and 3");
        }
        Version = version;
        ulong numTensors = c.U64("the tensor count");
        ulong numKeyValues = c.U64("the metadata count");
        // Each entry takes some bytes, so a count the rest of the file cannot hold is a lie: reject it before allocating.
        if (numKeyValues > (ulong)(c.Remaining / MinKeyValueSize))
            throw c.Error($"GGUF header claims {numKeyValues} metadata entries, more than the {c.Remaining} remaining bytes can hold");
        if (numTensors > (ulong)(c.Remaining / MinTensorInfoSize))
            throw c.Error($"GGUF header claims {numTensors} tensors, more than the {c.Remaining} remaining bytes can hold");

        for (ulong i = 0; i < numKeyValues; i++)
        {
            string key = ReadString(ref c, $"metadata key {i}");
            var type = (GgufValueType)c.U32($"the type of metadata '{key}'");
            object value = ReadValue(ref c, type, key, 0);
            if (!Metadata.TryAdd(key, type, value)) throw c.Error($"metadata key '{key}' appears twice");
        }

        if (Metadata.TryGetValue("general.alignment", out var alignType, out var alignValue))
        {
            if (alignValue is not uint a) throw c.Error($"general.alignment must be a uint32, found {alignType}");
            if (a == 0 || (a & (a - 1)) != 0) throw c.Error($"general.alignment is {a}, not a power of two");
            Alignment = a;
        }

        var infos = new GgufTensorInfo[(int)numTensors];
        for (int i = 0; i < infos.Length; i++) infos[i] = ReadTensorInfo(ref c, i);
        long dataOffset = AlignUp(c.Position, Alignment);
        if (infos.Length > 0 && dataOffset > _map.Length)
            throw c.Error($"truncated GGUF file: the data section would start at {dataOffset}, but the file ends at {_map.Length}");
        DataOffset = dataOffset;
        TensorInfos = infos;
        PlaceTensors(infos, c);
    }

    private GgufTensorInfo ReadTensorInfo(ref ByteCursor c, int index)
    {
        string ggufName = ReadString(ref c, $"the name of tensor {index}");
        uint numDims = c.U32($"the dimension count of tensor '{ggufName}'");
        if (numDims is 0 or > MaxDims) throw c.Error($"tensor '{ggufName}' has {numDims} dimensions; GGUF allows 1 to {MaxDims}");
        var ne = new long[numDims];
        long numElements = 1;
        for (int d = 0; d < ne.Length; d++)
        {
            ulong n = c.U64($"dimension {d} of tensor '{ggufName}'");
            if (n == 0 || n > long.MaxValue) throw c.Error($"tensor '{ggufName}' has dimension {d} of {n}");
            ne[d] = (long)n;
            if (numElements > long.MaxValue / ne[d]) throw c.Error($"tensor '{ggufName}' has dimensions [{string.Join(", ", ne[..(d + 1)])}] whose product overflows");
            numElements *= ne[d];
        }
        uint type = c.U32($"the type of tensor '{ggufName}'");
        ulong offset = c.U64($"the offset of tensor '{ggufName}'");
        if (offset > long.MaxValue) throw c.Error($"tensor '{ggufName}' has offset {offset}, past any file");

        long size = -1;
        if (GgmlTypes.TryGetBlockLayout(type, out int blockSize, out int bytesPerBlock))
        {
            if (ne[0] % blockSize != 0)
                throw c.Error($"tensor '{ggufName}' is {GgmlTypes.Name(type)} with rows of {ne[0]} elements, not whole blocks of {blockSize}");
            long numBlocks = numElements / blockSize;
            if (numBlocks > long.MaxValue / bytesPerBlock) throw c.Error($"tensor '{ggufName}' size in bytes overflows");
            size = numBlocks * bytesPerBlock;
        }
        var shape = new long[ne.Length];
        for (int d = 0; d < ne.Length; d++) shape[d] = ne[ne.Length - 1 - d];
        string name = TensorNames.FromGguf(ggufName) ?? ggufName;
        return new GgufTensorInfo(ggufName, name, type, shape, (long)offset, size);
    }

    // Checks alignment, bounds and overlap, then exposes the tensors of supported types.
    private void PlaceTensors(GgufTensorInfo[] infos, ByteCursor c)
    {
        long dataSize = _map.Length - DataOffset;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var info in infos)
        {
            if (!seen.Add(info.GgufName)) throw c.Error($"tensor '{info.GgufName}' appears twice");
            if (info.Offset % Alignment != 0)
                throw c.Error($"tensor '{info.GgufName}' has offset {info.Offset}, not a multiple of the alignment {Alignment}");
            if (info.Offset > dataSize || (info.SizeInBytes >= 0 && info.SizeInBytes > dataSize - info.Offset))
                throw c.Error($"tensor '{info.GgufName}' ({Math.Max(info.SizeInBytes, 0)} bytes at data offset {info.Offset}) ends past the end of the file ({dataSize} bytes of data)");
        }

        var sorted = (GgufTensorInfo[])infos.Clone();
        Array.Sort(sorted, (a, b) => a.Offset.CompareTo(b.Offset));
        for (int i = 1; i < sorted.Length; i++)
        {
            var previous = sorted[i - 1];
            // A tensor of unknown size cannot be checked; it is never exposed as data either.
            if (previous.SizeInBytes > 0 && sorted[i].Offset < previous.Offset + previous.SizeInBytes)
                throw c.Error($"tensors '{previous.GgufName}' (data offset {previous.Offset}, {previous.SizeInBytes} bytes) and '{sorted[i].GgufName}' (data offset {sorted[i].Offset}) overlap");
        }

        foreach (var info in infos)
        {
            if (!GgmlTypes.TryToWeightDType(info.GgmlType, out var dtype))
            {
                _unsupported.TryAdd(info.Name, info);
                _unsupported.TryAdd(info.GgufName, info);
                continue;
            }
            var tensor = new WeightTensor(info.Name, dtype, info.Shape, (nint)(_map.Base + DataOffset + info.Offset), info.SizeInBytes);
            if (!_byName.TryAdd(info.Name, tensor)) throw c.Error($"tensors map to the same name '{info.Name}'");
            if (info.GgufName != info.Name) _byName.TryAdd(info.GgufName, tensor);
            _tensors.Add(tensor);
        }
    }

    private static long AlignUp(long value, uint alignment) => (value + alignment - 1) / alignment * alignment;

    private static string ReadString(ref ByteCursor c, string what)
    {
        ulong length = c.U64($"the length of {what}");
        if (length > (ulong)c.Remaining)
            throw c.Error($"truncated GGUF file: {what} is {length} bytes long at offset {c.Position}, but the file ends at {c.Length}");
        return Encoding.UTF8.GetString(c.Bytes((long)length, what));
    }

    private static object ReadValue(ref ByteCursor c, GgufValueType type, string key, int depth)
    {
        string what = $"the value of metadata '{key}'";
        switch (type)
        {
            case GgufValueType.UInt8: return c.U8(what);
            case GgufValueType.Int8: return (sbyte)c.U8(what);
            case GgufValueType.UInt16: return c.U16(what);
            case GgufValueType.Int16: return (short)c.U16(what);
            case GgufValueType.UInt32: return c.U32(what);
            case GgufValueType.Int32: return (int)c.U32(what);
            case GgufValueType.Float32: return c.F32(what);
            case GgufValueType.Bool:
                byte b = c.U8(what);
                if (b > 1) throw c.Error($"metadata '{key}' is a bool with byte value {b}");
                return b == 1;
            case GgufValueType.String: return ReadString(ref c, what);
            case GgufValueType.UInt64: return c.U64(what);
            case GgufValueType.Int64: return (long)c.U64(what);
            case GgufValueType.Float64: return c.F64(what);
            case GgufValueType.Array: return ReadArray(ref c, key, depth);
            default: throw c.Error($"metadata '{key}' has unknown value type {(uint)type}");
        }
    }

    private static GgufArray ReadArray(ref ByteCursor c, string key, int depth)
    {
        if (depth >= MaxArrayNesting) throw c.Error($"metadata '{key}' nests arrays deeper than {MaxArrayNesting} levels");
        var elementType = (GgufValueType)c.U32($"the element type of metadata array '{key}'");
        ulong count = c.U64($"the length of metadata array '{key}'");
        long minElementSize = elementType switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
            GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
            GgufValueType.Array => 12,
            _ => throw c.Error($"metadata array '{key}' has unknown element type {(uint)elementType}"),
        };
        if (count > (ulong)(c.Remaining / minElementSize) || count > int.MaxValue)
            throw c.Error($"metadata array '{key}' claims {count} elements, more than the {c.Remaining} remaining bytes can hold");
        int n = (int)count;
        Array values = elementType switch
        {
            GgufValueType.UInt8 => new byte[n],
            GgufValueType.Int8 => new sbyte[n],
            GgufValueType.UInt16 => new ushort[n],
            GgufValueType.Int16 => new short[n],
            GgufValueType.UInt32 => new uint[n],
            GgufValueType.Int32 => new int[n],
            GgufValueType.Float32 => new float[n],
            GgufValueType.Bool => new bool[n],
            GgufValueType.String => new string[n],
            GgufValueType.UInt64 => new ulong[n],
            GgufValueType.Int64 => new long[n],
            GgufValueType.Float64 => new double[n],
            _ => new GgufArray[n],
        };
        for (int i = 0; i < n; i++)
        {
            object item = ReadValue(ref c, elementType, key, depth + 1);
            // AOT-safe: each case stores into its own typed array (no Array.SetValue reflection). Switched on the
            // element type, not the array's: the CLR lets an int[] pass as uint[] (and sbyte[] as byte[]), so a
            // type pattern would pick the wrong case and the unboxing cast would throw.
            switch (elementType)
            {
                case GgufValueType.UInt8: ((byte[])values)[i] = (byte)item; break;
                case GgufValueType.Int8: ((sbyte[])values)[i] = (sbyte)item; break;
                case GgufValueType.UInt16: ((ushort[])values)[i] = (ushort)item; break;
                case GgufValueType.Int16: ((short[])values)[i] = (short)item; break;
                case GgufValueType.UInt32: ((uint[])values)[i] = (uint)item; break;
                case GgufValueType.Int32: ((int[])values)[i] = (int)item; break;
                case GgufValueType.Float32: ((float[])values)[i] = (float)item; break;
                case GgufValueType.Bool: ((bool[])values)[i] = (bool)item; break;
                case GgufValueType.String: ((string[])values)[i] = (string)item; break;
                case GgufValueType.UInt64: ((ulong[])values)[i] = (ulong)item; break;
                case GgufValueType.Int64: ((long[])values)[i] = (long)item; break;
                case GgufValueType.Float64: ((double[])values)[i] = (double)item; break;
                default: ((GgufArray[])values)[i] = (GgufArray)item; break;
            }
        }
        return new GgufArray(elementType, values);
    }

    private static unsafe bool SameBytes(WeightTensor a, WeightTensor b)
    {
        if (a.DType != b.DType || a.SizeInBytes != b.SizeInBytes || !a.Shape.AsSpan().SequenceEqual(b.Shape)) return false;
        for (long offset = 0; offset < a.SizeInBytes; offset += int.MaxValue)
        {
            int length = (int)Math.Min(int.MaxValue, a.SizeInBytes - offset);
            if (!new ReadOnlySpan<byte>((byte*)a.Data + offset, length).SequenceEqual(new ReadOnlySpan<byte>((byte*)b.Data + offset, length))) return false;
        }
        return true;
    }
}
