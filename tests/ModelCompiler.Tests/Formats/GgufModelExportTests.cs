using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;
using ModelCompiler.Tests.Engine;
using Xunit;
using Xunit.Abstractions;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.Formats;

/// <summary>
/// GGUF export of models beyond Stories260K's shape: the Qwen2-shaped TinyQwen (q/k/v biases, half rotation, written as
/// llama.cpp's <c>qwen2</c>), and an explicit block with an untied classifier written from its engine's weight table.
/// Each file is read back through <see cref="WeightFiles.OpenChecked"/> and run by the generated engine; its logits are
/// compared with the same engine on the f32 weights in memory (f32 within 1e-5; other types by the documented bounds
/// of <see cref="QuantizationAccuracyTests"/>).
/// </summary>
public class GgufModelExportTests(ITestOutputHelper output)
{
    private static readonly ModelConfig Qwen = new TinyQwenEngine().Config;

    // The documented bounds (QuantizationAccuracyTests.Bounds), except q4_0's top-1: random weights give flatter logits
    // than a trained model (small top-2 margins), so 4-bit rounding flips more argmaxes while the distributions stay close.
    // Measured (40 positions, seed 21): f16 100 % / 4.3e-7, bf16 100 % / 2.6e-5, q8_0 100 % / 4.3e-4, q4_0 60 % / 4.7e-2.
    public static TheoryData<string, double, double> Bounds => new()
    {
        { "f32", 1.0, 1e-9 },
        { "f16", 0.99, 1e-5 },
        { "bf16", 0.97, 3e-4 },
        { "q8_0", 0.95, 3e-3 },
        { "q4_0", 0.5, 0.2 },
    };

    [Theory]
    [MemberData(nameof(Bounds))]
    public void Qwen2_shaped_model_round_trips_with_its_biases_within_the_dtype_bounds(string dtypeName, double minTop1, double maxKl)
    {
        Assert.True(WeightDTypes.TryParse(dtypeName, out var dtype));
        var engine = new TinyQwenEngine();
        int[] tokens = Tokens(Qwen, 40, seed: 3);
        float[] expected = RunAll(engine, StrongRandomWeights(Qwen, seed: 21), tokens);

        using var file = new TempFile(".gguf");
        GgufExportResult result;
        using (var source = StrongRandomWeights(Qwen, seed: 21)) result = GgufExport.Write(source, Qwen, dtype, file.Path, engine.WeightSpecs);
        Assert.Equal("qwen2", result.Architecture);
        Assert.Contains(("blk.1.attn_k.bias", WeightDType.F32), result.Tensors);

        float[] actual = RunAll(engine, WeightFiles.OpenChecked(file.Path, Qwen, out var notes), tokens);
        Assert.Empty(notes);
        var (top1, kl, maxAbs) = Compare(expected, actual, Qwen.VocabSize);
        output.WriteLine($"TinyQwen {dtypeName}: top-1 {top1:P1}, mean KL {kl:E2}, max |Δlogit| {maxAbs:E2}");
        if (dtype == WeightDType.F32) Assert.True(maxAbs <= 1e-5, $"f32 file: max |Δlogit| {maxAbs:E2}");
        Assert.True(top1 >= minTop1, $"{dtypeName}: top-1 agreement {top1:P1} below {minTop1:P0}");
        Assert.True(kl <= maxKl, $"{dtypeName}: mean KL {kl:E2} above {maxKl:E0}");
    }

