using System.Text;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Tokenization;
using Xunit;

namespace ModelCompiler.Tests.Runtime;

public sealed class TokenizerTests : IDisposable
{
    private static readonly Lazy<Llama2cTokenizer> s_llama2 = new(() => Llama2cTokenizer.Load(TestPaths.Model("tokenizer.bin"), 32000));
    private static readonly Lazy<Llama2cTokenizer> s_tok512 = new(() => Llama2cTokenizer.Load(TestPaths.Model("tok512.bin"), 512));
    private readonly string _tempDir = Directory.CreateTempSubdirectory("mc-tok-").FullName;

    private static Llama2cTokenizer Llama2 => s_llama2.Value;
    private static Llama2cTokenizer Tok512 => s_tok512.Value;

    public void Dispose() => Directory.Delete(_tempDir, recursive: true);

    [Fact]
    public void Reads_the_headers_and_known_pieces()
    {
        Assert.Equal(32000, Llama2.VocabSize);
        Assert.Equal(27, Llama2.MaxTokenLength);
        Assert.Equal(" Hello", Encoding.UTF8.GetString(Llama2.Piece(15043)));
        Assert.Equal("<0x0A>", Encoding.UTF8.GetString(Llama2.Piece(13)));
        Assert.Equal(7, Tok512.MaxTokenLength);
        Assert.Equal(" Once", Encoding.UTF8.GetString(Tok512.Piece(403)));
    }

    [Theory]
    [InlineData("Hello world", new[] { 1, 15043, 3186 })]
    [InlineData("Once upon a time", new[] { 1, 9038, 2501, 263, 931 })]
    public void Encodes_like_llama2c_with_the_llama2_vocabulary(string text, int[] expected)
    {
        Assert.Equal(expected, Llama2.Encode(text, addBos: true));
        Assert.Equal(expected[1..], Llama2.Encode(text, addBos: false));
    }

    [Fact]
    public void Encodes_a_longer_text_like_llama2c()
    {
        // Ids from a separate Python transcription of run.c's encode() over the same file; they are also
        // the ids SentencePiece gives with the Llama 2 model (',' 29892, '.' 29889, '\n' as <0x0A> = 13).
        const string text = "Once upon a time, there was a little girl named Lily.\nShe liked to play outside.";
        int[] expected = [1, 9038, 2501, 263, 931, 29892, 727, 471, 263, 2217, 7826, 4257, 365, 2354, 29889, 13, 13468, 23289, 304, 1708, 5377, 29889];
        Assert.Equal(expected, Llama2.Encode(text, addBos: true));
        // A code point the vocabulary lacks (U+1F389) falls back to its four bytes after the lone " " 29871.
        Assert.Equal(new[] { 29871, 0xF0 + 3, 0x9F + 3, 0x8E + 3, 0x89 + 3 }, Llama2.Encode("🎉", addBos: false));
    }

    [Fact]
    public void Encodes_stories_prompt_with_tok512_into_whole_words()
    {
        // ' Once' 403, ' upon' 407, ' a' 261, ' time' 378 are single pieces of tok512.bin.
        Assert.Equal(new[] { 1, 403, 407, 261, 378 }, Tok512.Encode("Once upon a time", addBos: true));
    }

    [Fact]
    public void Empty_text_has_no_dummy_prefix()
    {
        Assert.Equal(new[] { 1 }, Llama2.Encode("", addBos: true));
        Assert.Empty(Llama2.Encode("", addBos: false));
    }

    [Fact]
    public void Missing_code_points_fall_back_to_byte_tokens()
    {
        // U+1F600 is F0 9F 98 80 in UTF-8; byte b is token b + 3; tok512's " " is token 410.
        Assert.Equal(new[] { 1, 410, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3 }, Tok512.Encode("😀", addBos: true));
        Assert.Equal("😀", Tok512.Decode(Tok512.Encode("😀", addBos: true)));
        // 你 is E4 BD A0, 好 is E5 A5 BD; tok512 has neither.
        int[] chinese = Tok512.Encode("你好", addBos: false);
        Assert.Equal(new[] { 410, 0xE4 + 3, 0xBD + 3, 0xA0 + 3, 0xE5 + 3, 0xA5 + 3, 0xBD + 3 }, chinese);
    }

    [Theory]
    [InlineData("Hello world")]
    [InlineData("Once upon a time, there was a little girl named Lily.\nShe liked to play outside.")]
    [InlineData("  two leading spaces, tabs\tand trailing ")]
    [InlineData("héllo wörld — 你好 😀 ∑ x² 🎉🎉")]
    [InlineData("<0x41> is not a byte token in text")]
    public void Decode_of_encode_gives_the_text_back(string text)
    {
        Assert.Equal(text, Llama2.Decode(Llama2.Encode(text, addBos: true)));
        Assert.Equal(text, Tok512.Decode(Tok512.Encode(text, addBos: true)));
    }

