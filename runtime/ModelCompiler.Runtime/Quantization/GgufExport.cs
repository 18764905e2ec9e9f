using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Tokenization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;

namespace ModelCompiler.Runtime.Quantization;

/// <summary>What <see cref="GgufExport.Write"/> wrote: each tensor's name in the file and stored type.</summary>
/// <param name="Architecture">The file's <c>general.architecture</c> (<c>llama</c> or <c>qwen2</c>).</param>
/// <param name="Tensors">Name and type of every tensor written, in file order.</param>
/// <param name="FallbackTensors">Tensors that could not be stored as the target type (rows not whole blocks) and were written as f16, as llama.cpp's converter does.</param>
/// <param name="VocabularySize">Tokens of the embedded vocabulary, or 0 when none was written.</param>
public sealed record GgufExportResult(string Architecture, IReadOnlyList<(string Name, WeightDType DType)> Tensors, IReadOnlyList<string> FallbackTensors, int VocabularySize = 0);

/// <summary>
/// Converts a model from any <see cref="IWeightSource"/> to a GGUF file as llama.cpp's converter writes one.
/// The architecture follows the model: <c>qwen2</c> when its q/k/v projections have biases
/// (<see cref="ModelConfig.QkvBias"/>), else <c>llama</c>; metadata goes under that prefix, tensors get
/// llama.cpp's names (q/k/v biases as <c>blk.N.attn_q.bias</c> etc.), and q/k rows (and their biases) are stored
/// in the rotary layout llama.cpp expects of the architecture: interleaved for llama (its converter permutes
/// Hugging Face rows), half for qwen2 (NeoX rotation, rows as Hugging Face stores them).
/// 2-D matrices (the embedding and classifier too, as llama.cpp does for q8_0) are stored as the target type;
/// 1-D tensors (norms, biases) stay f32; a matrix whose rows are not whole blocks of a quantized target falls
/// back to f16. With a tokenizer, its vocabulary is embedded (<see cref="GgufVocabulary"/>), so the file is
/// self-contained as llama.cpp's are.
/// </summary>
public static class GgufExport
{
    /// <summary>
    /// Reads every tensor of the model from <paramref name="source"/> and writes <paramref name="path"/>.
    /// The tensors written are the sources of <paramref name="weightSpecs"/> (an engine's weight table: exactly
    /// what the engine reads, explicit blocks included) or, without specs, the llama template's tensors for
    /// <paramref name="config"/> (q/k/v biases when <see cref="ModelConfig.QkvBias"/>, <c>output.weight</c> when untied).
    /// A tensor llama.cpp has no name for (an explicit block's own weights) keeps our name.
    /// </summary>
    /// <exception cref="ModelLoadException">A tensor is missing or has the wrong shape.</exception>
    public static GgufExportResult Write(IWeightSource source, ModelConfig config, WeightDType target, string path,
        IReadOnlyList<WeightSpec>? weightSpecs = null, Llama2cTokenizer? tokenizer = null)
    {
        // A bias the engine does not read would be dropped from the file just as the engine would drop it at run time.
        if (weightSpecs is not null) WeightBinder.CheckEveryBiasIsRead(weightSpecs, source);
        string arch = ArchitectureOf(config);
        var writer = new GgufWriter();
        writer.AddString("general.architecture", arch);
        writer.AddString("general.name", config.Name);
        writer.AddUInt32("general.file_type", FileType(target));
        if (WeightDTypes.IsBlockQuantized(target)) writer.AddUInt32("general.quantization_version", 2);
        writer.AddUInt32(arch + ".vocab_size", (uint)config.VocabSize);
        writer.AddUInt32(arch + ".context_length", (uint)config.MaxSeqLen);
        writer.AddUInt32(arch + ".embedding_length", (uint)config.Dim);
        writer.AddUInt32(arch + ".block_count", (uint)config.NumLayers);
        writer.AddUInt32(arch + ".feed_forward_length", (uint)config.HiddenDim);
        writer.AddUInt32(arch + ".rope.dimension_count", (uint)config.HeadDim);
        writer.AddUInt32(arch + ".attention.head_count", (uint)config.NumHeads);
        writer.AddUInt32(arch + ".attention.head_count_kv", (uint)config.NumKvHeads);
        writer.AddFloat32(arch + ".attention.layer_norm_rms_epsilon", config.NormEps);
        writer.AddFloat32(arch + ".rope.freq_base", config.RopeTheta);
        int vocabularySize = 0;
        if (tokenizer is not null)
        {
            if (tokenizer.VocabSize != config.VocabSize)
                throw new ModelLoadException($"the tokenizer has {tokenizer.VocabSize} tokens but the model's vocabSize is {config.VocabSize}");
            GgufVocabulary.Write(writer, tokenizer);
            vocabularySize = tokenizer.VocabSize;
        }

        // The source's own convention, or the engine's when the source has none (random or in-memory weights).
        RopeStyle sourceRope = source.RopeConvention ?? config.RopeStyle;
        RopeStyle fileRope = GgufFile.RopeConventionOf(arch);
        var written = new List<(string, WeightDType)>();
        var fallbacks = new List<string>();
        foreach (var (name, shape) in weightSpecs is null ? TemplateTensors(config) : SpecTensors(weightSpecs, source))
        {
            float[] values = ReadAsFloats(source, name, shape);
            int heads = TensorNames.IsQuery(name) ? config.NumHeads : TensorNames.IsKey(name) ? config.NumKvHeads : 0;
            if (heads > 0 && sourceRope != fileRope)
            {
                // A matrix's rows, or a bias's elements (rows of one), in the order the file's rotation expects.
                var permuted = new float[values.Length];
                int rowLength = shape.Length == 1 ? 1 : (int)shape[1];
                RopePermutation.PermuteRows(MemoryMarshal.AsBytes(values.AsSpan()), MemoryMarshal.AsBytes(permuted.AsSpan()), (int)shape[0], rowLength * sizeof(float), heads, sourceRope, fileRope);
                values = permuted;
            }
            string ggufName = TensorNames.ToGguf(name) ?? name;
            var dtype = shape.Length == 1 ? WeightDType.F32 : target;
            if (WeightDTypes.IsBlockQuantized(dtype) && shape[^1] % WeightDTypes.BlockSize(dtype) != 0)
            {
                dtype = WeightDType.F16;
                fallbacks.Add(ggufName);
            }
            var bytes = new byte[WeightDTypes.SizeInBytes(dtype, values.Length)];
            WeightConversion.Encode(values, dtype, bytes);
            writer.AddTensor(ggufName, dtype, shape, bytes);
            written.Add((ggufName, dtype));
        }
        writer.Write(path);
        return new GgufExportResult(arch, written, fallbacks, vocabularySize);
    }

