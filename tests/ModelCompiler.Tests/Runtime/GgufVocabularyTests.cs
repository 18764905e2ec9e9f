using System.Text;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Tokenization;
using ModelCompiler.Runtime.Weights.Gguf;
using ModelCompiler.Tests.Formats;
using Xunit;

namespace ModelCompiler.Tests.Runtime;

/// <summary>
/// A GGUF file's embedded <c>llama</c> vocabulary (<see cref="GgufVocabulary"/>): written from llama2.c tokenizer files
/// it tokenizes to the same ids (checked against known ids); a hand-written llama.cpp-style vocabulary tokenizes to ids
/// worked out by hand; hostile metadata is a <see cref="ModelLoadException"/> naming the key, never another exception.
/// </summary>
public sealed class GgufVocabularyTests
{
    private static readonly Lazy<Llama2cTokenizer> s_tok512 = new(() => Llama2cTokenizer.Load(TestPaths.Model("tok512.bin"), 512));
    private static readonly Lazy<Llama2cTokenizer> s_llama2 = new(() => Llama2cTokenizer.Load(TestPaths.Model("tokenizer.bin"), 32000));

    private static readonly string[] s_texts =
    [
        "Once upon a time",
        "Once upon a time, there was a little girl named Lily.\nShe liked to play outside.",
        "  two leading spaces, tabs\tand trailing ",
        "héllo wörld — 你好 😀 ∑ x² 🎉🎉",
        "<s> and </s> and <unk> are text here, <0x41> too",
        "",
    ];

    [Fact]
    public void Stories_vocabulary_from_gguf_gives_the_tokenizer_bin_ids()
    {
        using var file = VocabularyFile(s_tok512.Value);
        var fromGguf = Llama2cTokenizer.Load(file.Path, 512);
        Assert.Equal(new[] { 1, 403, 407, 261, 378 }, fromGguf.Encode("Once upon a time", addBos: true));
        // U+1F600 is not in tok512: the dummy prefix 410, then its four bytes as byte tokens.
        Assert.Equal(new[] { 1, 410, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3 }, fromGguf.Encode("😀", addBos: true));
        foreach (var text in s_texts)
        {
            int[] ids = s_tok512.Value.Encode(text, addBos: true);
            Assert.Equal(ids, fromGguf.Encode(text, addBos: true));
            Assert.Equal(text, fromGguf.Decode(ids));
        }
    }

    [Fact]
    public void Llama2_vocabulary_from_gguf_gives_the_known_ids()
    {
        using var file = VocabularyFile(s_llama2.Value);
        var fromGguf = Llama2cTokenizer.Load(file.Path, 32000);
        int[] expected = [1, 9038, 2501, 263, 931, 29892, 727, 471, 263, 2217, 7826, 4257, 365, 2354, 29889, 13, 13468, 23289, 304, 1708, 5377, 29889];
        Assert.Equal(expected, fromGguf.Encode("Once upon a time, there was a little girl named Lily.\nShe liked to play outside.", addBos: true));
        Assert.Equal(new[] { 29871, 0xF0 + 3, 0x9F + 3, 0x8E + 3, 0x89 + 3 }, fromGguf.Encode("🎉", addBos: false));
        foreach (var text in s_texts)
        {
            Assert.Equal(s_llama2.Value.Encode(text, addBos: true), fromGguf.Encode(text, addBos: true));
            Assert.Equal(text, fromGguf.Decode(fromGguf.Encode(text, addBos: true)));
        }
        Assert.Equal("Hello"u8.ToArray(), fromGguf.DecodePieceBytes(Llama2cTokenizer.Bos, 15043).ToArray());
    }

