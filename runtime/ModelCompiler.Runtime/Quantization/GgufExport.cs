using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;

namespace ModelCompiler.Runtime.Quantization;

/// <summary>What <see cref="GgufExport.WriteLlama"/> wrote: each tensor's llama.cpp name and stored type.</summary>
/// <param name="Tensors">Name and type of every tensor written, in file order.</param>
/// <param name="FallbackTensors">Tensors that could not be stored as the target type (rows not whole blocks) and were written as f16, as llama.cpp's converter does.</param>
public sealed record GgufExportResult(IReadOnlyList<(string Name, WeightDType DType)> Tensors, IReadOnlyList<string> FallbackTensors);

/// <summary>
/// Converts a llama-architecture model from any <see cref="IWeightSource"/> to a GGUF file as llama.cpp writes
/// one: llama.cpp tensor names, ggml layout, q/k rows in the interleaved rotary layout, <c>llama.*</c>
/// metadata. 2-D matrices (the embedding and classifier too, as llama.cpp does for q8_0) are stored as the
/// target type; 1-D norm weights stay f32; a matrix whose rows are not whole blocks of a quantized target
/// falls back to f16. Tokenizer metadata is not written (the engine reads its own tokenizer file).
/// </summary>
public static class GgufExport
{
    /// <summary>Reads every tensor of <paramref name="config"/>'s model from <paramref name="source"/> and writes <paramref name="path"/>.</summary>
    /// <exception cref="ModelLoadException">A tensor is missing or has the wrong shape.</exception>
    public static GgufExportResult WriteLlama(IWeightSource source, ModelConfig config, WeightDType target, string path)
    {
        var writer = new GgufWriter();
        writer.AddString("general.architecture", "llama");
        writer.AddString("general.name", config.Name);
        writer.AddUInt32("general.file_type", FileType(target));
        if (WeightDTypes.IsBlockQuantized(target)) writer.AddUInt32("general.quantization_version", 2);
        writer.AddUInt32("llama.vocab_size", (uint)config.VocabSize);
        writer.AddUInt32("llama.context_length", (uint)config.MaxSeqLen);
        writer.AddUInt32("llama.embedding_length", (uint)config.Dim);
        writer.AddUInt32("llama.block_count", (uint)config.NumLayers);
        writer.AddUInt32("llama.feed_forward_length", (uint)config.HiddenDim);
        writer.AddUInt32("llama.rope.dimension_count", (uint)config.HeadDim);
        writer.AddUInt32("llama.attention.head_count", (uint)config.NumHeads);
        writer.AddUInt32("llama.attention.head_count_kv", (uint)config.NumKvHeads);
        writer.AddFloat32("llama.attention.layer_norm_rms_epsilon", config.NormEps);
        writer.AddFloat32("llama.rope.freq_base", config.RopeTheta);

        // The source's own convention, or the engine's when the source has none (random or in-memory weights).
        RopeStyle sourceRope = source.RopeConvention ?? config.RopeStyle;
        var written = new List<(string, WeightDType)>();
        var fallbacks = new List<string>();
        foreach (var (name, shape) in LlamaTensors(config, source))
        {
            float[] values = ReadAsFloats(source, name, shape);
            int heads = TensorNames.IsQuery(name) ? config.NumHeads : TensorNames.IsKey(name) ? config.NumKvHeads : 0;
            if (heads > 0 && sourceRope != RopeStyle.Interleaved)
            {
                var permuted = new float[values.Length];
                RopePermutation.PermuteRows(MemoryMarshal.AsBytes(values.AsSpan()), MemoryMarshal.AsBytes(permuted.AsSpan()), (int)shape[0], (int)shape[1] * sizeof(float), heads, sourceRope, RopeStyle.Interleaved);
                values = permuted;
            }
            var dtype = shape.Length == 1 ? WeightDType.F32 : target;
            if (WeightDTypes.IsBlockQuantized(dtype) && shape[^1] % WeightDTypes.BlockSize(dtype) != 0)
            {
                dtype = WeightDType.F16;
                fallbacks.Add(TensorNames.ToGguf(name)!);
            }
            var bytes = new byte[WeightDTypes.SizeInBytes(dtype, values.Length)];
            WeightConversion.Encode(values, dtype, bytes);
            string ggufName = TensorNames.ToGguf(name)!;
            writer.AddTensor(ggufName, dtype, shape, bytes);
            written.Add((ggufName, dtype));
        }
        writer.Write(path);
        return new GgufExportResult(written, fallbacks);
    }

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

    // Our names and shapes of a llama model's tensors; the classifier only when it is untied.
    private static IEnumerable<(string Name, long[] Shape)> LlamaTensors(ModelConfig c, IWeightSource source)
    {
        yield return ("tok_embeddings.weight", new long[] { c.VocabSize, c.Dim });
        for (int l = 0; l < c.NumLayers; l++)
        {
            string p = $"layers.{l}.";
            yield return (p + "attention_norm.weight", new long[] { c.Dim });
            yield return (p + "attention.wq.weight", new long[] { c.NumHeads * c.HeadDim, c.Dim });
            yield return (p + "attention.wk.weight", new long[] { c.KvDim, c.Dim });
            yield return (p + "attention.wv.weight", new long[] { c.KvDim, c.Dim });
            yield return (p + "attention.wo.weight", new long[] { c.Dim, c.NumHeads * c.HeadDim });
            yield return (p + "ffn_norm.weight", new long[] { c.Dim });
            yield return (p + "feed_forward.w1.weight", new long[] { c.HiddenDim, c.Dim });
            yield return (p + "feed_forward.w2.weight", new long[] { c.Dim, c.HiddenDim });
            yield return (p + "feed_forward.w3.weight", new long[] { c.HiddenDim, c.Dim });
        }
        yield return ("norm.weight", new long[] { c.Dim });
        if (!c.TiedEmbedding) yield return ("output.weight", new long[] { c.VocabSize, c.Dim });
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