    [Fact]
    public void Qwen2_file_has_llama_cpp_names_metadata_and_the_biases_bit_for_bit()
    {
        using var file = new TempFile(".gguf");
        using (var source = StrongRandomWeights(Qwen, seed: 5)) GgufExport.Write(source, Qwen, WeightDType.Q8_0, file.Path, new TinyQwenEngine().WeightSpecs);
        using var gguf = GgufFile.Open(file.Path);
        Assert.Equal("qwen2", gguf.Architecture);
        Assert.Equal(RopeStyle.Half, gguf.RopeConvention); // llama.cpp rotates qwen2 by halves and does not permute its rows
        Assert.True(gguf.Metadata.TryGetNumber("qwen2.rope.freq_base", out double theta) && theta == 1e6);
        Assert.True(gguf.Metadata.TryGetNumber("qwen2.attention.layer_norm_rms_epsilon", out double eps) && (float)eps == 1e-6f);
        Assert.True(gguf.Metadata.TryGetInteger("qwen2.attention.head_count_kv", out long kvHeads) && kvHeads == 2);
        Assert.False(gguf.Metadata.TryGetValue("llama.block_count", out _, out _));
        Assert.False(gguf.TryGetTensor("output.weight", out _)); // tied
        using var source2 = StrongRandomWeights(Qwen, seed: 5);
        foreach (var name in new[] { "attn_q.bias", "attn_k.bias", "attn_v.bias" })
        {
            for (int layer = 0; layer < Qwen.NumLayers; layer++)
            {
                Assert.True(gguf.TryGetTensor($"blk.{layer}.{name}", out var stored), $"blk.{layer}.{name}");
                Assert.Equal(WeightDType.F32, stored.DType);
                Assert.True(source2.TryGetTensor(stored.Name, out var original));
                Assert.Equal(Floats(original), Floats(stored)); // the file's half layout is the engine's: no reordering
            }
        }
    }

    [Fact]
    public void Biases_follow_their_rows_when_the_source_is_in_the_other_rotary_layout()
    {
        // The same TinyQwen weights as a llama2.c/GGUF-layout (interleaved) source: q/k rows and their biases permuted.
        // Writing a qwen2 file permutes them back to halves; the logits must equal the in-memory half-layout model's.
        var engine = new TinyQwenEngine();
        int[] tokens = Tokens(Qwen, 24, seed: 8);
        float[] expected = RunAll(engine, StrongRandomWeights(Qwen, seed: 13), tokens);
        using var file = new TempFile(".gguf");
        using (var half = StrongRandomWeights(Qwen, seed: 13))
        using (var interleaved = new ConventionSource(new InMemoryWeightSource("interleaved", FormatTestSupport.Entries(half, PermuteQkAndBiases(Qwen, RopeStyle.Half, RopeStyle.Interleaved))), RopeStyle.Interleaved))
            GgufExport.Write(interleaved, Qwen, WeightDType.F32, file.Path, engine.WeightSpecs);
        float[] actual = RunAll(engine, WeightFiles.OpenChecked(file.Path, Qwen, out _), tokens);
        Assert.True(Compare(expected, actual, Qwen.VocabSize).MaxAbs <= 1e-5);
    }

