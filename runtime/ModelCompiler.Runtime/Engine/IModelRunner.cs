using System;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Engine;

/// <summary>
/// What generation and benchmarking need from a backend: the model's configuration, the host-side block
/// manager that owns the KV pool's blocks, batches sized for the model and a forward pass that returns
/// logits. Implemented by the CPU <see cref="ModelRunner"/> and the CUDA <see cref="Cuda.CudaModelRunner"/>.
/// </summary>
public interface IModelRunner : IDisposable
{
    /// <summary>The model's configuration.</summary>
    ModelConfig Config { get; }
    /// <summary>Which blocks of the KV pool each sequence owns.</summary>
    BlockManager Blocks { get; }
    /// <summary>A batch sized for this model.</summary>
    ForwardBatch CreateBatch();
    /// <summary>Runs <paramref name="batch"/>; returns its logits <c>[batch.NumLogits, VocabSize]</c>, valid until the next call.</summary>
    ReadOnlySpan<float> Forward(ForwardBatch batch);

    /// <summary>
    /// Runs <paramref name="batch"/> and writes each logits row's argmax to <paramref name="tokens"/>. By
    /// default on the host over <see cref="Forward"/>; the CUDA runner samples on the device so that only
    /// the ids come back.
    /// </summary>
    void ForwardGreedy(ForwardBatch batch, Span<int> tokens)
    {
        if (tokens.Length < batch.NumLogits) throw new ArgumentException($"{batch.NumLogits} token slots needed.", nameof(tokens));
        ReadOnlySpan<float> logits = Forward(batch);
        int vocab = Config.VocabSize;
        for (int i = 0; i < batch.NumLogits; i++) tokens[i] = Sampler.Argmax(logits.Slice(i * vocab, vocab));
    }
}
