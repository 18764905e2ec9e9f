using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Runtime;

public sealed class WeightBinderTests
{
    [Fact]
    public void Single_source_is_borrowed_without_a_copy()
    {
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        checkpoint.TryGetTensor("layers.3.attention.wo.weight", out var wo);
        var specs = new[] { new WeightSpec(0, "wo3", [64, 64], ["layers.3.attention.wo.weight"]) };

        var weights = WeightBinder.Bind(specs, checkpoint);
        Assert.Equal(64 * 64, weights[0].Length);
        unsafe
        {
            fixed (float* p = weights[0]) Assert.Equal(wo.Data, (nint)p);
        }
    }

    [Fact]
    public void Several_sources_are_concatenated_by_rows_in_order()
    {
        using var source = new InMemoryWeightSource("hand-written", [
            ("q", [2, 2], [1, 2, 3, 4]),
            ("k", [1, 2], [5, 6]),
            ("v", [1, 2], [7, 8]),
            ("gain.a", [2], [0.5f, 0.25f]),
            ("gain.b", [1], [9]),
        ]);
        var specs = new[]
        {
            new WeightSpec(1, "qkv", [4, 2], ["q", "k", "v"]),
            new WeightSpec(0, "gains", [3], ["gain.a", "gain.b"]),
        };

        using var weights = WeightBinder.Bind(specs, source);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6, 7, 8 }, weights[1].ToArray());
        Assert.Equal(new float[] { 0.5f, 0.25f, 9 }, weights[0].ToArray());
    }

    [Fact]
    public void Fused_qkv_of_stories260K_has_each_projection_in_its_rows()
    {
        byte[] file = File.ReadAllBytes(Stories260K.WeightsPath);
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        var specs = new[] { new WeightSpec(0, "layers.1.wqkv", [128, 64], ["layers.1.attention.wq.weight", "layers.1.attention.wk.weight", "layers.1.attention.wv.weight"]) };

        // Disposing the weights disposes the checkpoint too; a second Dispose is harmless.
        using var weights = WeightBinder.Bind(specs, checkpoint);
        // Float offsets after the header, from run.c's layout: emb 512*64, rms_att 5*64, wq 5*64*64, wk 5*32*64.
        const int wqLayer1 = 512 * 64 + 5 * 64 + 64 * 64;
        const int wkLayer1 = 512 * 64 + 5 * 64 + 5 * 64 * 64 + 32 * 64;
        const int wvLayer1 = wkLayer1 + 5 * 32 * 64;
        Assert.Equal(FloatAt(file, wqLayer1), weights[0][0]);
        Assert.Equal(FloatAt(file, wqLayer1 + 64 * 64 - 1), weights[0][64 * 64 - 1]);
        Assert.Equal(FloatAt(file, wkLayer1), weights[0][64 * 64]);
        Assert.Equal(FloatAt(file, wvLayer1), weights[0][96 * 64]);
        Assert.Equal(FloatAt(file, wvLayer1 + 32 * 64 - 1), weights[0][128 * 64 - 1]);
    }

    [Fact]
    public void Missing_tensor_names_file_tensor_and_graph_weight()
    {
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        var specs = new[] { new WeightSpec(0, "lm_head", [512, 64], ["output.weight"]) };
        var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind(specs, checkpoint));
        Assert.Equal($"weights file {Stories260K.WeightsPath} (llama2.c) has no tensor 'output.weight' (needed for graph weight 'lm_head')", e.Message);
    }

    [Fact]
    public void Wrong_columns_name_the_tensor_and_both_shapes()
    {
        using var source = Hand(("w", [2, 3], new float[6]));
        var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind([new WeightSpec(0, "proj", [2, 4], ["w"])], source));
        Assert.Contains("tensor 'w' has shape [2, 3], but graph weight 'proj' [2, 4] needs [rows, 4]", e.Message);
    }

    [Fact]
    public void Wrong_total_rows_lists_every_piece()
    {
        using var source = Hand(("a", [2, 2], new float[4]), ("b", [2, 2], new float[4]));
        var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind([new WeightSpec(0, "ab", [3, 2], ["a", "b"])], source));
        Assert.Contains("graph weight 'ab' needs [3, 2], but 'a' [2, 2] + 'b' [2, 2] stack to 4 rows", e.Message);
    }

    [Fact]
    public void Rank_mismatch_is_a_shape_error()
    {
        using var source = Hand(("g", [4], new float[4]));
        var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind([new WeightSpec(0, "m", [4, 1], ["g"])], source));
        Assert.Contains("tensor 'g' has shape [4]", e.Message);
    }

    [Fact]
    public void Fused_pieces_of_different_types_are_refused_clearly()
    {
        using var source = new FakeSource(
            new WeightTensor("a", WeightDType.F32, [1, 32], 0, 128),
            new WeightTensor("b", WeightDType.Q8_0, [1, 32], 0, 34));
        var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind([new WeightSpec(0, "ab", [2, 32], ["a", "b"])], source));
        Assert.Contains("tensor 'b' is q8_0 but 'a' is f32", e.Message);
    }

    [Fact]
    public void Quantized_rows_that_are_not_whole_blocks_are_refused()
    {
        using var source = new FakeSource(new WeightTensor("q", WeightDType.Q4_0, [2, 48], 0, 2 * 18 * 2));
        var e = Assert.Throws<ModelLoadException>(() => WeightBinder.Bind([new WeightSpec(0, "q", [2, 48], ["q"])], source));
        Assert.Contains("rows of 48 weights, not whole blocks of 32", e.Message);
    }

    [Fact]
    public unsafe void Quantized_matrices_keep_their_type_and_f16_vectors_are_widened_to_f32()
    {
        // Q8_0 block: f16 scale 0.5 (0x3800), then 32 int8 values -16..15; an f16 vector [1.5, -2].
        var q8 = new byte[34];
        q8[0] = 0x00; q8[1] = 0x38;
        for (int j = 0; j < 32; j++) q8[2 + j] = (byte)(sbyte)(j - 16);
        var f16 = new byte[] { 0x00, 0x3E, 0x00, 0xC0 };
        fixed (byte* pq = q8)
        fixed (byte* ph = f16)
        {
            using var source = new FakeSource(
                new WeightTensor("m", WeightDType.Q8_0, [1, 32], (nint)pq, 34),
                new WeightTensor("v", WeightDType.F16, [2], (nint)ph, 4));
            using var weights = WeightBinder.Bind([new WeightSpec(0, "m", [1, 32], ["m"]), new WeightSpec(1, "v", [2], ["v"])], source);

            var matrix = weights.Matrix(0);
            Assert.Equal(WeightDType.Q8_0, matrix.DType);
            Assert.Equal((nint)pq, matrix.Data); // borrowed, not copied
            Assert.Equal((1, 32, 34), (matrix.Rows, matrix.Cols, matrix.RowSizeInBytes));
            Assert.Equal(new float[] { 1.5f, -2f }, weights[1].ToArray());
            Assert.Throws<InvalidOperationException>(() => weights[0].Length);
        }
    }

    [Fact]
    public void Weights_own_the_source_on_success_but_not_on_failure()
    {
        var good = new FakeSource(new WeightTensor("x", WeightDType.F32, [1], 0, 4));
        var weights = WeightBinder.Bind([new WeightSpec(0, "x", [1], ["x"])], good);
        Assert.False(good.Disposed);
        weights.Dispose();
        Assert.True(good.Disposed);

        var bad = new FakeSource();
        Assert.Throws<ModelLoadException>(() => WeightBinder.Bind([new WeightSpec(0, "x", [1], ["x"])], bad));
        Assert.False(bad.Disposed);
    }

    [Fact]
    public void Duplicate_spec_indices_are_a_generator_bug()
    {
        using var source = Hand(("x", [1], [1f]));
        Assert.Throws<ArgumentException>(() => WeightBinder.Bind([new WeightSpec(0, "a", [1], ["x"]), new WeightSpec(0, "b", [1], ["x"])], source));
    }

    [Fact]
    public void Random_llama_has_the_checkpoint_names_and_shapes()
    {
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        using var random = InMemoryWeightSource.CreateRandomLlama(Stories260K.Config, seed: 1);
        Assert.Equal(
            checkpoint.Tensors.Select(t => $"{t.Name} [{string.Join(",", t.Shape)}]").Order(StringComparer.Ordinal),
            random.Tensors.Select(t => $"{t.Name} [{string.Join(",", t.Shape)}]").Order(StringComparer.Ordinal));

        using var untied = InMemoryWeightSource.CreateRandomLlama(Stories260K.Config with { TiedEmbedding = false }, seed: 1);
        Assert.True(untied.TryGetTensor("output.weight", out var output));
        Assert.Equal(new long[] { 512, 64 }, output.Shape);
    }

    [Fact]
    public unsafe void Random_llama_is_deterministic_and_has_the_documented_ranges()
    {
        using var a = InMemoryWeightSource.CreateRandomLlama(Stories260K.Config, seed: 7);
        using var b = InMemoryWeightSource.CreateRandomLlama(Stories260K.Config, seed: 7);
        using var c = InMemoryWeightSource.CreateRandomLlama(Stories260K.Config, seed: 8);
        float[] Values(InMemoryWeightSource s, string name)
        {
            s.TryGetTensor(name, out var t);
            return new ReadOnlySpan<float>((void*)t.Data, (int)t.NumElements).ToArray();
        }

        Assert.Equal(Values(a, "layers.2.feed_forward.w2.weight"), Values(b, "layers.2.feed_forward.w2.weight"));
        Assert.NotEqual(Values(a, "layers.2.feed_forward.w2.weight"), Values(c, "layers.2.feed_forward.w2.weight"));

        float[] norm = Values(a, "layers.0.ffn_norm.weight");
        Assert.All(norm, v => Assert.InRange(v, 0.9f, 1.1f));
        float[] matrix = Values(a, "tok_embeddings.weight");
        Assert.All(matrix, v => Assert.InRange(v, -0.0347f, 0.0347f));
        double mean = matrix.Average(v => (double)v);
        double std = Math.Sqrt(matrix.Average(v => (v - mean) * (v - mean)));
        Assert.InRange(mean, -0.001, 0.001);
        Assert.InRange(std, 0.019, 0.021);
    }

    [Fact]
    public void A_whole_engine_table_binds_from_random_weights()
    {
        var config = Stories260K.Config with { TiedEmbedding = false };
        var specs = new List<WeightSpec> { new(0, "embedding", [config.VocabSize, config.Dim], ["tok_embeddings.weight"]) };
        for (int i = 0; i < config.NumLayers; i++)
        {
            specs.Add(new(specs.Count, $"l{i}.wqkv", [config.Dim + 2 * config.KvDim, config.Dim], [$"layers.{i}.attention.wq.weight", $"layers.{i}.attention.wk.weight", $"layers.{i}.attention.wv.weight"]));
            specs.Add(new(specs.Count, $"l{i}.w13", [2 * config.HiddenDim, config.Dim], [$"layers.{i}.feed_forward.w1.weight", $"layers.{i}.feed_forward.w3.weight"]));
        }
        specs.Add(new(specs.Count, "lm_head", [config.VocabSize, config.Dim], ["output.weight"]));

        using var weights = WeightBinder.Bind(specs, InMemoryWeightSource.CreateRandomLlama(config, seed: 3));
        Assert.Equal(specs.Count, weights.Count);
        Assert.All(specs, s => Assert.Equal(s.NumElements, weights[s.Index].Length));
    }

    private static InMemoryWeightSource Hand(params (string, long[], float[])[] entries) => new("hand-written", entries);

    private static float FloatAt(byte[] file, int floatIndexAfterHeader) => BitConverter.ToSingle(file, 28 + 4 * floatIndexAfterHeader);

    /// <summary>A source that only lists tensors (their data is never read) and records disposal.</summary>
    private sealed class FakeSource(params WeightTensor[] tensors) : IWeightSource
    {
        public bool Disposed { get; private set; }
        public string Description => "fake";
        public IReadOnlyCollection<WeightTensor> Tensors => tensors;
        public bool TryGetTensor(string name, out WeightTensor tensor)
        {
            tensor = tensors.FirstOrDefault(t => t.Name == name)!;
            return tensor is not null;
        }
        public void Dispose() => Disposed = true;
    }
}
