using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace ModelCompiler.Runtime.Tokenization;

/// <summary>
/// The SentencePiece BPE tokenizer of llama2.c, read from its <c>tokenizer.bin</c> format
/// (int32 max_token_length, then per token: float32 score, int32 length, the piece's bytes) or from a GGUF
/// file's <c>llama</c> vocabulary (<see cref="GgufVocabulary"/>): the same pieces, scores and algorithm.
/// <see cref="Encode"/> reproduces <c>run.c</c>'s <c>encode()</c> token for token, and the piece decoding
/// reproduces its <c>decode()</c>. Pieces use a plain space where SentencePiece writes '▁'.
/// </summary>
public sealed class Llama2cTokenizer
{
    /// <summary>Beginning-of-sequence token id.</summary>
    public const int Bos = 1;
    /// <summary>End-of-sequence token id.</summary>
    public const int Eos = 2;
    /// <summary>The unknown token's id (<c>&lt;unk&gt;</c>), the byte fallback of a vocabulary without byte tokens.</summary>
    public const int Unknown = 0;
    // Longest piece length accepted in a file: real vocabularies stay under 100 bytes.
    internal const int MaxReasonableTokenLength = 1 << 16;

    private readonly byte[][] _pieces;          // [vocab] raw piece bytes as stored
    private readonly byte[][] _decoded;         // [vocab] what decode() prints: "<0xNN>" pieces become byte NN
    private readonly float[] _scores;           // [vocab] merge priority
    private readonly TokenType[]? _types;       // [vocab] SentencePiece piece types, when the file has them (GGUF)
    private readonly int[] _byteTokens;         // [256] the token of each raw byte (its "<0xNN>" piece), for byte fallback
    // Pieces as Latin-1 strings: one char per byte, so byte strings compare exactly and the lookup can
    // use spans of chars without allocating.
    private readonly Dictionary<string, int> _idOfPiece;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _idOfPieceSpan;

    /// <summary>
    /// A tokenizer over pieces (a plain space where SentencePiece writes '▁') and their merge scores.
    /// With <paramref name="types"/>, only normal and user-defined pieces are matched against text, as in
    /// SentencePiece (control, unknown, unused and byte pieces never come out of merging text); without, every piece is (llama2.c).
    /// </summary>
    internal Llama2cTokenizer(byte[][] pieces, float[] scores, int maxTokenLength, TokenType[]? types = null, bool addDummyPrefix = true)
    {
        _pieces = pieces;
        _scores = scores;
        _types = types;
        MaxTokenLength = maxTokenLength;
        AddDummyPrefix = addDummyPrefix;
        _decoded = new byte[pieces.Length][];
        _byteTokens = new int[256];
        _byteTokens.AsSpan().Fill(-1);
        _idOfPiece = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int id = 0; id < pieces.Length; id++)
        {
            bool isByte = TryParseBytePiece(pieces[id], out byte value);
            _decoded[id] = isByte ? [value] : pieces[id];
            if (isByte && _byteTokens[value] < 0) _byteTokens[value] = id;
            if (types is not null && types[id] is not (TokenType.Normal or TokenType.UserDefined or TokenType.Undefined)) continue;
            // Should a piece repeat, the lowest id wins (run.c's bsearch would pick either).
            _idOfPiece.TryAdd(Encoding.Latin1.GetString(pieces[id]), id);
        }
        _idOfPieceSpan = _idOfPiece.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>Number of tokens.</summary>
    public int VocabSize => _pieces.Length;

    /// <summary>Longest piece in bytes, from the file's header.</summary>
    public int MaxTokenLength { get; }

    /// <summary>
    /// SentencePiece's <c>add_dummy_prefix</c>: non-empty text starts with the " " piece, and decoding drops a
    /// leading space right after BOS. True for llama2.c files; GGUF's <c>tokenizer.ggml.add_space_prefix</c>.
    /// </summary>
    public bool AddDummyPrefix { get; }

    /// <summary>The SentencePiece type of <paramref name="token"/>: from a GGUF file, or inferred for a llama2.c file (<see cref="InferType"/>).</summary>
    public TokenType Type(int token) => _types?[CheckToken(token)] ?? InferType(CheckToken(token));