    [Fact]
    public void A_file_without_the_biases_the_description_needs_is_an_error_naming_the_tensor()
    {
        using var file = new TempFile(".gguf");
        using (var source = StrongRandomWeights(Qwen, seed: 1))
            GgufExport.Write(source, Qwen with { QkvBias = false }, WeightDType.F16, file.Path); // a llama file: no biases
        var e = Assert.Throws<ModelLoadException>(() => WeightFiles.OpenChecked(file.Path, Qwen, out _).Dispose());
        Assert.Contains("qkvBias true but the file has no blk.0.attn_q.bias", e.Message);

        // Bound directly (no metadata check), the binder names the missing tensor too.
        using var gguf = GgufFile.Open(file.Path);
        var bind = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind(new TinyQwenEngine().WeightSpecs, gguf, Qwen));
        Assert.Contains("no tensor 'layers.0.attention.wq.bias'", bind.Message);
    }

    [Fact]
    public void Biases_an_engine_does_not_read_are_an_error_not_silently_dropped()
    {
        using var file = new TempFile(".gguf");
        using (var source = StrongRandomWeights(Qwen, seed: 1)) GgufExport.Write(source, Qwen, WeightDType.F32, file.Path);
        // TinyQwen's weight table without its bias entries: an engine compiled with qkvBias false.
        var withoutBiases = new TinyQwenEngine().WeightSpecs.Where(s => !s.Sources.Any(n => n.EndsWith(".bias"))).Select((s, i) => s with { Index = i }).ToArray();
        Assert.True(withoutBiases.Length < new TinyQwenEngine().WeightSpecs.Count);
        using var gguf = GgufFile.Open(file.Path);
        var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind(withoutBiases, gguf, Qwen with { QkvBias = false }));
        Assert.Contains("'layers.0.attention.wk.bias'", e.Message);
        Assert.Contains("qkvBias true", e.Message);
        using var file2 = new TempFile(".gguf");
        using var source2 = StrongRandomWeights(Qwen, seed: 1);
        Assert.Throws<ModelLoadException>(() => GgufExport.Write(source2, Qwen with { QkvBias = false }, WeightDType.F32, file2.Path, withoutBiases));
    }

    [Fact]
    public void An_explicit_block_with_an_untied_head_is_written_from_its_weight_table()
    {
        var engine = new TinyExplicitEngine();
        var c = engine.Config;
        Assert.False(c.TiedEmbedding);
        int[] tokens = Tokens(c, 30, seed: 4);
        float[] expected = RunAll(engine, StrongRandomWeights(c, seed: 17), tokens);
        using var file = new TempFile(".gguf");
        GgufExportResult result;
        using (var source = StrongRandomWeights(c, seed: 17)) result = GgufExport.Write(source, c, WeightDType.F32, file.Path, engine.WeightSpecs);
        Assert.Equal("llama", result.Architecture);
        Assert.Contains(result.Tensors, t => t.Name == "output.weight");
        // Every tensor the engine reads, and nothing else.
        int sources = engine.WeightSpecs.SelectMany(s => s.Sources).Distinct().Count();
        Assert.Equal(sources, result.Tensors.Count);
        float[] actual = RunAll(engine, WeightFiles.OpenChecked(file.Path, c, out _), tokens);
        Assert.True(Compare(expected, actual, c.VocabSize).MaxAbs <= 1e-5);
    }

    [Fact]
    public void Weights_llama_cpp_has_no_name_for_keep_ours_and_a_linear_bias_gets_llama_cpp_s_name()
    {
        // ParallelBlock reads layers.N.norm, mlp.up and mlp.down, which llama.cpp does not name; here its table also
        // gets an attn_output bias, as a custom block's `linear` with bias: true would add.
        var engine = new ParallelBlockEngine();
        var c = engine.Config;
        var specs = engine.WeightSpecs.Append(new WeightSpec(engine.WeightSpecs.Count, "layers.0.attention.wo.bias", [c.Dim], ["layers.0.attention.wo.bias"])).ToArray();
        var random = new Random(2);
        var entries = specs.DistinctBy(spec => spec.Sources[0]).Select(spec => (spec.Sources[0], spec.Shape.Select(d => (long)d).ToArray(),
            Enumerable.Range(0, (int)spec.NumElements).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray())).ToList();
        int[] tokens = Tokens(c, 12, seed: 6);
        float[] expected = RunAll(engine, new InMemoryWeightSource("parallel", entries.Where(e => !e.Item1.EndsWith(".bias"))), tokens);

        using var file = new TempFile(".gguf");
        GgufExportResult result;
        using (var source = new InMemoryWeightSource("parallel", entries)) result = GgufExport.Write(source, c, WeightDType.F32, file.Path, specs);
        Assert.Contains(("layers.1.mlp.up.weight", WeightDType.F32), result.Tensors);
        Assert.Contains(("blk.0.attn_output.bias", WeightDType.F32), result.Tensors);
        using (var gguf = GgufFile.Open(file.Path))
        {
            Assert.True(gguf.TryGetTensor("layers.0.attention.wo.bias", out var bias));
            Assert.Equal(entries.Single(e => e.Item1 == "layers.0.attention.wo.bias").Item3, Floats(bias));
            // The engine itself reads no such bias: binding the file to it is the unread-bias error.
            var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind(engine.WeightSpecs, gguf, c));
            Assert.Contains("'layers.0.attention.wo.bias'", e.Message);
        }

        using var plain = new TempFile(".gguf");
        using (var source = new InMemoryWeightSource("parallel", entries.Where(e => !e.Item1.EndsWith(".bias"))))
            GgufExport.Write(source, c, WeightDType.F32, plain.Path, engine.WeightSpecs);
        float[] actual = RunAll(engine, WeightFiles.OpenChecked(plain.Path, c, out _), tokens);
        Assert.True(Compare(expected, actual, c.VocabSize).MaxAbs <= 1e-5);
    }

    [Fact]
    public void Rotary_scaling_in_a_file_is_refused_by_name()
    {
        var w = new GgufWriter();
        w.AddString("general.architecture", "llama");
        w.AddString("llama.rope.scaling.type", "linear");
        w.AddTensor("rope_freqs.weight", WeightDType.F32, [4], new byte[16]);
        using var file = new TempFile(".gguf");
        w.Write(file.Path);
        using var gguf = GgufFile.Open(file.Path);
        var e = Assert.Throws<ModelLoadException>(() => gguf.CheckAgainst(new Stories260KTestEngine().Config));
        Assert.Contains("llama.rope.scaling.type is 'linear'", e.Message);
        Assert.Contains("rope_freqs.weight", e.Message);
    }

    /// <summary>Logits of every position of one sequence; the runner takes ownership of <paramref name="weights"/>.</summary>
    private static float[] RunAll(CompiledModel engine, IWeightSource weights, int[] tokens)
    {
        using var runner = new ModelRunner(engine, weights);
        runner.Blocks.Allocate(0, tokens.Length);
        var batch = runner.CreateBatch();
        batch.AddSequence(tokens, 0, runner.Blocks.BlockTable(0), allLogits: true);
        return runner.Forward(batch).ToArray();
    }

    private static int[] Tokens(ModelConfig c, int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(i => i == 0 ? 1 : random.Next(c.VocabSize)).ToArray();
    }

    private static (double Top1, double Kl, double MaxAbs) Compare(float[] expected, float[] actual, int vocab)
    {
        int positions = expected.Length / vocab, agree = 0;
        double kl = 0, maxAbs = 0;
        for (int p = 0; p < positions; p++)
        {
            var a = expected.AsSpan(p * vocab, vocab);
            var b = actual.AsSpan(p * vocab, vocab);
            if (QuantizationAccuracyTests.Argmax(a) == QuantizationAccuracyTests.Argmax(b)) agree++;
            kl += QuantizationAccuracyTests.KlDivergence(a, b);
            for (int i = 0; i < vocab; i++) maxAbs = Math.Max(maxAbs, Math.Abs(a[i] - b[i]));
        }
        return ((double)agree / positions, kl / positions, maxAbs);
    }

    private static unsafe float[] Floats(WeightTensor t)
    {
        var values = new float[t.NumElements];
        WeightConversion.Decode(new ReadOnlySpan<byte>((void*)t.Data, (int)t.SizeInBytes), t.DType, values);
        return values;
    }

    // FormatTestSupport.PermuteQk for matrices, extended to the 1-D q/k biases (rows of one element).
    private static Func<string, long[], float[], float[]> PermuteQkAndBiases(ModelConfig c, RopeStyle from, RopeStyle to)
    {
        var matrices = FormatTestSupport.PermuteQk(c, from, to);
        return (name, shape, values) =>
        {
            if (shape.Length == 2) return matrices(name, shape, values);
            int heads = TensorNames.IsQuery(name) ? c.NumHeads : TensorNames.IsKey(name) ? c.NumKvHeads : 0;
            if (heads == 0) return values;
            int headDim = values.Length / heads;
            return Enumerable.Range(0, values.Length).Select(row => values[RopePermutation.SourceRow(row, headDim, from, to)]).ToArray();
        };
    }
}