    [Fact]
    public void Written_vocabulary_is_spelled_as_sentencepiece_and_llama_cpp_spell_it()
    {
        using var file = VocabularyFile(s_tok512.Value);
        using var gguf = GgufFile.Open(file.Path);
        var m = gguf.Metadata;
        Assert.True(m.TryGetString("tokenizer.ggml.model", out string model) && model == "llama");
        Assert.True(m.TryGetArray("tokenizer.ggml.tokens", out var tokensArray));
        var tokens = (string[])tokensArray.Values;
        Assert.Equal(512, tokens.Length);
        Assert.Equal("<unk>", tokens[0]);
        Assert.Equal("<s>", tokens[1]);        // llama2.c's export wrote "\n<s>\n"
        Assert.Equal("</s>", tokens[2]);
        Assert.Equal("<0x00>", tokens[3]);
        Assert.Equal("\u2581Once", tokens[403]); // '▁' for the space
        Assert.True(m.TryGetArray("tokenizer.ggml.token_type", out var typesArray));
        var types = (int[])typesArray.Values;
        Assert.Equal([2, 3, 3, 6], types[..4]);
        Assert.Equal(1, types[403]);
        Assert.True(m.TryGetArray("tokenizer.ggml.scores", out var scores));
        Assert.Equal(s_tok512.Value.Score(403), ((float[])scores.Values)[403]);
        Assert.True(m.TryGetInteger("tokenizer.ggml.bos_token_id", out long bos) && bos == 1);
        Assert.True(m.TryGetInteger("tokenizer.ggml.eos_token_id", out long eos) && eos == 2);
    }

    // A llama.cpp-style vocabulary written by hand: byte tokens after the text pieces (not at 3..258), a control
    // piece "xy" that text must never produce, and scores that fix the merge order. Expected ids worked out by hand.
    private static GgufWriter HandVocabulary(Action<GgufWriter>? extra = null, bool types = true)
    {
        var tokens = new List<string> { "<unk>", "<s>", "</s>", "\u2581", "t", "h", "e", "c", "a", "\u2581t", "he", "\u2581the", "x", "y", "xy" };
        var scores = new List<float> { 0, 0, 0, -100, -100, -100, -100, -100, -100, -5, -3, -1, -100, -100, 10 };
        var tokenTypes = new List<int> { 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3 };
        for (int b = 0; b < 256; b++) { tokens.Add($"<0x{b:X2}>"); scores.Add(0); tokenTypes.Add(6); }
        var w = new GgufWriter();
        w.AddString("tokenizer.ggml.model", "llama");
        w.AddStringArray("tokenizer.ggml.tokens", tokens);
        w.AddFloat32Array("tokenizer.ggml.scores", scores);
        if (types) w.AddInt32Array("tokenizer.ggml.token_type", tokenTypes);
        w.AddUInt32("tokenizer.ggml.bos_token_id", 1);
        w.AddUInt32("tokenizer.ggml.eos_token_id", 2);
        extra?.Invoke(w);
        return w;
    }

    private const int HandVocabularySize = 15 + 256;

    [Fact]
    public void Hand_written_vocabulary_merges_by_score_and_falls_back_to_its_byte_pieces()
    {
        var tokenizer = Load(HandVocabulary());
        // " the cat": [▁ t h e ▁ c a t] → "he" (-3) → "▁t" (-5) → "▁t"+"he" = "▁the" (-1).
        Assert.Equal(new[] { 1, 11, 3, 7, 8, 4 }, tokenizer.Encode("the cat", addBos: true));
        Assert.Equal("the cat", tokenizer.Decode([1, 11, 3, 7, 8, 4]));
        // "xy" is a control piece: never merged from text, whatever its score.
        Assert.Equal(new[] { 3, 12, 13 }, tokenizer.Encode("xy", addBos: false));
        // 'é' (C3 A9) is no piece: its bytes' pieces <0xC3> = 15 + 0xC3 and <0xA9>, found by piece, not at b + 3.
        Assert.Equal(new[] { 3, 15 + 0xC3, 15 + 0xA9 }, tokenizer.Encode("é", addBos: false));
        Assert.Equal("é", tokenizer.Decode(tokenizer.Encode("é", addBos: true)));
        // Without types (as a llama2.c file) every piece is text, so "xy" merges.
        Assert.Equal(new[] { 3, 14 }, Load(HandVocabulary(types: false)).Encode("xy", addBos: false));
    }

    [Fact]
    public void Add_space_prefix_false_adds_no_dummy_prefix_and_keeps_the_first_space()
    {
        var tokenizer = Load(HandVocabulary(w => w.AddBool("tokenizer.ggml.add_space_prefix", false)));
        Assert.False(tokenizer.AddDummyPrefix);
        Assert.Equal(new[] { 1, 4, 10 }, tokenizer.Encode("the", addBos: true));
        Assert.Equal(" the", tokenizer.Decode([1, 11]));
    }

