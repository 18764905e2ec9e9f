using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Hosting;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Tokenization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;
using ModelCompiler.Tests.Engine;
using ModelCompiler.Tests.Formats;
using Xunit;
using static ModelCompiler.Tests.Hosting.ConsoleCapture;

namespace ModelCompiler.Tests.Hosting;

/// <summary>
/// Which tokenizer generate (and serve, quantize) use: <c>--tokenizer</c>, else a GGUF weights file's own vocabulary,
/// else the description's file. The embedded vocabulary here differs from tok512.bin in one piece ("▁Once" is
/// "▁Twice"), so the prompt's token count shows which one was used.
/// </summary>
[Collection(nameof(ConsoleCollection))]
public sealed class TokenizerChoiceTests
{
    private static readonly ModelConfig Stories = new Stories260KTestEngine().Config;

    [Fact]
    public void Generate_uses_the_vocabulary_embedded_in_gguf_weights_unless_a_tokenizer_is_given()
    {
        const string prompt = "Once upon a time";
        var twice = TwiceVocabulary();
        int embeddedCount = twice.Encode(prompt, addBos: true).Length;
        Assert.Equal(5, EngineTestSupport.StoriesTokenizer().Encode(prompt, addBos: true).Length); // BOS ▁Once ▁upon ▁a ▁time
        Assert.True(embeddedCount > 5); // without "▁Once", "Once" takes several pieces
        using var file = new TempFile(".gguf");
        using (var source = EngineTestSupport.OpenStories())
            GgufExport.Write(source, Stories, WeightDType.F32, file.Path, new Stories260KTestEngine().WeightSpecs, twice);

        var (code, stdout, stderr) = Run<Stories260KTestEngine>("generate", "--weights", file.Path, "--prompt", prompt, "--max-tokens", "4", "--temperature", "0");
        Assert.True(code == 0, stderr);
        Assert.StartsWith(prompt, stdout);
        Assert.Contains($"prompt tokens: {embeddedCount},", stderr);

        (code, _, stderr) = Run<Stories260KTestEngine>("generate", "--weights", file.Path, "--tokenizer", TestPaths.Model("tok512.bin"),
            "--prompt", prompt, "--max-tokens", "4", "--temperature", "0");
        Assert.True(code == 0, stderr);
        Assert.Contains("prompt tokens: 5,", stderr);

        // --tokenizer may name a GGUF file too: its vocabulary is read.
        Assert.Equal(twice.Encode(prompt, addBos: true), TokenizerChoice.Load(Stories, file.Path, weightsPath: null).Encode(prompt, addBos: true));
    }

    [Fact]
    public void Weights_without_a_vocabulary_and_random_weights_use_the_description_tokenizer()
    {
        using var file = new TempFile(".gguf");
        using (var source = EngineTestSupport.OpenStories()) GgufExport.Write(source, Stories, WeightDType.F32, file.Path);
        var expected = EngineTestSupport.StoriesTokenizer().Encode("Once upon a time", addBos: true);
        Assert.Equal(expected, TokenizerChoice.Load(Stories, null, file.Path).Encode("Once upon a time", addBos: true));
        Assert.Equal(expected, TokenizerChoice.Load(Stories, null, null).Encode("Once upon a time", addBos: true));
        Assert.Equal(expected, TokenizerChoice.Load(Stories, null, TestPaths.Model("stories260K.bin")).Encode("Once upon a time", addBos: true));
    }

    [Fact]
    public void An_unsupported_vocabulary_in_the_weights_is_one_error_line_saying_to_pass_a_tokenizer()
    {
        using var plain = new TempFile(".gguf");
        using (var source = EngineTestSupport.OpenStories()) GgufExport.Write(source, Stories, WeightDType.F32, plain.Path);
        using var gpt2 = new TempFile(".gguf");
        CopyWithMetadata(plain.Path, gpt2.Path, w =>
        {
            w.AddString("tokenizer.ggml.model", "gpt2");
            w.AddStringArray("tokenizer.ggml.tokens", Enumerable.Range(0, 512).Select(i => $"t{i}").ToArray());
        });

        var (code, stdout, stderr) = Run<Stories260KTestEngine>("generate", "--weights", gpt2.Path, "--prompt", "Once", "--max-tokens", "2");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        var line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("error:"));
        Assert.Contains("tokenizer.ggml.model is 'gpt2' (byte-level BPE with merges)", line);
        Assert.Contains("pass --tokenizer FILE", line);

        (code, _, stderr) = Run<Stories260KTestEngine>("generate", "--weights", gpt2.Path, "--tokenizer", TestPaths.Model("tok512.bin"), "--prompt", "Once", "--max-tokens", "2");
        Assert.True(code == 0, stderr);

        // The server's tokenizer follows the same rule (in-process bench serve loads it before serving).
        (code, _, stderr) = Run<Stories260KTestEngine>("bench", "serve", "--weights", gpt2.Path, "--device", "cpu",
            "--concurrency", "1", "--requests", "1", "--prompt-tokens", "4", "--gen-tokens", "2");
        Assert.Equal(2, code);
        Assert.Contains("error: " + gpt2.Path + ": tokenizer.ggml.model is 'gpt2'", stderr);
    }

    // tok512.bin with piece 403 (" Once") renamed " Twice".
    private static Llama2cTokenizer TwiceVocabulary()
    {
        var tok512 = EngineTestSupport.StoriesTokenizer();
        var pieces = Enumerable.Range(0, tok512.VocabSize).Select(i => tok512.Piece(i).ToArray()).ToArray();
        var scores = Enumerable.Range(0, tok512.VocabSize).Select(tok512.Score).ToArray();
        Assert.Equal(" Once"u8.ToArray(), pieces[403]);
        pieces[403] = " Twice"u8.ToArray();
        return new Llama2cTokenizer(pieces, scores, tok512.MaxTokenLength);
    }

    // Rewrites a GGUF file written by GgufExport (string, uint32 and float32 metadata) with extra metadata.
    private static unsafe void CopyWithMetadata(string from, string to, Action<GgufWriter> extra)
    {
        using var gguf = GgufFile.Open(from);
        var w = new GgufWriter();
        foreach (var key in gguf.Metadata.Keys)
        {
            gguf.Metadata.TryGetValue(key, out _, out var value);
            switch (value)
            {
                case string s: w.AddString(key, s); break;
                case uint u: w.AddUInt32(key, u); break;
                case float f: w.AddFloat32(key, f); break;
                default: throw new InvalidOperationException($"{key}: {value.GetType()}");
            }
        }
        extra(w);
        foreach (var info in gguf.TensorInfos)
        {
            Assert.True(gguf.TryGetTensor(info.GgufName, out var t));
            w.AddTensor(info.GgufName, t.DType, info.Shape, new ReadOnlySpan<byte>((void*)t.Data, (int)t.SizeInBytes).ToArray());
        }
        w.Write(to);
    }
}