    /// <summary>
    /// The llama.cpp architecture a model is written as: <c>qwen2</c> for the llama template with q/k/v biases
    /// (llama.cpp's Qwen2 is exactly that: biases, NeoX rotation), else <c>llama</c>.
    /// </summary>
    public static string ArchitectureOf(ModelConfig config) => config.QkvBias ? "qwen2" : "llama";

    /// <summary>llama.cpp's <c>llama_ftype</c> for a file whose matrices are <paramref name="dtype"/>.</summary>
    public static uint FileType(WeightDType dtype) => dtype switch
    {
        WeightDType.F32 => 0,   // LLAMA_FTYPE_ALL_F32
        WeightDType.F16 => 1,   // LLAMA_FTYPE_MOSTLY_F16
        WeightDType.Q4_0 => 2,  // LLAMA_FTYPE_MOSTLY_Q4_0
        WeightDType.Q8_0 => 7,  // LLAMA_FTYPE_MOSTLY_Q8_0
        WeightDType.BF16 => 32, // LLAMA_FTYPE_MOSTLY_BF16
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    // Our names and shapes of the llama template's tensors: q/k/v biases when the model has them, the
    // classifier only when it is untied. Must list everything the template's weight table reads.
    private static IEnumerable<(string Name, long[] Shape)> TemplateTensors(ModelConfig c)
    {
        yield return ("tok_embeddings.weight", new long[] { c.VocabSize, c.Dim });
        int qDim = c.NumHeads * c.HeadDim;
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"layers.{l}.";
            yield return (p + "attention_norm.weight", new long[] { c.Dim });
            yield return (p + "attention.wq.weight", new long[] { qDim, c.Dim });
            if (c.QkvBias) yield return (p + "attention.wq.bias", new long[] { qDim });
            yield return (p + "attention.wk.weight", new long[] { c.KvDim, c.Dim });
            if (c.QkvBias) yield return (p + "attention.wk.bias", new long[] { c.KvDim });
            yield return (p + "attention.wv.weight", new long[] { c.KvDim, c.Dim });
            if (c.QkvBias) yield return (p + "attention.wv.bias", new long[] { c.KvDim });
            yield return (p + "attention.wo.weight", new long[] { c.Dim, qDim });
            yield return (p + "ffn_norm.weight", new long[] { c.Dim });
            yield return (p + "feed_forward.w1.weight", new long[] { c.HiddenDim, c.Dim });
            yield return (p + "feed_forward.w2.weight", new long[] { c.Dim, c.HiddenDim });
            yield return (p + "feed_forward.w3.weight", new long[] { c.HiddenDim, c.Dim });
        }
        yield return ("norm.weight", new long[] { c.Dim });
        if (!c.TiedEmbedding) yield return ("output.weight", new long[] { c.VocabSize, c.Dim });
    }

    // Every source tensor of a weight table once, in table order, with the source's shape; whether the
    // pieces fit the table is checked when the written file is bound, as for any other file.
    private static IEnumerable<(string Name, long[] Shape)> SpecTensors(IReadOnlyList<WeightSpec> specs, IWeightSource source)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var ordered = new List<WeightSpec>(specs);
        ordered.Sort((a, b) => a.Index.CompareTo(b.Index));
        foreach (var spec in ordered)
        {
            foreach (var name in spec.Sources)
            {
                if (!seen.Add(name)) continue;
                if (!source.TryGetTensor(name, out var tensor))
                    throw new ModelLoadException($"weights file {source.Description} has no tensor '{name}' (needed for graph weight '{spec.Name}')");
                if (tensor.Shape.Length is not (1 or 2))
                    throw new ModelLoadException($"weights file {source.Description}: tensor '{name}' has {tensor.Shape.Length} dimensions; graph weights are vectors or matrices");
                yield return (name, (long[])tensor.Shape.Clone());
            }
        }
    }

    private static unsafe float[] ReadAsFloats(IWeightSource source, string name, long[] shape)
    {
        if (!source.TryGetTensor(name, out var tensor))
            throw new ModelLoadException($"weights file {source.Description} has no tensor '{name}'");
        bool same = tensor.Shape.Length == shape.Length;
        for (int i = 0; same && i < shape.Length; i++) same = tensor.Shape[i] == shape[i];
        if (!same)
            throw new ModelLoadException($"weights file {source.Description}: tensor '{name}' has shape [{string.Join(", ", tensor.Shape)}], the model needs [{string.Join(", ", shape)}]");
        var values = new float[checked((int)tensor.NumElements)];
        WeightConversion.Decode(new ReadOnlySpan<byte>((void*)tensor.Data, checked((int)tensor.SizeInBytes)), tensor.DType, values);
        return values;
    }
}