    [Fact]
    public void A_file_without_a_vocabulary_reads_as_none_and_cannot_be_a_tokenizer()
    {
        var w = new GgufWriter();
        w.AddString("general.architecture", "llama");
        using var file = new TempFile(".gguf");
        w.Write(file.Path);
        Assert.False(GgufVocabulary.TryLoad(file.Path, 512, out _));
        var e = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(file.Path, 512));
        Assert.Contains("GGUF file without a vocabulary", e.Message);

        var noVocab = new GgufWriter();
        noVocab.AddString("tokenizer.ggml.model", "no_vocab");
        using var file2 = new TempFile(".gguf");
        noVocab.Write(file2.Path);
        Assert.False(GgufVocabulary.TryLoad(file2.Path, 512, out _));
    }

    public static TheoryData<string, string> UnsupportedModels => new()
    {
        { "gpt2", "byte-level BPE" },
        { "bert", "WordPiece" },
        { "t5", "unigram" },
        { "made-up", "'made-up'" },
    };

    [Theory]
    [MemberData(nameof(UnsupportedModels))]
    public void Unsupported_tokenizer_models_name_themselves_and_what_to_pass(string model, string expected)
    {
        var w = new GgufWriter();
        w.AddString("tokenizer.ggml.model", model);
        w.AddStringArray("tokenizer.ggml.tokens", ["a"]);
        var message = Error(w, 1);
        Assert.Contains($"tokenizer.ggml.model is '{model}'", message);
        Assert.Contains(expected, message);
        Assert.Contains("--tokenizer", message);
    }

    public static TheoryData<string, string> HostileVocabularies => new()
    {
        { "model-not-a-string", "tokenizer.ggml.model must be a string, found UInt32" },
        { "no-tokens", "has no tokenizer.ggml.tokens" },
        { "tokens-not-strings", "tokenizer.ggml.tokens must be an array of strings, found an array of UInt32" },
        { "tokens-nested", "tokenizer.ggml.tokens must be an array of strings, found an array of Array" },
        { "tokens-a-string", "tokenizer.ggml.tokens must be an array of strings, found String" },
        { "too-few-tokens", "the vocabulary has 3 tokens (tokenizer.ggml.tokens) but the model's vocabSize is 271" },
        { "no-scores", "has no tokenizer.ggml.scores" },
        { "scores-mismatch", "tokenizer.ggml.scores has 2 entries but tokenizer.ggml.tokens has 271" },
        { "scores-int", "tokenizer.ggml.scores must be an array of float32 values, found an array of Int32" },
        { "types-mismatch", "tokenizer.ggml.token_type has 1 entries but tokenizer.ggml.tokens has 271" },
        { "type-out-of-range", "tokenizer.ggml.token_type[0] is 7, not a token type" },
        { "bos-5", "tokenizer.ggml.bos_token_id is 5, but this runtime's BOS is token 1" },
        { "eos-float", "tokenizer.ggml.eos_token_id must be an integer, found Float32" },
        { "prefix-not-bool", "tokenizer.ggml.add_space_prefix must be a bool, found String" },
    };

    [Theory]
    [MemberData(nameof(HostileVocabularies))]
    public void Hostile_vocabulary_metadata_is_an_error_naming_the_key(string kind, string expected)
    {
        var allStrings = Enumerable.Range(0, HandVocabularySize).Select(i => $"p{i}").ToArray();
        var zeros = new float[HandVocabularySize];
        var w = new GgufWriter();
        w.AddString("tokenizer.ggml.model", "llama");
        switch (kind)
        {
            case "model-not-a-string": w = new GgufWriter(); w.AddUInt32("tokenizer.ggml.model", 1); break;
            case "no-tokens": w.AddFloat32Array("tokenizer.ggml.scores", zeros); break;
            case "tokens-not-strings": Assert.Contains(expected, Error(Typed(GgufValueType.UInt32), HandVocabularySize)); return;
            case "tokens-nested": Assert.Contains(expected, Error(Typed(GgufValueType.Array), HandVocabularySize)); return;
            case "tokens-a-string": w.AddString("tokenizer.ggml.tokens", "abc"); break;
            case "too-few-tokens": w.AddStringArray("tokenizer.ggml.tokens", ["a", "b", "c"]); break;
            case "no-scores": w.AddStringArray("tokenizer.ggml.tokens", allStrings); break;
            case "scores-mismatch": w.AddStringArray("tokenizer.ggml.tokens", allStrings); w.AddFloat32Array("tokenizer.ggml.scores", [0, 0]); break;
            case "scores-int": w.AddStringArray("tokenizer.ggml.tokens", allStrings); w.AddInt32Array("tokenizer.ggml.scores", new int[HandVocabularySize]); break;
            default:
                w.AddStringArray("tokenizer.ggml.tokens", allStrings);
                w.AddFloat32Array("tokenizer.ggml.scores", zeros);
                switch (kind)
                {
                    case "types-mismatch": w.AddInt32Array("tokenizer.ggml.token_type", [1]); break;
                    case "type-out-of-range": w.AddInt32Array("tokenizer.ggml.token_type", Enumerable.Repeat(7, HandVocabularySize).ToArray()); break;
                    case "bos-5": w.AddUInt32("tokenizer.ggml.bos_token_id", 5); break;
                    case "eos-float": w.AddFloat32("tokenizer.ggml.eos_token_id", 2); break;
                    case "prefix-not-bool": w.AddString("tokenizer.ggml.add_space_prefix", "yes"); break;
                    default: throw new ArgumentException(kind);
                }
                break;
        }
        Assert.Contains(expected, Error(w, HandVocabularySize));
    }

    [Fact]
    public void An_absurd_token_count_is_refused_before_allocating()
    {
        // 2^40 strings claimed in a file of a few dozen bytes.
        var bytes = new RawFileBuilder().GgufHeader(3, 0, 2).Str("tokenizer.ggml.model").U32((uint)GgufValueType.String).Str("llama")
            .Str("tokenizer.ggml.tokens").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.String).U64(1UL << 40).Raw(new byte[32]).ToArray();
        using var file = new TempFile(bytes, ".gguf");
        var e = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(file.Path, 512));
        Assert.Contains("tokenizer.ggml.tokens", e.Message);
        Assert.Contains("claims 1099511627776 elements", e.Message);
    }

    [Fact]
    public void Signed_and_narrow_integer_arrays_read_back_with_their_types()
    {
        // Regression: int32 (llama.cpp's token_type) and int8 arrays used to throw an InvalidCastException while parsing.
        var bytes = new RawFileBuilder().GgufHeader(3, 0, 2)
            .Str("i32").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.Int32).U64(2).U32(unchecked((uint)-1)).U32(6)
            .Str("i8").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.Int8).U64(2).U8(0xFF).U8(3).ToArray();
        using var file = new TempFile(bytes, ".gguf");
        using var gguf = GgufFile.Open(file.Path);
        Assert.True(gguf.Metadata.TryGetArray("i32", out var i32));
        Assert.Equal(new[] { -1, 6 }, (int[])i32.Values);
        Assert.True(gguf.Metadata.TryGetArray("i8", out var i8));
        Assert.Equal(new sbyte[] { -1, 3 }, (sbyte[])i8.Values);
    }

    private static TempFile VocabularyFile(Llama2cTokenizer tokenizer)
    {
        var w = new GgufWriter();
        GgufVocabulary.Write(w, tokenizer);
        var file = new TempFile(".gguf");
        w.Write(file.Path);
        return file;
    }

    private static Llama2cTokenizer Load(GgufWriter w)
    {
        using var file = new TempFile(".gguf");
        w.Write(file.Path);
        return Llama2cTokenizer.Load(file.Path, HandVocabularySize);
    }

    private static string Error(GgufWriter w, int vocabSize)
    {
        var bytes = new MemoryStream();
        w.Write(bytes);
        return Error(bytes.ToArray(), vocabSize);
    }

    private static string Error(byte[] bytes, int vocabSize)
    {
        using var file = new TempFile(bytes, ".gguf");
        var e = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(file.Path, vocabSize));
        Assert.StartsWith(file.Path + ": ", e.Message);
        return e.Message;
    }

    // tokenizer.ggml.tokens as a one-element array of another element type, written byte by byte (the writer has no such method).
    private static byte[] Typed(GgufValueType elementType)
    {
        var raw = new RawFileBuilder().GgufHeader(3, 0, 2).Str("tokenizer.ggml.model").U32((uint)GgufValueType.String).Str("llama")
            .Str("tokenizer.ggml.tokens").U32((uint)GgufValueType.Array).U32((uint)elementType).U64(1);
        if (elementType == GgufValueType.Array) raw.U32((uint)GgufValueType.UInt32).U64(1).U32(7);
        else raw.U32(7);
        return raw.ToArray();
    }
}