    /// <summary>
    /// Reads a tokenizer of <paramref name="vocabSize"/> tokens, by the file's magic bytes: a GGUF file's embedded
    /// vocabulary (<see cref="GgufVocabulary"/>), else a llama2.c tokenizer file (which does not store the count, so
    /// it comes from the model). Throws <see cref="ModelLoadException"/> naming the file, and the token where reading
    /// failed, when the file is missing, truncated, corrupt, longer than the vocabulary, or a GGUF file without a usable vocabulary.
    /// </summary>
    public static Llama2cTokenizer Load(string path, int vocabSize)
    {
        if (vocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "The vocabulary size must be positive.");
        if (!File.Exists(path)) throw new ModelLoadException($"tokenizer file not found: {path}");
        byte[] file;
        try
        {
            if (IsGguf(path))
            {
                if (GgufVocabulary.TryLoad(path, vocabSize, out var embedded)) return embedded;
                throw new ModelLoadException($"{path}: GGUF file without a vocabulary ({GgufVocabulary.ModelKey} is missing); pass a llama2.c tokenizer.bin or a GGUF file that has one");
            }
            file = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"{path}: cannot read tokenizer file ({e.Message})");
        }

        var bytes = file.AsSpan();
        if (bytes.Length < sizeof(int)) throw new ModelLoadException($"{path}: not a llama2.c tokenizer ({bytes.Length} bytes, shorter than the max_token_length header)");
        int maxTokenLength = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (maxTokenLength < 1 || maxTokenLength > MaxReasonableTokenLength)
            throw new ModelLoadException($"{path}: not a llama2.c tokenizer (max_token_length {maxTokenLength})");

        var pieces = new byte[vocabSize][];
        var scores = new float[vocabSize];
        int offset = sizeof(int);
        for (int id = 0; id < vocabSize; id++)
        {
            if (bytes.Length - offset < 2 * sizeof(int))
                throw new ModelLoadException($"{path}: truncated llama2.c tokenizer: file ends at token {id} of {vocabSize} (is the vocabulary size right?)");
            scores[id] = BinaryPrimitives.ReadSingleLittleEndian(bytes[offset..]);
            int length = BinaryPrimitives.ReadInt32LittleEndian(bytes[(offset + sizeof(float))..]);
            offset += 2 * sizeof(int);
            if (length < 0 || length > maxTokenLength)
                throw new ModelLoadException($"{path}: corrupt llama2.c tokenizer: token {id} has length {length} (max_token_length is {maxTokenLength})");
            if (bytes.Length - offset < length)
                throw new ModelLoadException($"{path}: truncated llama2.c tokenizer: token {id} needs {length} bytes, {bytes.Length - offset} remain");
            pieces[id] = bytes.Slice(offset, length).ToArray();
            offset += length;
        }
        if (offset != bytes.Length)
            throw new ModelLoadException($"{path}: llama2.c tokenizer has {bytes.Length - offset} trailing bytes after {vocabSize} tokens (is the vocabulary size right?)");