    [Fact]
    public void Decoding_pieces_follows_run_c()
    {
        // After BOS the leading space of ' Hello' is stripped; otherwise kept.
        Assert.Equal("Hello"u8.ToArray(), Llama2.DecodePieceBytes(Llama2cTokenizer.Bos, 15043).ToArray());
        Assert.Equal(" Hello"u8.ToArray(), Llama2.DecodePieceBytes(3186, 15043).ToArray());
        // <0x0A> (token 13) is a newline byte, <0xE4> (token 231) the raw byte E4.
        Assert.Equal(new byte[] { 10 }, Llama2.DecodePieceBytes(3186, 13).ToArray());
        Assert.Equal(new byte[] { 0xE4 }, Llama2.DecodePieceBytes(3186, 0xE4 + 3).ToArray());
        Assert.Equal(" world", Llama2.Decode([3186]));
        Assert.Equal("Hello world", Llama2.Decode([1, 15043, 3186, 2]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Llama2.DecodePieceBytes(1, 32000));
    }

    [Fact]
    public void Streaming_holds_back_a_character_split_across_tokens()
    {
        var stream = new StreamingDetokenizer(Tok512);
        Assert.Equal("", stream.Push(410));           // " " after BOS: the stripped dummy prefix
        Assert.Equal("", stream.Push(0xF0 + 3));
        Assert.Equal("", stream.Push(0x9F + 3));
        Assert.Equal("", stream.Push(0x98 + 3));
        Assert.Equal("😀", stream.Push(0x80 + 3));
        Assert.Equal(" Once", stream.Push(403));
        Assert.Equal("", stream.Flush());
    }

    [Fact]
    public void Streaming_output_concatenates_to_the_full_decode()
    {
        const string text = "Ünïcödé, 你好, 😀 and plain words.";
        int[] tokens = Llama2.Encode(text, addBos: true);
        var stream = new StreamingDetokenizer(Llama2);
        var streamed = new StringBuilder();
        foreach (int t in tokens[1..]) streamed.Append(stream.Push(t));
        streamed.Append(stream.Flush());
        Assert.Equal(text, streamed.ToString());
    }

    [Fact]
    public void Streaming_turns_invalid_and_unfinished_bytes_into_replacement_characters()
    {
        var stream = new StreamingDetokenizer(Tok512, prevToken: 403);
        Assert.Equal("\uFFFD", stream.Push(0x80 + 3));   // a lone continuation byte
        Assert.Equal("", stream.Push(0xE4 + 3));         // a lead byte waiting for two more
        Assert.Equal("\uFFFD Once", stream.Push(403));   // interrupted: replaced, then the next piece
        Assert.Equal("", stream.Push(0xF0 + 3));
        Assert.Equal("\uFFFD", stream.Flush());          // unfinished at the end
    }

    [Fact]
    public void Missing_file_is_named()
    {
        string path = Path.Combine(_tempDir, "none.bin");
        var e = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(path, 512));
        Assert.Equal($"tokenizer file not found: {path}", e.Message);
    }

    [Fact]
    public void Truncated_file_names_the_token_where_it_ends()
    {
        byte[] file = File.ReadAllBytes(TestPaths.Model("tok512.bin"));
        string path = Write("truncated.bin", file[..^3]);
        var e = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(path, 512));
        Assert.StartsWith($"{path}: truncated llama2.c tokenizer: token 511 needs", e.Message);
    }

    [Fact]
    public void Wrong_vocabulary_size_is_caught_both_ways()
    {
        string path = TestPaths.Model("tok512.bin");
        var tooMany = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(path, 513));
        Assert.Equal($"{path}: truncated llama2.c tokenizer: file ends at token 512 of 513 (is the vocabulary size right?)", tooMany.Message);
        var tooFew = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(path, 511));
        Assert.StartsWith($"{path}: llama2.c tokenizer has ", tooFew.Message);
        Assert.Contains("trailing bytes after 511 tokens", tooFew.Message);
    }

    [Fact]
    public void Corrupt_lengths_and_headers_are_rejected()
    {
        // max_token_length 4; token 0: score 0, length 2, "ab"; token 1: score 0, length -7.
        byte[] negative = [.. BitConverter.GetBytes(4), .. BitConverter.GetBytes(0f), .. BitConverter.GetBytes(2), (byte)'a', (byte)'b', .. BitConverter.GetBytes(0f), .. BitConverter.GetBytes(-7)];
        string path = Write("negative.bin", negative);
        var e = Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(path, 2));
        Assert.Equal($"{path}: corrupt llama2.c tokenizer: token 1 has length -7 (max_token_length is 4)", e.Message);

        string zeroMax = Write("zero-max.bin", [.. BitConverter.GetBytes(0), .. new byte[16]]);
        Assert.Contains("not a llama2.c tokenizer (max_token_length 0)", Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(zeroMax, 1)).Message);

        string tiny = Write("tiny.bin", [1, 2]);
        Assert.Contains("not a llama2.c tokenizer (2 bytes", Assert.Throws<ModelLoadException>(() => Llama2cTokenizer.Load(tiny, 1)).Message);
    }

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_tempDir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }
}
