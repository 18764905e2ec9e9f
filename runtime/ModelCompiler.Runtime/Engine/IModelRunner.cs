using System;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Engine;

/// <summary>
/// What generation, serving and benchmarking need from a backend: the model's configuration, the host-side
/// block manager that owns the KV pool's blocks, batches sized for the model, a forward pass that returns
/// logits, and the copy-on-write block copy inside the backend's own KV pool. Implemented by the CPU <see cref="ModelRunner"/> and the CUDA <see cref="Cuda.CudaModelRunner"/>.
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
    /// Copies logits row <paramref name="row"/> of the last forward pass (<see cref="Forward"/>,
    /// <see cref="ForwardGreedy"/> or <see cref="ForwardSample"/>) into <paramref name="destination"/>
    /// (<c>[VocabSize]</c>): for the few rows whose logits the caller needs after sampling them where they are
    /// (log-probabilities, parallel-sampling children drawing from their parent's row).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">No such row in the last forward pass.</exception>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is not <c>VocabSize</c> long.</exception>
    void CopyLogitsRow(int row, Span<float> destination);

    /// <summary>
    /// Copies every layer's keys and values of KV block <paramref name="sourceBlock"/> into
    /// <paramref name="destinationBlock"/>, where the pool lives (copy-on-write of a shared block, see
    /// <see cref="BlockCopy"/>); ordered before the next <see cref="Forward"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A block outside the pool's <see cref="ModelConfig.NumKvBlocks"/>.</exception>
    void CopyKvBlock(int sourceBlock, int destinationBlock);

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

    /// <summary>
    /// Runs <paramref name="batch"/> and writes to <paramref name="tokens"/>[row] the token that
    /// <paramref name="samplers"/>[row] picks from logits row <c>row</c> (greedy or sampled, as its options say;
    /// a sampled row takes one uniform from that sampler's generator). By default on the host over
    /// <see cref="Forward"/> with <see cref="Sampler.Sample(ReadOnlySpan{float})"/>; the CUDA runner samples on
    /// the device with the same draw contract, so that only the ids come back. Callers that need the logits
    /// themselves (log-probabilities) use <see cref="Forward"/> instead.
    /// </summary>
    /// <exception cref="ArgumentException">Fewer samplers or token slots than logits rows, or a sampler for another vocabulary size.</exception>
    void ForwardSample(ForwardBatch batch, ReadOnlySpan<Sampler> samplers, Span<int> tokens)
    {
        CheckSampling(this, batch, samplers, tokens);
        ReadOnlySpan<float> logits = Forward(batch);
        int vocab = Config.VocabSize;
        for (int i = 0; i < batch.NumLogits; i++) tokens[i] = samplers[i].Sample(logits.Slice(i * vocab, vocab));
    }

    /// <summary>The argument checks of <see cref="CopyLogitsRow"/>, for its implementations.</summary>
    internal static void CheckLogitsRow(IModelRunner runner, int row, int numLogits, Span<float> destination)
    {
        if ((uint)row >= (uint)numLogits) throw new ArgumentOutOfRangeException(nameof(row), row, $"The last forward pass had {numLogits} logits rows.");
        if (destination.Length != runner.Config.VocabSize) throw new ArgumentException($"A logits row has {runner.Config.VocabSize} entries; the destination has {destination.Length}.", nameof(destination));
    }

    /// <summary>The argument checks of <see cref="ForwardSample"/>, for its implementations.</summary>
    internal static void CheckSampling(IModelRunner runner, ForwardBatch batch, ReadOnlySpan<Sampler> samplers, Span<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (tokens.Length < batch.NumLogits) throw new ArgumentException($"{batch.NumLogits} token slots needed.", nameof(tokens));
        if (samplers.Length < batch.NumLogits) throw new ArgumentException($"{batch.NumLogits} samplers needed, one per logits row; got {samplers.Length}.", nameof(samplers));
        for (int i = 0; i < batch.NumLogits; i++)
        {
            if (samplers[i] is null) throw new ArgumentException($"Sampler {i} is null.", nameof(samplers));
            if (samplers[i].VocabSize != runner.Config.VocabSize)
                throw new ArgumentException($"Sampler {i} samples rows of {samplers[i].VocabSize} logits; the model's vocabulary has {runner.Config.VocabSize}.", nameof(samplers));
        }
    }
}
