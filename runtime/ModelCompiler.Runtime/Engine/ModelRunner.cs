using System;
using System.Collections.Generic;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;
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
    private Sampler[] _rowSamplers = [];   // ForwardSample's samplers during a parallel run (see there)

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
        PackProjections(model, Weights, source);
        KvCache = new PagedKvCache(c.NumLayers, c.NumKvBlocks, c.KvBlockSize, c.KvDim, c.KvCacheDType);
        Blocks = new BlockManager(c.NumKvBlocks, c.KvBlockSize);
        _arena = new float[model.ArenaSizeInFloats];
        _logits = new float[(long)c.MaxBatchTokens * c.VocabSize];
    }

    // The one place where weights are repacked for the CPU, once, at load: every q8_0/q4_0 matrix a projection reads
    // gets a packed copy beside its rows (Kernels/MatMul/PackedQuantizedLayout), and every large f32/f16/bf16 one
    // float panels that replace its rows (Kernels/MatMul/FloatPanelLayout). An untied token embedding is only
    // gathered row by row, so it stays as stored; a tied one is also the LM head and is packed (its lookups read the
    // panels).
    private static void PackProjections(CompiledModel model, ModelWeights weights, IWeightSource source)
    {
        // Which weights borrow each source tensor (a tied embedding is two weights over one tensor: the lookup table
        // and the LM head, which share one packed copy).
        var borrowers = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        foreach (var spec in model.WeightSpecs)
        {
            foreach (var name in spec.Sources)
            {
                if (!borrowers.TryGetValue(name, out var list)) borrowers[name] = list = new List<int>();
                list.Add(spec.Index);
            }
        }
        // A source tensor that no weight reads in place any more (copied when fused or widened, or its rows replaced by
        // float panels) is released as soon as its last reader is packed, so that a source holding its own memory
        // (random or converted weights) does not keep a second copy resident, nor the load peak at two copies.
        var remaining = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (name, indices) in borrowers) remaining[name] = indices.Count;
        foreach (var spec in model.WeightSpecs)
        {
            bool gatheredOnly = !model.Config.TiedEmbedding && spec.Sources is ["tok_embeddings.weight"];
            if (spec.Shape.Length == 2 && !gatheredOnly) weights.PackForCpu(spec.Index);
            foreach (var name in spec.Sources)
                if (--remaining[name] == 0) ReleaseIfUnread(weights, source, name, borrowers[name]);
        }
    }

    private static void ReleaseIfUnread(ModelWeights weights, IWeightSource source, string name, List<int> indices)
    {
        if (!source.TryGetTensor(name, out var tensor)) return;
        foreach (int index in indices)
        {
            var matrix = weights.Matrix(index);
            if (matrix.Data == tensor.Data && !Kernels.MatMul.FloatPanelLayout.IsPacked(matrix)) return;
        }
        foreach (int index in indices)
            if (weights.Matrix(index).Data == tensor.Data) weights.ForgetRows(index);
        source.Release(name);
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
    /// <remarks>
    /// The rows are sampled in parallel over the worker pool, a row per chunk. Each row's sampler is its own (its
    /// generator, its buffers), so the tokens are the same on any thread count. A row with top-p sorts its candidates
    /// (~0.5 ms at 32,000 tokens), so a 16-sequence serving step of such rows spent ~8 ms on the calling thread alone
    /// while the workers waited.
    /// </remarks>
    public unsafe void ForwardSample(ForwardBatch batch, ReadOnlySpan<Sampler> samplers, Span<int> tokens)
    {
        IModelRunner.CheckSampling(this, batch, samplers, tokens);
        ReadOnlySpan<float> logits = Forward(batch);
        int rows = batch.NumLogits, vocab = Config.VocabSize;
        // The job reaches the samplers through an array (a struct the pool runs cannot hold a span); the buffer grows
        // to the largest batch once and holds no sampler past the call. One row, or one thread, runs inline.
        if (_rowSamplers.Length < rows) _rowSamplers = new Sampler[rows];
        samplers.Slice(0, rows).CopyTo(_rowSamplers);
        try
        {
            fixed (float* pLogits = logits)
            fixed (int* pTokens = tokens)
            {
                var job = new SampleRows { Samplers = _rowSamplers, Logits = pLogits, Tokens = pTokens, VocabSize = vocab };
                Threading.WorkerPool.Run(ref job, rows);
            }
        }
        finally
        {
            Array.Clear(_rowSamplers, 0, rows);
        }
    }

    /// <summary>Row <c>chunk</c>'s token from its logits by its own sampler.</summary>
    private unsafe struct SampleRows : Threading.IParallelJob
    {
        public Sampler[] Samplers;
        public float* Logits;
        public int* Tokens;
        public int VocabSize;

        public readonly void Execute(int chunk) =>
            Tokens[chunk] = Samplers[chunk].Sample(new ReadOnlySpan<float>(Logits + (nint)chunk * VocabSize, VocabSize));
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
