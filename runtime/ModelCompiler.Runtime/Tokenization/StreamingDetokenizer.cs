using System;
using System.Text;

namespace ModelCompiler.Runtime.Tokenization;

/// <summary>
/// Turns a stream of generated token ids into text as it arrives. A token may end in the middle of a
/// multi-byte UTF-8 character (byte-fallback tokens always do), so incomplete sequences are held back
/// until the rest arrives; invalid ones become U+FFFD. Call <see cref="Flush"/> at the end of the stream.
/// Feed it every token from the one after the prompt's BOS onward, or the BOS itself: the previous token
/// decides whether a leading space is dropped, as in llama2.c. One instance per sequence; not thread-safe.
/// </summary>
public sealed class StreamingDetokenizer
{
    private readonly Llama2cTokenizer _tokenizer;
    // The UTF-8 decoder keeps the bytes of an unfinished character between calls.
    private readonly Decoder _decoder = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];
    private int _prevToken;

    /// <summary>Starts a stream whose previous token is <paramref name="prevToken"/> (BOS for a fresh generation).</summary>
    public StreamingDetokenizer(Llama2cTokenizer tokenizer, int prevToken = Llama2cTokenizer.Bos)
    {
        _tokenizer = tokenizer;
        _prevToken = prevToken;
    }

    /// <summary>
    /// Adds one token and returns the text it completes, possibly empty. BOS and EOS add no text.
    /// </summary>
    public string Push(int token)
    {
        int prev = _prevToken;
        _prevToken = token;
        if (token is Llama2cTokenizer.Bos or Llama2cTokenizer.Eos) return "";
        return DecodeBytes(_tokenizer.DecodePieceBytes(prev, token), flush: false);
    }

    /// <summary>Ends the stream: a held-back incomplete character comes out as U+FFFD.</summary>
    public string Flush() => DecodeBytes(ReadOnlySpan<byte>.Empty, flush: true);

    private string DecodeBytes(ReadOnlySpan<byte> bytes, bool flush)
    {
        int needed = _decoder.GetCharCount(bytes, flush);
        if (needed > _chars.Length) _chars = new char[Math.Max(needed, 2 * _chars.Length)];
        int count = _decoder.GetChars(bytes, _chars, flush);
        return count == 0 ? "" : new string(_chars, 0, count);
    }
}
