using System.Text;
using ModelCompiler.Runtime.Reference;
using ModelCompiler.Runtime.Sampling;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;
using static ModelCompiler.Tests.Hosting.ConsoleCapture;

namespace ModelCompiler.Tests.Engine;

/// <summary>Tests that redirect the process-wide console run one at a time.</summary>
[CollectionDefinition(nameof(ConsoleCollection), DisableParallelization = true)]
public sealed class ConsoleCollection;

/// <summary>The engine host's <c>generate</c> command, run in-process with the console captured.</summary>
[Collection(nameof(ConsoleCollection))]
public class GenerateCommandTests
{
    [Fact]
    public void Greedy_generate_prints_the_prompt_and_the_reference_continuation_and_nothing_else()
    {
        const string prompt = "Once upon a time";
        const int numTokens = 60;
        var tokenizer = StoriesTokenizer();
        int[] promptTokens = tokenizer.Encode(prompt, addBos: true);
        var continuation = new List<int>();
        using (var checkpoint = OpenStories())
        {
            var reference = new ReferenceTransformer(new Stories260KTestEngine().Config, checkpoint);
            float[] logits = [];
            for (int p = 0; p < promptTokens.Length; p++) logits = reference.Forward(promptTokens[p], p);
            for (int i = 0; i < numTokens; i++)
            {
                int next = Sampler.Argmax(logits);
                if (next is 1 or 2) break;
                continuation.Add(next);
                logits = reference.Forward(next, promptTokens.Length + i);
            }
        }
        var expected = new StringBuilder(prompt);
        int previous = promptTokens[^1];
        foreach (int t in continuation)
        {
            expected.Append(Encoding.UTF8.GetString(tokenizer.DecodePieceBytes(previous, t)));
            previous = t;
        }
        expected.Append('\n');

        var (code, stdout, stderr) = Run<Stories260KTestEngine>("generate", "--prompt", prompt, "--max-tokens", numTokens.ToString(), "--temperature", "0");

        Assert.Equal(0, code);
        Assert.Equal(expected.ToString(), stdout);
        Assert.Contains("prompt tokens: 5", stderr);
        Assert.Contains($"generated tokens: {numTokens}", stderr);
        Assert.Contains("time to first token", stderr);
        Assert.Contains("tokens/s", stderr);
    }

    [Fact]
    public void Same_seed_gives_the_same_sampled_text()
    {
        string[] args = ["generate", "--prompt", "The cat", "--max-tokens", "30", "--temperature", "0.9", "--top-p", "0.9", "--seed", "42"];
        var first = Run<Stories260KTestEngine>(args);
        var second = Run<Stories260KTestEngine>(args);
        Assert.Equal(0, first.ExitCode);
        Assert.StartsWith("The cat", first.Stdout);
        Assert.Equal(first.Stdout, second.Stdout);
    }

    [Fact]
    public void Missing_weights_file_is_one_line_naming_it_and_exit_code_2()
    {
        string missing = Path.Combine(Path.GetTempPath(), "no-such-model-" + Guid.NewGuid() + ".bin");
        var (code, stdout, stderr) = Run<Stories260KTestEngine>("generate", "--prompt", "x", "--weights", missing);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.Contains(missing, stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public void Wrong_format_is_one_line_and_exit_code_2()
    {
        // The tokenizer file is not a checkpoint: its first bytes make no sense as a llama2.c header.
        var (code, stdout, stderr) = Run<Stories260KTestEngine>("generate", "--weights", TestPaths.Model("tok512.bin"));
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains("not a llama2.c checkpoint", stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void Shape_mismatch_between_checkpoint_and_description_names_the_field_and_exits_2()
    {
        // TinyExplicit is compiled for dim 48; the Stories260K checkpoint has dim 64.
        var (code, stdout, stderr) = Run<TinyExplicitEngine>("generate", "--weights", TestPaths.Model("stories260K.bin"), "--tokenizer", TestPaths.Model("tok512.bin"));
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains("dim", stderr);
        Assert.Contains("64", stderr);
        Assert.Contains("48", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Theory]
    [InlineData("--max-tokens", "0")]
    [InlineData("--max-tokens", "many")]
    [InlineData("--temperature", "-1")]
    [InlineData("--top-p", "0")]
    [InlineData("--no-such-option", "1")]
    public void Bad_arguments_exit_2_without_output(string option, string value)
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>("generate", option, value);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error: ", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }
}
