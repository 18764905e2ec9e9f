using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using ModelCompiler.Runtime.Weights.Gguf;

namespace ModelCompiler.Runtime.Tokenization;

/// <summary>
/// The vocabulary llama.cpp embeds in a GGUF file, for its <c>llama</c> tokenizer model (SentencePiece BPE:
/// <c>tokenizer.ggml.tokens</c>, <c>.scores</c>, <c>.token_type</c>, the BOS/EOS ids, <c>.add_space_prefix</c>), mapped onto
/// <see cref="Llama2cTokenizer"/>: the same pieces with '▁' (U+2581, as SentencePiece writes a space) read as a
/// plain space, byte pieces <c>&lt;0xNN&gt;</c>, and merges by score. Every value is checked before it is used: a
/// file with a missing, mistyped or inconsistent vocabulary is a <see cref="ModelLoadException"/> naming the key.
/// </summary>
public static class GgufVocabulary
{
    /// <summary>The key naming the tokenizer model (<c>llama</c>, <c>gpt2</c>, …).</summary>
    public const string ModelKey = "tokenizer.ggml.model";
    /// <summary>The one tokenizer model this runtime reads: SentencePiece BPE with scores.</summary>
    public const string LlamaModel = "llama";

    private const string TokensKey = "tokenizer.ggml.tokens";
    private const string ScoresKey = "tokenizer.ggml.scores";
    private const string TypesKey = "tokenizer.ggml.token_type";
    private const string BosKey = "tokenizer.ggml.bos_token_id";
    private const string EosKey = "tokenizer.ggml.eos_token_id";
    private const string UnknownKey = "tokenizer.ggml.unknown_token_id";
    private const string AddBosKey = "tokenizer.ggml.add_bos_token";
    private const string AddSpacePrefixKey = "tokenizer.ggml.add_space_prefix";
    private const char SpaceMarker = '\u2581'; // '▁'

    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// Writes <paramref name="tokenizer"/>'s vocabulary as a <c>llama</c> tokenizer: pieces with '▁' for spaces, scores,
    /// types (a llama2.c file's are inferred: <see cref="Llama2cTokenizer.Type"/>), BOS 1, EOS 2, unknown 0.
    /// Control pieces lose the newlines llama2.c's export wraps them in (<c>"\n&lt;s&gt;\n"</c> is written <c>&lt;s&gt;</c>, as llama.cpp has it).
    /// </summary>
    /// <exception cref="ModelLoadException">A piece is not valid UTF-8 (GGUF strings are UTF-8).</exception>
    public static void Write(GgufWriter writer, Llama2cTokenizer tokenizer)
    {
        int n = tokenizer.VocabSize;
        var tokens = new string[n];
        var scores = new float[n];
        var types = new int[n];
        for (int id = 0; id < n; id++)
        {
            string piece;
            try
            {
                piece = s_strictUtf8.GetString(tokenizer.Piece(id));
            }
            catch (DecoderFallbackException)
            {
                throw new ModelLoadException($"tokenizer piece {id} is not valid UTF-8, which a GGUF vocabulary cannot store");
            }
            var type = tokenizer.Type(id);
            if (type == TokenType.Control) piece = piece.Trim('\n');
            tokens[id] = piece.Replace(' ', SpaceMarker);
            scores[id] = tokenizer.Score(id);
            types[id] = (int)type;
        }
        writer.AddString(ModelKey, LlamaModel);
        writer.AddStringArray(TokensKey, tokens);
        writer.AddFloat32Array(ScoresKey, scores);
        writer.AddInt32Array(TypesKey, types);
        writer.AddUInt32(BosKey, Llama2cTokenizer.Bos);
        writer.AddUInt32(EosKey, Llama2cTokenizer.Eos);
        writer.AddUInt32(UnknownKey, Llama2cTokenizer.Unknown);
        writer.AddBool(AddBosKey, true);
        writer.AddBool(AddSpacePrefixKey, tokenizer.AddDummyPrefix);
    }

    /// <summary>
    /// Opens GGUF file <paramref name="path"/> and reads its vocabulary. False when it carries none (no
    /// <c>tokenizer.ggml.model</c>, or llama.cpp's <c>no_vocab</c>/<c>none</c>).
    /// </summary>
    /// <exception cref="ModelLoadException">The file is not a usable GGUF file, its tokenizer model is not <c>llama</c>, or its vocabulary is inconsistent.</exception>
    public static bool TryLoad(string path, int vocabSize, out Llama2cTokenizer tokenizer)
    {
        using var file = GgufFile.Open(path);
        return TryRead(file.Metadata, path, vocabSize, out tokenizer);
    }

