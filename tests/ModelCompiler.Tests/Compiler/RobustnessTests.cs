using System.Text;
using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Diagnostics;
using Xunit;
using static ModelCompiler.Tests.Compiler.Descriptions;

namespace ModelCompiler.Tests.Compiler;

/// <summary>Bad input never throws and never produces an internal error: it always becomes a located diagnostic.</summary>
public sealed class RobustnessTests
{
    private static void AssertRejectedCleanly(string text)
    {
        CompilationResult result = null!;
        var e = Record.Exception(() => result = Compile(text));
        Assert.Null(e);
        Assert.Null(result.Source);
        Assert.Contains(result.Diagnostics, d => d.Severity == Severity.Error);
        AssertSane(text, result);
    }

    /// <summary>No internal errors; every span lies inside the text and agrees with its line and column.</summary>
    private static void AssertSane(string text, CompilationResult result)
    {
        foreach (var d in result.Diagnostics)
        {
            Assert.True(d.Id != "MC0023", $"internal error for input of {text.Length} chars: {d}");
            Assert.InRange(d.Span.Start, 0, text.Length);
            Assert.InRange(d.Span.Length, 0, text.Length - d.Span.Start);
            Assert.Equal(LineColumn(text, d.Span.Start), (d.Span.Line, d.Span.Column));
        }
    }

    public static TheoryData<string, string> Garbage => new()
    {
        { "empty", "" },
        { "whitespace", " \n\t\r\n " },
        { "null", "null" },
        { "array", "[]" },
        { "string", "\"llama\"" },
        { "number", "42" },
        { "true", "true" },
        { "empty object", "{}" },
        { "bom only", "\uFEFF" },
        { "unterminated comment", "{ /* no end" },
        { "lone slash", "{ / }" },
        { "deep arrays", new string('[', 10_000) + new string(']', 10_000) },
        { "deep objects", string.Concat(Enumerable.Repeat("{\"a\":", 10_000)) + "1" + new string('}', 10_000) },
        { "deep unclosed", new string('[', 100_000) },
        { "huge integer", "{ \"name\": \"X\", \"architecture\": \"llama\", \"hyperparameters\": { \"dim\": 99999999999999999999999999999999 } }" },
        { "huge exponent", "{ \"name\": \"X\", \"architecture\": \"llama\", \"hyperparameters\": { \"dim\": 1e999999999 } }" },
        { "negative zero exp", "{ \"hyperparameters\": { \"dim\": -0e-0, \"numHeads\": -1E+400 } }" },
        { "bad escape", "{ \"name\": \"\\q\" }" },
        { "short unicode escape", "{ \"name\": \"\\u12\" }" },
        { "NaN", "{ \"normEps\": NaN }" },
        { "single quotes", "{ 'name': 'x' }" },
        { "nul char", "{\0}" },
        { "wrong types everywhere", "{ \"name\": 1, \"architecture\": [], \"hyperparameters\": \"big\", \"weights\": 2, \"tokenizer\": null, \"runtime\": false, \"block\": {} }" },
        { "custom with junk block", "{ \"name\": \"x\", \"architecture\": \"custom\", \"hyperparameters\": { \"dim\": 8, \"numLayers\": 1, \"numHeads\": 2, \"vocabSize\": 4, \"maxSeqLen\": 4 }, \"weights\": { \"format\": \"llama2c\", \"path\": \"w\" }, \"tokenizer\": { \"format\": \"llama2c\", \"path\": \"t\" }, \"block\": { \"input\": 1, \"output\": [], \"ops\": [ 1, null, {}, { \"op\": 3 }, { \"op\": \"add\", \"inputs\": [1, 2], \"output\": \"y\" } ] } }" },
        { "custom with empty ops", "{ \"name\": \"x\", \"architecture\": \"custom\", \"hyperparameters\": { \"dim\": 8, \"numLayers\": 1, \"numHeads\": 2, \"vocabSize\": 4, \"maxSeqLen\": 4 }, \"weights\": { \"format\": \"llama2c\", \"path\": \"w\" }, \"tokenizer\": { \"format\": \"llama2c\", \"path\": \"t\" }, \"block\": { \"input\": \"x\", \"output\": \"x\", \"ops\": [] } }" },
    };

    [Theory]
    [MemberData(nameof(Garbage))]
    public void Garbage_is_rejected_with_a_diagnostic(string label, string text)
    {
        Assert.NotNull(label);
        AssertRejectedCleanly(text);
    }

    [Fact]
    public void Random_text_is_rejected_with_a_diagnostic()
    {
        var random = new Random(1234);
        for (int n = 0; n < 200; n++)
        {
            var sb = new StringBuilder();
            int length = random.Next(0, 400);
            for (int i = 0; i < length; i++) sb.Append((char)random.Next(0, 256));
            // Also random text that starts like a description, so the reader gets past the first byte.
            AssertRejectedCleanly(sb.ToString());
            AssertRejectedCleanly("{ \"name\": " + sb);
        }
    }

    [Fact]
    public void Every_prefix_of_a_valid_description_is_rejected_cleanly()
    {
        string text = Stories260K;
        int end = text.TrimEnd().Length;
        for (int i = 0; i < end; i++) AssertRejectedCleanly(text.Substring(0, i));
    }

    [Fact]
    public void Deleting_any_one_character_never_throws()
    {
        foreach (string text in new[] { Stories260K, TinyExplicit })
            for (int i = 0; i < text.Length; i++)
            {
                string edited = text.Remove(i, 1);
                CompilationResult result = null!;
                Assert.Null(Record.Exception(() => result = Compile(edited)));
                AssertSane(edited, result);
            }
    }
}
