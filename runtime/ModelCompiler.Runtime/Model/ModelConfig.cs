using System;

namespace ModelCompiler.Runtime;

/// <summary>How rotary embedding pairs the elements of a head.</summary>
public enum RopeStyle
{
    /// <summary>Adjacent pairs (x[2i], x[2i+1]): Meta's original Llama and llama2.c checkpoints, GGUF files.</summary>
    Interleaved,
    /// <summary>Halves (x[i], x[i + headDim/2]): Hugging Face (GPT-NeoX style) checkpoints.</summary>
    Half,
}

/// <summary>
/// Everything the runtime needs to know about a compiled model: the architecture's hyperparameters and
/// the runtime options from its description. A generated engine exposes its own as a constant.
/// </summary>
public sealed record ModelConfig
{
    /// <summary>Model name from the description.</summary>
    public required string Name { get; init; }
    /// <summary>Model (residual stream) width.</summary>
    public required int Dim { get; init; }
    /// <summary>Width of the MLP's hidden layer.</summary>
    public required int HiddenDim { get; init; }
    /// <summary>Number of transformer blocks.</summary>
    public required int NumLayers { get; init; }
    /// <summary>Number of query heads.</summary>
    public required int NumHeads { get; init; }
    /// <summary>Number of key/value heads (grouped-query attention when fewer than <see cref="NumHeads"/>).</summary>
    public required int NumKvHeads { get; init; }
    /// <summary>Vocabulary size.</summary>
    public required int VocabSize { get; init; }
    /// <summary>Maximum context length in tokens.</summary>
    public required int MaxSeqLen { get; init; }
    /// <summary>Rotary embedding base.</summary>
    public required float RopeTheta { get; init; }
    /// <summary>Rotary pairing convention.</summary>
    public required RopeStyle RopeStyle { get; init; }
    /// <summary>RMSNorm epsilon.</summary>
    public required float NormEps { get; init; }
    /// <summary>True when the LM head reuses the token embedding matrix.</summary>
    public required bool TiedEmbedding { get; init; }
    /// <summary>Tokens per KV-cache block.</summary>
    public required int KvBlockSize { get; init; }
    /// <summary>Most tokens one forward pass processes (the activation arena is sized for it).</summary>
    public required int MaxBatchTokens { get; init; }
    /// <summary>Most sequences one forward pass processes.</summary>
    public required int MaxSequences { get; init; }
    /// <summary>Number of blocks in the KV pool (a count: an f16 pool of as many blocks takes half the memory).</summary>
    public required int NumKvBlocks { get; init; }
    /// <summary>Element type of the CPU engine's KV cache (<c>runtime.kvCacheDType</c>); the CUDA runner supports f32 only.</summary>
    public KvCacheDType KvCacheDType { get; init; } = KvCacheDType.F32;
    /// <summary>Weight file format (<c>llama2c</c>).</summary>
    public required string WeightFormat { get; init; }
    /// <summary>Default weight file, relative to the repository's shared folder or absolute.</summary>
    public required string WeightsPath { get; init; }
    /// <summary>Tokenizer format (<c>llama2c</c>).</summary>
    public required string TokenizerFormat { get; init; }
    /// <summary>Default tokenizer file, relative to the repository's shared folder or absolute.</summary>
    public required string TokenizerPath { get; init; }

    /// <summary>The q, k and v projections add a bias (Qwen2): <c>layers.N.attention.wq.bias</c> etc.</summary>
    public bool QkvBias { get; init; }

    /// <summary>How the server renders chat messages into a prompt: <c>plain</c> or <c>llama2</c>.</summary>
    public string ChatTemplate { get; init; } = "plain";

    /// <summary>Width of one head.</summary>
    public int HeadDim => Dim / NumHeads;
    /// <summary>Width of the keys (and values) of one token: <c>NumKvHeads * HeadDim</c>.</summary>
    public int KvDim => NumKvHeads * HeadDim;
    /// <summary>Most KV blocks one sequence can hold.</summary>
    public int MaxBlocksPerSequence => (MaxSeqLen + KvBlockSize - 1) / KvBlockSize;
}
