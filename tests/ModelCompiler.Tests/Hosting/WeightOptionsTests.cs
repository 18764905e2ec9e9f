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
    public void A_tied_engine_refuses_a_file_whose_output_weight_differs_from_the_embedding()
    {
        var tied = new Stories260KTestEngine().Config;
        using var untiedWeights = InMemoryWeightSource.CreateRandomLlama(tied with { TiedEmbedding = false }, 5);
        var e = Assert.Throws<ModelLoadException>(() => WeightOptions.CheckTiedHead(tied, untiedWeights, _ => { }));
        Assert.Contains("output.weight", e.Message);
        Assert.Contains("tiedEmbedding", e.Message);
    }

    [Fact]
    public void A_tied_engine_accepts_an_output_weight_equal_to_the_embedding_with_a_note()
    {
        var tied = new Stories260KTestEngine().Config;
        float[] table = Enumerable.Range(0, tied.VocabSize * tied.Dim).Select(i => i * 1e-4f).ToArray();
        long[] shape = [tied.VocabSize, tied.Dim];
        using var source = new InMemoryWeightSource("test", [("tok_embeddings.weight", shape, table), ("output.weight", shape, table)]);
        var notes = new List<string>();
        WeightOptions.CheckTiedHead(tied, source, notes.Add);
        Assert.Single(notes);
        Assert.Contains("tied", notes[0]);
    }
}