        return new Llama2cTokenizer(pieces, scores, maxTokenLength);
    }

    private static bool IsGguf(string path)
    {
        Span<byte> magic = stackalloc byte[4];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        return stream.ReadAtLeast(magic, magic.Length, throwOnEndOfStream: false) == magic.Length && magic.SequenceEqual(Weights.Gguf.GgufFile.Magic);
    }

    /// <summary>The stored piece of <paramref name="token"/>, as raw bytes (byte tokens read <c>&lt;0xNN&gt;</c>).</summary>
    public ReadOnlySpan<byte> Piece(int token) => _pieces[CheckToken(token)];

    /// <summary>The merge score of <paramref name="token"/>.</summary>
    public float Score(int token) => _scores[CheckToken(token)];

    /// <summary>
    /// Tokenizes <paramref name="text"/> exactly as llama2.c's <c>encode(text, bos, eos=0)</c>: optional BOS;
    /// for non-empty text the dummy-prefix token of " "; each UTF-8 code point's token, or its bytes as
    /// byte tokens when the vocabulary lacks it; then, while possible, merge the adjacent pair whose
    /// concatenation is a token with the highest score (the first such pair on ties).
    /// </summary>
    public int[] Encode(string text, bool addBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var tokens = new List<int>(utf8.Length + 2);
        if (addBos) tokens.Add(Bos);
        // run.c would store -1 when a vocabulary has no " "; skipping the prefix is the sane reading.
        if (AddDummyPrefix && utf8.Length > 0 && _idOfPiece.TryGetValue(" ", out int dummyPrefix)) tokens.Add(dummyPrefix);

        AddCodePointTokens(utf8, tokens);
        MergePairs(tokens);
        return tokens.ToArray();
    }

    /// <summary>
    /// The bytes llama2.c's <c>decode(prev, token)</c> prints for <paramref name="token"/>: after BOS a
    /// leading space is dropped (SentencePiece's dummy prefix), and a <c>&lt;0xNN&gt;</c> piece is the raw byte NN.
    /// The span points into the tokenizer and must not be kept past the next call that needs the bytes.
    /// </summary>
    public ReadOnlySpan<byte> DecodePieceBytes(int prevToken, int token)
    {
        ReadOnlySpan<byte> piece = _decoded[CheckToken(token)];
        if (AddDummyPrefix && prevToken == Bos && piece.Length > 0 && piece[0] == (byte)' ') piece = piece[1..];
        return piece;
    }

    /// <summary>
    /// The text of a token sequence, with llama2.c's piece rules. BOS and EOS are control tokens and add no
    /// text (llama2.c never prints them either). Bytes that are not valid UTF-8 become U+FFFD.
    /// </summary>
    public string Decode(IEnumerable<int> tokens)
    {
        var bytes = new List<byte>();
        int prev = -1;
        foreach (int token in tokens)
        {
            if (token != Bos && token != Eos) bytes.AddRange(DecodePieceBytes(prev, token));
            prev = token;
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    // run.c's UTF-8 loop: gather a lead byte and up to three continuation bytes, look the code point up,
    // and fall back to one byte token per byte.
    private void AddCodePointTokens(byte[] utf8, List<int> tokens)
    {
        Span<char> key = stackalloc char[4];
        int length = 0;
        for (int i = 0; i < utf8.Length; i++)
        {
            if ((utf8[i] & 0xC0) != 0x80) length = 0;
            key[length++] = (char)utf8[i];
            bool nextIsContinuation = i + 1 < utf8.Length && (utf8[i + 1] & 0xC0) == 0x80;
            if (nextIsContinuation && length < 4) continue;

            if (_idOfPieceSpan.TryGetValue(key[..length], out int id)) tokens.Add(id);
            else foreach (char b in key[..length]) tokens.Add(ByteToken(b));
            length = 0;
        }
    }

    // The byte's "<0xNN>" piece; run.c assumes it is token b + 3, which holds for every SentencePiece vocabulary
    // with byte fallback (after <unk>, <s>, </s>). A vocabulary without it gets <unk> (run.c would index past its end).
    private int ByteToken(char b) => _byteTokens[b] >= 0 ? _byteTokens[b] : Unknown;

    /// <summary>
    /// A llama2.c file stores no types; these are the ones SentencePiece's export gives: <c>&lt;unk&gt;</c> (0) unknown,
    /// BOS and EOS control, <c>&lt;0xNN&gt;</c> pieces byte, everything else normal.
    /// </summary>
    private TokenType InferType(int token) => token switch
    {
        Unknown when _pieces[token].AsSpan().SequenceEqual("<unk>"u8) => TokenType.Unknown,
        Bos or Eos => TokenType.Control,
        _ => TryParseBytePiece(_pieces[token], out _) ? TokenType.Byte : TokenType.Normal,
    };

    // O(n^2) like run.c: fine for prompts, and the exact tie-breaking is what makes ids match.
    private void MergePairs(List<int> tokens)
    {
        while (true)
        {
            float bestScore = -1e10f;
            int bestId = -1, bestIndex = -1;
            for (int i = 0; i < tokens.Count - 1; i++)
            {
                if (TryLookupPair(tokens[i], tokens[i + 1], out int id) && _scores[id] > bestScore)
                {
                    bestScore = _scores[id];
                    bestId = id;
                    bestIndex = i;
                }
            }
            if (bestIndex == -1) return;
            tokens[bestIndex] = bestId;
            tokens.RemoveAt(bestIndex + 1);
        }
    }

    private bool TryLookupPair(int left, int right, out int id)
    {
        byte[] a = _pieces[left], b = _pieces[right];
        // A per-call buffer, not a field: Encode runs concurrently on server threads. Real pieces are
        // short; a hostile file's long ones go to the heap instead of the stack.
        int length = a.Length + b.Length;
        Span<char> pair = length <= 256 ? stackalloc char[length] : new char[length];
        for (int i = 0; i < a.Length; i++) pair[i] = (char)a[i];
        for (int i = 0; i < b.Length; i++) pair[a.Length + i] = (char)b[i];
        return _idOfPieceSpan.TryGetValue(pair, out id);
    }

    // Exactly "<0xNN>" with two hex digits, as llama2.c's export and SentencePiece write byte tokens.
    internal static bool TryParseBytePiece(byte[] piece, out byte value)
    {
        value = 0;
        if (piece.Length != 6 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x' || piece[5] != '>') return false;
        if (!TryHex(piece[3], out int high) || !TryHex(piece[4], out int low)) return false;
        value = (byte)(high * 16 + low);
        return true;
    }

    private static bool TryHex(byte c, out int digit)
    {
        digit = c switch
        {
            >= (byte)'0' and <= (byte)'9' => c - '0',
            >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
            >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
            _ => -1,
        };
        return digit >= 0;
    }

    private int CheckToken(int token)
    {
        if ((uint)token >= (uint)_pieces.Length)
            throw new ArgumentOutOfRangeException(nameof(token), token, $"Token ids are 0..{_pieces.Length - 1}.");
        return token;
    }
}
