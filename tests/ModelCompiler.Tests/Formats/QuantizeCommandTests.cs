using ModelCompiler.Runtime.Hosting;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.Formats;

/// <summary>The engine host's <c>quantize</c> command, in-process with the console captured.</summary>
[Collection(nameof(ConsoleCollection))]
public class QuantizeCommandTests
{
    private static (int ExitCode, string Stderr) Run(params string[] args)
    {
        var stderr = new StringWriter();
        var (oldOut, oldError) = (Console.Out, Console.Error);
        Console.SetOut(new StringWriter());
        Console.SetError(stderr);
        try
        {
            return (ModelHost.Run<Stories260KTestEngine>(args), stderr.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldError);
        }
    }

    [Theory]
    [InlineData("q8_0", WeightDType.Q8_0)]
    [InlineData("q4_0", WeightDType.Q4_0)]
    [InlineData("bf16", WeightDType.BF16)]
    [InlineData("f16", WeightDType.F16)]
    public void Quantize_writes_a_gguf_the_reader_loads_with_the_requested_type(string to, WeightDType expected)
    {
        using var file = new TempFile(".gguf");
        var (code, stderr) = Run("quantize", "--to", to, "--out", file.Path, "--weights", TestPaths.Model("stories260K.bin"));
        Assert.True(code == 0, stderr);
        Assert.Contains("wrote " + file.Path, stderr);
        using var gguf = GgufFile.Open(file.Path);
        gguf.CheckAgainst(new Stories260KTestEngine().Config);
        Assert.True(gguf.TryGetTensor("blk.0.attn_q.weight", out var wq));
        Assert.Equal(expected, wq.DType);
        Assert.True(gguf.TryGetTensor("token_embd.weight", out var embedding));
        Assert.Equal(expected, embedding.DType);
        Assert.True(gguf.Metadata.TryGetInteger("general.file_type", out long fileType));
        Assert.Equal(ModelCompiler.Runtime.Quantization.GgufExport.FileType(expected), (uint)fileType);
    }

    [Fact]
    public void Quantize_embeds_the_vocabulary_so_generate_needs_no_tokenizer_file()
    {
        using var file = new TempFile(".gguf");
        var (code, stderr) = Run("quantize", "--to", "q8_0", "--out", file.Path, "--weights", TestPaths.Model("stories260K.bin"));
        Assert.True(code == 0, stderr);
        Assert.Contains("512-token vocabulary", stderr);
        using (var gguf = GgufFile.Open(file.Path))
        {
            Assert.True(gguf.Metadata.TryGetString("tokenizer.ggml.model", out string model) && model == "llama");
            Assert.True(gguf.Metadata.TryGetArray("tokenizer.ggml.tokens", out var tokens) && tokens.Count == 512);
        }
        var embedded = ModelCompiler.Runtime.Tokenization.Llama2cTokenizer.Load(file.Path, 512);
        Assert.Equal(EngineTestSupport.StoryTokens(), embedded.Encode(
            "Once upon a time, there was a little boy named Tim. Tim had a big red ball that he loved to " +
            "throw in the garden. One sunny day, the ball rolled into the pond and a friendly frog jumped out to say hello.", addBos: true));
    }

    [Fact]
    public void Quantize_a_qwen2_shaped_model_without_a_tokenizer_file_writes_weights_only_with_a_note()
    {
        using var file = new TempFile(".gguf");
        var stderr = new StringWriter();
        var (oldOut, oldError) = (Console.Out, Console.Error);
        Console.SetOut(new StringWriter());
        Console.SetError(stderr);
        int code;
        try
        {
            code = ModelHost.Run<TinyQwenEngine>(["quantize", "--to", "q8_0", "--out", file.Path, "--random-weights", "3"]);
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldError);
        }
        Assert.True(code == 0, stderr.ToString());
        Assert.Contains("note: tokenizer file not found", stderr.ToString());
        Assert.Contains("qwen2 (q8_0)", stderr.ToString());
        Assert.Contains("no vocabulary", stderr.ToString());
        using var gguf = GgufFile.Open(file.Path);
        Assert.True(gguf.TryGetTensor("blk.0.attn_q.bias", out _));
    }

    [Fact]
    public void Quantize_random_weights_and_bad_arguments()
    {
        using var file = new TempFile(".gguf");
        var (code, stderr) = Run("quantize", "--to", "q4_0", "--out", file.Path, "--random-weights", "7");
        Assert.True(code == 0, stderr);
        (code, stderr) = Run("quantize", "--to", "q3_k", "--out", file.Path);
        Assert.Equal(2, code);
        Assert.Contains("error: --to must be one of", stderr);
        (code, stderr) = Run("quantize", "--to", "q8_0", "--out", file.Path, "--weights", "/nonexistent/w.bin");
        Assert.Equal(2, code);
        Assert.Contains("error: weights file not found", stderr);
    }
}
