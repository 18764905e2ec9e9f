using System.Collections.Generic;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Graph;

namespace ModelCompiler.Compiler.Description;

/// <summary>Rotary pairing convention (mirrors the runtime's RopeStyle).</summary>
internal enum RopeStyle { Interleaved, Half }

/// <summary>The architecture's sizes and numerics.</summary>
internal sealed record HyperParameters(
    int Dim, int HiddenDim, int NumLayers, int NumHeads, int NumKvHeads, int VocabSize, int MaxSeqLen,
    double RopeTheta, RopeStyle RopeStyle, double NormEps, bool TiedEmbedding)
{
    /// <summary>The llama template's q, k and v projections add a bias (Qwen2).</summary>
    public bool QkvBias { get; init; }

    public int HeadDim => Dim / NumHeads;
    public int KvDim => NumKvHeads * HeadDim;
}

/// <summary>Where the weights come from.</summary>
internal sealed record WeightSourceDescription(string Format, string DType, string Path);

/// <summary>Where the tokenizer comes from.</summary>
internal sealed record TokenizerDescription(string Format, string Path);

/// <summary>Serving-time sizes the engine is compiled for.</summary>
internal sealed record RuntimeOptions(int KvBlockSize, int MaxBatchTokens, int MaxSequences, int KvBlocks)
{
    /// <summary>Element type of the CPU engine's KV cache: <c>f32</c> (default) or <c>f16</c>.</summary>
    public string KvCacheDType { get; init; } = "f32";
}

/// <summary>
/// A validated description: the template (if any) has been expanded, so <see cref="Block"/> is the one
/// graph form everything after parsing sees.
/// </summary>
internal sealed record ModelDescription(
    string Name, string Architecture, HyperParameters Hyper, WeightSourceDescription Weights,
    TokenizerDescription Tokenizer, RuntimeOptions Runtime, BlockGraph Block)
{
    /// <summary>How the server renders chat messages into a prompt (<c>plain</c> or <c>llama2</c>).</summary>
    public string ChatTemplate { get; init; } = "plain";
}

/// <summary>Result of parsing: a description when there were no errors, and every diagnostic found.</summary>
internal sealed record ParseResult(ModelDescription? Description, IReadOnlyList<CompilerDiagnostic> Diagnostics);
