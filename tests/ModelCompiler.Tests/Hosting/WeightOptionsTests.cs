using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Hosting;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Hosting.ConsoleCapture;

namespace ModelCompiler.Tests.Hosting;

/// <summary>The weight options generate and bench share: random weights in any dtype, and the tied-head check.</summary>
[Collection(nameof(ConsoleCollection))]
public class WeightOptionsTests
{
    [Theory]
    [InlineData("f32")]
    [InlineData("q4_0")]
    public void Generate_runs_on_random_weights_deterministically(string dtype)
    {
        string[] args = ["generate", "--random-weights", "3", "--dtype", dtype, "--prompt", "Once", "--max-tokens", "6", "--temperature", "0", "--threads", "1"];
        var first = Run<Stories260KTestEngine>(args);
        var second = Run<Stories260KTestEngine>(args);
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.StartsWith("Once", first.Stdout);
        Assert.Equal(first.Stdout, second.Stdout);
        Assert.Contains("prompt tokens", first.Stderr);
    }

    [Fact]
    public void Generate_refuses_weights_and_random_weights_together()
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>("generate", "--weights", TestPaths.Model("stories260K.bin"), "--random-weights", "1");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error: ", stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void A_tied_engine_refuses_a_gguf_whose_output_weight_differs_from_the_embedding()
    {
        var tied = new Stories260KTestEngine().Config;
        var untied = tied with { TiedEmbedding = false };
        string path = Path.Combine(Path.GetTempPath(), $"untied-{Guid.NewGuid():N}.gguf");
        try
        {
            using (var untiedWeights = InMemoryWeightSource.CreateRandomLlama(untied, 5))
                ModelCompiler.Runtime.Quantization.GgufExport.Write(untiedWeights, untied, WeightDType.F32, path);
            var e = Assert.Throws<ModelLoadException>(() => WeightFiles.OpenChecked(path, tied, out _));
            Assert.Contains("output.weight, different from token_embd.weight", e.Message);
            Assert.Contains("tiedEmbedding", e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_tied_engine_accepts_a_gguf_whose_output_weight_equals_the_embedding_with_a_note()
    {
        var tied = new Stories260KTestEngine().Config;
        var untied = tied with { TiedEmbedding = false };
        string path = Path.Combine(Path.GetTempPath(), $"tied-copy-{Guid.NewGuid():N}.gguf");
        try
        {
            using (var random = InMemoryWeightSource.CreateRandomLlama(untied, 6))
            {
                // The same random weights, with the classifier replaced by a copy of the embedding.
                var entries = random.Tensors.Select(t => (t.Name, t.Shape, Floats(t.Name == "output.weight" ? Find(random, "tok_embeddings.weight") : t))).ToList();
                using var source = new InMemoryWeightSource("tied copy", entries);
                ModelCompiler.Runtime.Quantization.GgufExport.Write(source, untied, WeightDType.F32, path);
            }
            using var opened = WeightFiles.OpenChecked(path, tied, out var notes);
            Assert.Contains(notes, n => n.Contains("output.weight equals token_embd.weight"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static WeightTensor Find(IWeightSource source, string name) =>
        source.TryGetTensor(name, out var t) ? t : throw new InvalidOperationException(name);

    private static unsafe float[] Floats(WeightTensor t) => new ReadOnlySpan<float>((void*)t.Data, (int)t.NumElements).ToArray();
}