    /// <summary>Reads the vocabulary from a GGUF file's metadata; see <see cref="TryLoad"/>. <paramref name="path"/> is for messages.</summary>
    public static bool TryRead(GgufMetadata metadata, string path, int vocabSize, out Llama2cTokenizer tokenizer)
    {
        tokenizer = null!;
        if (!metadata.TryGetValue(ModelKey, out var modelType, out var modelValue)) return false;
        if (modelValue is not string model) throw Error(path, $"{ModelKey} must be a string, found {Describe(modelType, modelValue)}");
        if (model is "no_vocab" or "none") return false;
        if (model != LlamaModel)
            throw Error(path, $"{ModelKey} is '{model}'{KnownModel(model)}, which this runtime cannot tokenize (it reads '{LlamaModel}', SentencePiece BPE with scores); " +
                "pass --tokenizer FILE with a llama2.c tokenizer.bin or a GGUF file whose vocabulary is 'llama'");

        string[] tokens = Array<string>(metadata, path, TokensKey, GgufValueType.String, "strings", required: true)!;
        if (tokens.Length != vocabSize)
            throw Error(path, $"the vocabulary has {tokens.Length} tokens ({TokensKey}) but the model's vocabSize is {vocabSize}");
        float[] scores = Array<float>(metadata, path, ScoresKey, GgufValueType.Float32, "float32 values", required: true)!;
        if (scores.Length != tokens.Length)
            throw Error(path, $"{ScoresKey} has {scores.Length} entries but {TokensKey} has {tokens.Length}");
        int[]? rawTypes = Array<int>(metadata, path, TypesKey, GgufValueType.Int32, "int32 values", required: false);
        TokenType[]? types = null;
        if (rawTypes is not null)
        {
            if (rawTypes.Length != tokens.Length)
                throw Error(path, $"{TypesKey} has {rawTypes.Length} entries but {TokensKey} has {tokens.Length}");
            types = new TokenType[rawTypes.Length];
            for (int id = 0; id < rawTypes.Length; id++)
            {
                if (rawTypes[id] is < (int)TokenType.Undefined or > (int)TokenType.Byte)
                    throw Error(path, $"{TypesKey}[{id}] is {rawTypes[id]}, not a token type (0 to 6)");
                types[id] = (TokenType)rawTypes[id];
            }
        }
        // The runtime stops generation at, and never prints, tokens 1 and 2 (TextGenerator, the server); a vocabulary
        // with other ids would silently run on, so it is refused rather than half supported.
        CheckSpecialId(metadata, path, BosKey, Llama2cTokenizer.Bos, "BOS");
        CheckSpecialId(metadata, path, EosKey, Llama2cTokenizer.Eos, "EOS");
        bool addSpacePrefix = true;
        if (metadata.TryGetValue(AddSpacePrefixKey, out var prefixType, out var prefixValue))
            addSpacePrefix = prefixValue is bool b ? b : throw Error(path, $"{AddSpacePrefixKey} must be a bool, found {Describe(prefixType, prefixValue)}");

        var pieces = new byte[tokens.Length][];
        int maxLength = 1;
        for (int id = 0; id < tokens.Length; id++)
        {
            pieces[id] = Encoding.UTF8.GetBytes(tokens[id].Replace(SpaceMarker, ' '));
            if (pieces[id].Length > Llama2cTokenizer.MaxReasonableTokenLength)
                throw Error(path, $"{TokensKey}[{id}] is {pieces[id].Length} bytes long (at most {Llama2cTokenizer.MaxReasonableTokenLength} accepted)");
            maxLength = Math.Max(maxLength, pieces[id].Length);
        }
        tokenizer = new Llama2cTokenizer(pieces, scores, maxLength, types, addSpacePrefix);
        return true;
    }

    private static T[]? Array<T>(GgufMetadata metadata, string path, string key, GgufValueType elementType, string what, bool required)
    {
        if (!metadata.TryGetValue(key, out var type, out var value))
            return required ? throw Error(path, $"the vocabulary has no {key}") : null;
        if (value is not GgufArray array || array.ElementType != elementType || array.Values is not T[] values)
            throw Error(path, $"{key} must be an array of {what}, found {Describe(type, value)}");
        if (values.Length == 0) throw Error(path, $"{key} is empty");
        return values;
    }

    private static void CheckSpecialId(GgufMetadata metadata, string path, string key, int expected, string name)
    {
        if (!metadata.TryGetValue(key, out var type, out _)) return;
        if (!metadata.TryGetInteger(key, out long id)) throw Error(path, $"{key} must be an integer, found {type}");
        if (id != expected)
            throw Error(path, $"{key} is {id}, but this runtime's {name} is token {expected} (the Llama/SentencePiece convention); other special-token ids are not supported");
    }

    private static string Describe(GgufValueType type, object value) =>
        value is GgufArray array ? $"an array of {array.ElementType}" : type.ToString();

    private static string KnownModel(string model) => model switch
    {
        "gpt2" => " (byte-level BPE with merges)",
        "bert" => " (WordPiece)",
        "t5" => " (SentencePiece unigram)",
        "rwkv" => " (RWKV's greedy tokenizer)",
        "plamo2" or "ugm" => " (unigram)",
        _ => "",
    };

    private static ModelLoadException Error(string path, string message) =>
        new(string.Create(CultureInfo.InvariantCulture, $"{path}: {message}"));
}
