using System;
using System.Collections.Generic;
using ModelCompiler.Runtime.Weights;

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
    /// <summary>Sampling on the device (greedy and sampled rows): only when the caller wants token ids instead of logits.</summary>
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
    /// <summary>
    /// Pointer to <c>[MaxTokens, 6]</c> int sampling parameters per logits row: mode (0 greedy, 1 sample), 1/T and
    /// top-p as float bits, top-k, and the row's 64-bit uniform as two ints, low first (see <see cref="CudaModelRunner"/>).
    /// </summary>
    SamplingParams,
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
/// <remarks>
/// A launch that reads a matrix has a kernel per weight type, because the weights file decides the type at
/// run time: <see cref="DTypeArg"/> names the argument whose bound matrix picks it, and
/// <see cref="CudaLaunchPlan.KernelFor(CudaLaunch, Func{int, WeightDType}, int)"/> gives the kernel's name.
/// </remarks>
public sealed record CudaLaunch(string Kernel, CudaStage Stage, CudaGrid Grid, Dim3 Block, int SharedMemoryBytes, IReadOnlyList<CudaArg> Args)
{
    /// <summary>
    /// Index into <see cref="Args"/> of the matrix argument (a <see cref="CudaArgKind.Weight"/> or
    /// <see cref="CudaArgKind.LayerWeight"/>) whose type selects the kernel variant, or -1 when the launch has
    /// one kernel (<see cref="Kernel"/>) whatever the weights. Grid, block and arguments are the same for every variant.
    /// </summary>
    public int DTypeArg { get; init; } = -1;

    /// <summary>
    /// Batches of at least this many tokens run a launch's <see cref="Prefill"/> variant where it has one for
    /// the bound matrix's type (below it the matrix-vector kernels, which read each weight once per 8 tokens, win).
    /// </summary>
    public const int PrefillMinTokens = 16;

    /// <summary>
    /// The tensor-core variant of this launch for prefill (mma.sync m16n8k16, f32 accumulation; sm_80 and later
    /// use the tensor cores, older devices a shuffle-based definition of the same fragment math), or null. It
    /// has its own kernel base name (<c>NAME_mma</c>), grid and block, the same arguments, and kernels only for
    /// <see cref="PrefillDTypes"/> (<c>NAME_mma_f16</c>, <c>NAME_mma_bf16</c>: there is no f32 one); pick it with
    /// <see cref="CudaLaunchPlan.Select"/>. The activations go in as a hi + lo pair of the matrix's type (two products per fragment), so they keep 22 (f16) or 16 (bf16) significant bits; f16 activations beyond ±65504 would overflow.
    /// </summary>
    public CudaLaunch? Prefill { get; init; }

    /// <summary>The matrix types this launch, as a <see cref="Prefill"/> variant, has kernels for (empty: every type).</summary>
    public IReadOnlyList<WeightDType> PrefillDTypes { get; init; } = Array.Empty<WeightDType>();
}

/// <summary>The kernel, grid and block a launch runs with for one batch (see <see cref="CudaLaunchPlan.Select"/>).</summary>
/// <param name="Kernel">The <c>extern "C"</c> kernel name.</param>
/// <param name="Grid">The grid as a function of the batch.</param>
/// <param name="Block">Threads per block.</param>
/// <param name="SharedMemoryBytes">Dynamic shared memory.</param>
public readonly record struct CudaKernelChoice(string Kernel, CudaGrid Grid, Dim3 Block, int SharedMemoryBytes);

