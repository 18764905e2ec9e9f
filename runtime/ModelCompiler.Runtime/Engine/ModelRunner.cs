using System;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Engine;

/// <summary>
/// A compiled model ready to run: its bound weights, the KV pool, the activation arena and the logits
/// buffer. It runs forward passes over batches; which sequence owns which KV blocks is decided outside
/// (by a <see cref="BlockManager"/> and, later, the scheduler).
/// </summary>
public sealed class ModelRunner : IModelRunner
{
    private readonly float[] _arena;
    private readonly float[] _logits;
    private int _numLogits;     // logits rows of the last forward pass

    /// <summary>Binds <paramref name="source"/> to <paramref name="model"/>'s weight table (the runner owns the source from here on).</summary>
    public ModelRunner(CompiledModel model, IWeightSource source)
    {
        Model = model;
        var c = model.Config;
        try
        {
            Weights = WeightBinder.Bind(model.WeightSpecs, source, c);
        }
        catch
        {
            source.Dispose();
            throw;
        }
        PackProjections(model, Weights);
        KvCache = new PagedKvCache(c.NumLayers, c.NumKvBlocks, c.KvBlockSize, c.KvDim, c.KvCacheDType);
        Blocks = new BlockManager(c.NumKvBlocks, c.KvBlockSize);
        _arena = new float[model.ArenaSizeInFloats];
        _logits = new float[(long)c.MaxBatchTokens * c.VocabSize];
    }

    // The one place where weights are repacked for the CPU: every q8_0/q4_0 matrix a projection reads gets a
    // packed copy (Kernels/MatMul/PackedQuantizedLayout) once, at load. An untied token embedding is only gathered
    // row by row, so it stays as stored; a tied one is also the LM head and is packed.
    private static void PackProjections(CompiledModel model, ModelWeights weights)
    {
        foreach (var spec in model.WeightSpecs)
        {
            bool gatheredOnly = !model.Config.TiedEmbedding && spec.Sources is ["tok_embeddings.weight"];
            if (spec.Shape.Length == 2 && !gatheredOnly) weights.PackForCpu(spec.Index);
        }
    }

    /// <summary>The compiled model.</summary>
    public CompiledModel Model { get; }
    /// <summary>The model's configuration.</summary>
    public ModelConfig Config => Model.Config;
    /// <summary>The bound weights.</summary>
    public ModelWeights Weights { get; }
    /// <summary>The KV pool.</summary>
    public PagedKvCache KvCache { get; }
    /// <summary>Which blocks of the pool each sequence owns.</summary>
    public BlockManager Blocks { get; }

    /// <summary>A batch sized for this model.</summary>
    public ForwardBatch CreateBatch() =>
        new(Config.MaxBatchTokens, Config.MaxSequences, Config.MaxBlocksPerSequence, Config.KvBlockSize);

    /// <summary>Runs <paramref name="batch"/>; returns its logits <c>[batch.NumLogits, VocabSize]</c>, valid until the next call.</summary>
    public ReadOnlySpan<float> Forward(ForwardBatch batch)
    {
        _numLogits = 0;
        Model.Forward(batch, Weights, KvCache, _arena, _logits);
        _numLogits = batch.NumLogits;
        return _logits.AsSpan(0, batch.NumLogits * Config.VocabSize);
    }

    /// <inheritdoc/>
    public void CopyLogitsRow(int row, Span<float> destination)
    {
        IModelRunner.CheckLogitsRow(this, row, _numLogits, destination);
        _logits.AsSpan(row * Config.VocabSize, Config.VocabSize).CopyTo(destination);
    }

    /// <inheritdoc />
    public void CopyKvBlock(int sourceBlock, int destinationBlock) => KvCache.CopyBlock(sourceBlock, destinationBlock);

    /// <inheritdoc />
    public void Dispose() => Weights.Dispose();
}
