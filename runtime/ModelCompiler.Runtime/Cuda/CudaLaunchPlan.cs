using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Cuda;

/// <summary>When a launch runs in a forward pass.</summary>
public enum CudaStage
{
    /// <summary>Once, before the blocks (the embedding).</summary>
    Prologue,
    /// <summary>Once per layer, in order; per-layer weights and the KV cache pointers are that layer's.</summary>
    Layer,
    /// <summary>Once, after the blocks (final norm and LM head).</summary>
    Epilogue,
    /// <summary>Greedy sampling on the device: only when the caller wants token ids instead of logits.</summary>
    Sampling,
}

/// <summary>The batch quantity a grid dimension scales with.</summary>
public enum CudaCount
{
    /// <summary>Nothing: the dimension is fixed.</summary>
    One,
    /// <summary>The batch's token count.</summary>
    Tokens,
    /// <summary>The batch's sequence count.</summary>
    Sequences,
    /// <summary>The number of logits rows.</summary>
    Logits,
}

/// <summary>
/// A grid as a function of the batch: <c>(X, ceil(count(YCount) / YDivisor) · YMultiplier, Z)</c>, where
/// count(One) = 1. A launch whose Y comes out 0 is skipped.
/// </summary>
/// <param name="X">Blocks along x (fixed by the model's shapes).</param>
/// <param name="YCount">What y scales with.</param>
/// <param name="YDivisor">Items handled per block along y (tokens per tile).</param>
/// <param name="Z">Blocks along z (attention splits, split-K parts).</param>
public readonly record struct CudaGrid(uint X, CudaCount YCount, int YDivisor, uint Z)
{
    /// <summary>The grid for a batch of <paramref name="numTokens"/> tokens, <paramref name="numSequences"/> sequences and <paramref name="numLogits"/> logits rows.</summary>
    public Dim3 For(int numTokens, int numSequences, int numLogits)
    {
        int count = YCount switch
        {
            CudaCount.Tokens => numTokens,
            CudaCount.Sequences => numSequences,
            CudaCount.Logits => numLogits,
            _ => 1,
        };
        return new Dim3(X, (uint)((count + YDivisor - 1) / YDivisor), Z);
    }
}

/// <summary>What a kernel argument refers to; the runner turns each into a <see cref="KernelArg"/>.</summary>
public enum CudaArgKind
{
    /// <summary>Pointer to weight table entry <c>Value</c> (a global weight).</summary>
    Weight,
    /// <summary>Pointer to this layer's weight in slot <c>Value</c>: table index <c>FirstLayerWeight + layer · LayerWeightCount + Value</c>.</summary>
    LayerWeight,
    /// <summary>Pointer to the activation arena at <c>Value</c> floats.</summary>
    Arena,
    /// <summary>Pointer to the scratch buffer at <c>Value</c> floats (attention partials).</summary>
    Scratch,
    /// <summary>Pointer to <c>[MaxTokens]</c> int token ids (ForwardBatch.TokenIds).</summary>
    TokenIds,
    /// <summary>Pointer to <c>[MaxTokens]</c> int positions.</summary>
    Positions,
    /// <summary>Pointer to <c>[MaxTokens]</c> int sequence index of each token.</summary>
    SequenceOfToken,
    /// <summary>Pointer to <c>[MaxTokens]</c> int packed token index of each logits row.</summary>
    LogitsTokenIndices,
    /// <summary>Pointer to <c>[MaxSequences, BlockTableStride]</c> int block tables.</summary>
    BlockTables,
    /// <summary>int: row length of the block tables (ForwardBatch.MaxBlocksPerSequence).</summary>
    BlockTableStride,
    /// <summary>Pointer to this layer's keys: <c>[numBlocks, blockSize, kvDim]</c> f32 (the pool at layer · numBlocks · blockSize · kvDim).</summary>
    KeyCache,
    /// <summary>Pointer to this layer's values, laid out as the keys.</summary>
    ValueCache,
    /// <summary>Pointer to the <c>[MaxTokens, VocabSize]</c> f32 logits output.</summary>
    Logits,
    /// <summary>Pointer to the <c>[MaxTokens]</c> int sampled token ids.</summary>
    SampledTokens,
    /// <summary>int: the batch's token count.</summary>
    NumTokens,
    /// <summary>int: the batch's sequence count.</summary>
    NumSequences,
    /// <summary>int: the number of logits rows.</summary>
    NumLogits,
    /// <summary>int: <c>Value</c>.</summary>
    Int,
    /// <summary>float: <c>FloatValue</c>.</summary>
    Float,
    /// <summary>A null pointer (an optional input the kernel does not read).</summary>
    Null,
}

/// <summary>One kernel argument of a launch, in the kernel's parameter order.</summary>
/// <param name="Kind">What it refers to.</param>
/// <param name="Value">Table index, slot, offset in floats, or the int itself.</param>
/// <param name="FloatValue">The float itself (for <see cref="CudaArgKind.Float"/>).</param>
public readonly record struct CudaArg(CudaArgKind Kind, int Value = 0, float FloatValue = 0f);

/// <summary>One kernel launch of the forward pass.</summary>
/// <param name="Kernel">The kernel's name in the CUDA source (<c>extern "C"</c>).</param>
/// <param name="Stage">When it runs.</param>
/// <param name="Grid">Its grid as a function of the batch.</param>
/// <param name="Block">Threads per block.</param>
/// <param name="SharedMemoryBytes">Dynamic shared memory (the kernels use static shared memory: 0).</param>
/// <param name="Args">Its arguments, in order.</param>
public sealed record CudaLaunch(string Kernel, CudaStage Stage, CudaGrid Grid, Dim3 Block, int SharedMemoryBytes, IReadOnlyList<CudaArg> Args);

/// <summary>
/// The CUDA forward pass of a compiled model as data: the kernel source and the launches in order. The
/// runner binds each <see cref="CudaArg"/> to device memory (weights uploaded once, the arena, scratch,
/// batch arrays, the KV pool) and enqueues <see cref="Launches"/>: Prologue, Layer × NumLayers, Epilogue,
/// and Sampling when token ids are wanted.
/// </summary>
/// <param name="Source">CUDA C++ source of every kernel (prelude included; no #include).</param>
/// <param name="ArenaFloats">Activation arena size in floats (the same layout as the CPU pass).</param>
/// <param name="ScratchFloats">Scratch size in floats for a batch of MaxBatchTokens tokens.</param>
/// <param name="FirstLayerWeight">Table index of layer 0's first weight.</param>
/// <param name="LayerWeightCount">Weights per layer in the table.</param>
/// <param name="Launches">Every launch, in order.</param>
public sealed record CudaLaunchPlan(string Source, int ArenaFloats, int ScratchFloats, int FirstLayerWeight, int LayerWeightCount, IReadOnlyList<CudaLaunch> Launches)
{
    /// <summary>Table index of a weight argument for <paramref name="layer"/>.</summary>
    public int WeightIndex(CudaArg arg, int layer) => arg.Kind switch
    {
        CudaArgKind.Weight => arg.Value,
        CudaArgKind.LayerWeight => FirstLayerWeight + layer * LayerWeightCount + arg.Value,
        _ => throw new ArgumentException($"{arg.Kind} is not a weight argument.", nameof(arg)),
    };
}