/// <summary>
/// The CUDA forward pass of a compiled model as data: the kernel source and the launches in order. The
/// runner binds each <see cref="CudaArg"/> to device memory (weights uploaded once, the arena, scratch,
/// batch arrays, the KV pool) and enqueues <see cref="Launches"/>: Prologue, Layer × NumLayers, Epilogue,
/// and Sampling when token ids are wanted.
/// <para>
/// Weight types: the weights file decides each matrix's type at run time, so every launch that reads a
/// matrix (embedding, QKV, projections, LM head) has one kernel per type. The runner uploads each matrix as
/// the file's raw bytes (16-byte aligned; 1-D weights widened to f32 as the CPU binder does) and runs, per
/// launch and layer, <see cref="Select"/> (or <see cref="KernelFor(CudaLaunch, Func{int, WeightDType}, int)"/>
/// when it ignores prefill variants). Kernel names: the f32 kernel is <see cref="CudaLaunch.Kernel"/> itself;
/// the others are <c>Kernel + "_" + WeightDTypes.Name(dtype)</c> (<c>_f16</c>, <c>_bf16</c>, <c>_q8_0</c>,
/// <c>_q4_0</c>); prefill variants are <c>Prefill.Kernel + "_f16"</c> / <c>"_bf16"</c> with
/// <c>Prefill.Kernel = Kernel + "_mma"</c>.
/// </para>
/// </summary>
/// <param name="Source">CUDA C++ source of every kernel (prelude included; no #include).</param>
/// <param name="ArenaFloats">Activation arena size in floats (the same layout as the CPU pass).</param>
/// <param name="ScratchFloats">Scratch size in floats for a batch of MaxBatchTokens tokens.</param>
/// <param name="FirstLayerWeight">Table index of layer 0's first weight.</param>
/// <param name="LayerWeightCount">Weights per layer in the table.</param>
/// <param name="Launches">Every launch, in order.</param>
public sealed record CudaLaunchPlan(string Source, int ArenaFloats, int ScratchFloats, int FirstLayerWeight, int LayerWeightCount, IReadOnlyList<CudaLaunch> Launches)
{
    /// <summary>
    /// The name of the kernel variant for matrices of type <paramref name="dtype"/>: <paramref name="baseName"/> itself
    /// for f32 (backward compatible), else <c>baseName + "_" + WeightDTypes.Name(dtype)</c>, i.e. <c>NAME_f16</c>,
    /// <c>NAME_bf16</c>, <c>NAME_q8_0</c>, <c>NAME_q4_0</c>. The variant reads the matrix as the raw bytes of the
    /// file in GGUF row layout (f16/bf16 bits; Q8_0 blocks of an f16 scale and 32 int8, 34 B; Q4_0 blocks of an
    /// f16 scale and 16 B of nibbles, 18 B), rows contiguous, the matrix 16-byte aligned; 1-D weights (norms)
    /// are always f32. Q8_0/Q4_0 variants exist only for matrices whose rows are whole 32-weight blocks (the
    /// weight binder refuses other block-quantized matrices); the source's <c>extern "C"</c> names are the truth.
    /// </summary>
    public static string KernelFor(string baseName, WeightDType dtype) =>
        dtype == WeightDType.F32 ? baseName : baseName + "_" + WeightDTypes.Name(dtype);

    /// <summary>
    /// The kernel <paramref name="launch"/> runs for <paramref name="layer"/>: <see cref="CudaLaunch.Kernel"/> when it has
    /// no variants, else <see cref="KernelFor(string, WeightDType)"/> with the type of the matrix bound to its
    /// <see cref="CudaLaunch.DTypeArg"/> (<paramref name="dtypeOfWeight"/> maps a weight table index to its type).
    /// </summary>
    public string KernelFor(CudaLaunch launch, Func<int, WeightDType> dtypeOfWeight, int layer)
    {
        ArgumentNullException.ThrowIfNull(launch);
        ArgumentNullException.ThrowIfNull(dtypeOfWeight);
        if (launch.DTypeArg < 0) return launch.Kernel;
        return KernelFor(launch.Kernel, dtypeOfWeight(WeightIndex(launch.Args[launch.DTypeArg], layer)));
    }

    /// <summary>
    /// What <paramref name="launch"/> runs for <paramref name="layer"/> in a batch of <paramref name="numTokens"/> tokens:
    /// its <see cref="CudaLaunch.Prefill"/> variant when there is one, <paramref name="numTokens"/> ≥
    /// <see cref="CudaLaunch.PrefillMinTokens"/> and the bound matrix's type is among its
    /// <see cref="CudaLaunch.PrefillDTypes"/>; else the launch itself; in both cases the kernel of
    /// <see cref="KernelFor(CudaLaunch, Func{int, WeightDType}, int)"/>. A CUDA graph captured for a token-count
    /// bucket keeps that choice (the arguments are the same, only kernel, grid and block differ).
    /// </summary>
    public CudaKernelChoice Select(CudaLaunch launch, int numTokens, Func<int, WeightDType> dtypeOfWeight, int layer)
    {
        ArgumentNullException.ThrowIfNull(launch);
        ArgumentNullException.ThrowIfNull(dtypeOfWeight);
        if (launch.Prefill is CudaLaunch prefill && numTokens >= CudaLaunch.PrefillMinTokens && prefill.DTypeArg >= 0)
        {
            WeightDType dtype = dtypeOfWeight(WeightIndex(prefill.Args[prefill.DTypeArg], layer));
            bool has = prefill.PrefillDTypes.Count == 0;
            foreach (var t in prefill.PrefillDTypes) has |= t == dtype;
            if (has) return new CudaKernelChoice(KernelFor(prefill.Kernel, dtype), prefill.Grid, prefill.Block, prefill.SharedMemoryBytes);
        }
        return new CudaKernelChoice(KernelFor(launch, dtypeOfWeight, layer), launch.Grid, launch.Block, launch.SharedMemoryBytes);
    }

    /// <summary>Table index of a weight argument for <paramref name="layer"/>.</summary>
    public int WeightIndex(CudaArg arg, int layer) => arg.Kind switch
    {
        CudaArgKind.Weight => arg.Value,
        CudaArgKind.LayerWeight => FirstLayerWeight + layer * LayerWeightCount + arg.Value,
        _ => throw new ArgumentException($"{arg.Kind} is not a weight argument.", nameof(arg)),
    };
}
