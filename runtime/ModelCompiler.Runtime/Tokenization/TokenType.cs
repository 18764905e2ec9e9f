namespace ModelCompiler.Runtime.Tokenization;

/// <summary>
/// A SentencePiece piece's type, with llama.cpp's numbers (<c>llama_token_type</c>, GGUF's <c>tokenizer.ggml.token_type</c>).
/// </summary>
public enum TokenType
{
    /// <summary>No type recorded; treated as normal.</summary>
    Undefined = 0,
    /// <summary>A piece of text.</summary>
    Normal = 1,
    /// <summary><c>&lt;unk&gt;</c>.</summary>
    Unknown = 2,
    /// <summary>A control token (BOS, EOS): never produced from text, prints nothing.</summary>
    Control = 3,
    /// <summary>A user-defined piece, matched in text like a normal one.</summary>
    UserDefined = 4,
    /// <summary>Reserved, never produced.</summary>
    Unused = 5,
    /// <summary>A raw byte, <c>&lt;0xNN&gt;</c>: the fallback for text no piece covers.</summary>
    Byte = 6,
}
