using System;
using System.Collections.Generic;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Runtime;

/// <summary>
/// The base of every generated engine. The source generator implements these members in the user's
/// <c>[ModelEngine]</c> partial class: the configuration and the weight binding table as constants, and
/// a forward pass with every dimension a constant that calls the CPU kernels in a fixed order.
/// </summary>
public abstract class CompiledModel
{
    /// <summary>The model's hyperparameters and runtime options, from its description.</summary>
    public abstract ModelConfig Config { get; }

    /// <summary>The weights the forward pass reads, by index, with the checkpoint tensors each is made of.</summary>
    public abstract IReadOnlyList<WeightSpec> WeightSpecs { get; }

    /// <summary>Floats in the activation arena: every intermediate buffer of the forward pass, placed by liveness.</summary>
    public abstract int ArenaSizeInFloats { get; }

    /// <summary>
    /// Runs one forward pass over <paramref name="batch"/>: reads and writes K/V through the batch's block
    /// tables in <paramref name="kvCache"/> and writes <c>[batch.NumLogits, VocabSize]</c> logits.
    /// </summary>
    /// <param name="batch">The packed new tokens of every sequence.</param>
    /// <param name="weights">Weights bound from <see cref="WeightSpecs"/>.</param>
    /// <param name="kvCache">The KV pool; the batch's block tables index into it.</param>
    /// <param name="arena">Scratch of at least <see cref="ArenaSizeInFloats"/> floats.</param>
    /// <param name="logits"><c>[batch.NumLogits, VocabSize]</c> output.</param>
    public abstract void Forward(ForwardBatch batch, ModelWeights weights, PagedKvCache kvCache, Span<float> arena, Span<float> logits);

    /// <summary>
    /// Null when <see cref="Forward"/> computes every row in every layer. Otherwise its last layer carries only the rows
    /// that need logits past its KV write (their attention, and every projection after it): these are the indexes in
    /// <see cref="WeightSpecs"/> of the matrices that layer multiplies for those rows only. The cost model counts a
    /// prefill's work with it; the CUDA pass computes every row.
    /// </summary>
    public virtual IReadOnlyList<int>? LastLayerLogitsRowsWeights => null;

    /// <summary>
    /// The CUDA forward pass (kernel source and launch plan) the generator emitted beside the CPU pass, or
    /// null for an engine compiled without one.
    /// </summary>
    public virtual Cuda.CudaLaunchPlan? CudaPlan => null;
}
