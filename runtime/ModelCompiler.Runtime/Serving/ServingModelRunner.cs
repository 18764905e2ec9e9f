using System;
using System.Collections.Generic;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Serving.Scheduling;

namespace ModelCompiler.Runtime.Serving;

/// <summary>A sampled token with its log-probability and, when asked for, the most likely alternatives.</summary>
/// <param name="TokenId">The chosen token.</param>
/// <param name="Logprob">Its log-probability under the model (log-softmax of the raw logits, before temperature); NaN when the sequence did not ask for log-probabilities.</param>
/// <param name="TopLogprobs">The most likely tokens with their log-probabilities, most likely first (empty unless asked for).</param>
public readonly record struct SampledToken(int TokenId, float Logprob, IReadOnlyList<TokenLogprob> TopLogprobs);

/// <summary>
/// The serving path's model runner: turns a <see cref="SchedulerStep"/> into one forward pass of an
/// <see cref="IModelRunner"/> — the CPU <see cref="ModelRunner"/> or the CUDA runner — (copy-on-write block
/// copies first, done by the runner where its KV pool lives, then each scheduled sequence's new tokens at
/// positions from its computed count, a logits row only for sequences that sample) and samples each row with
/// its sequence's own <see cref="Sampler"/>. A step samples where the logits are
/// (<see cref="IModelRunner.ForwardSample"/>: on a GPU only the ids come back) unless one of its sequences needs
/// the logits on the host: one that reports log-probabilities, or a parent whose parallel-sampling children
/// fork in this step and sample their first tokens from its row; such a step copies the rows back
/// (<see cref="IModelRunner.Forward"/>) and samples them on the host, with the same draw contract, so the tokens
/// are the same either way. It reads the block manager's tables; it decides nothing.
/// </summary>
public sealed class ServingModelRunner
{
    private readonly IModelRunner _runner;
    private readonly ForwardBatch _batch;
    private readonly float[] _logits;              // [MaxSequences, vocab] rows of the last step's samplers, when on the host
    private readonly Sampler[] _samplers;          // [MaxSequences] the sampler of each logits row, for ForwardSample
    private readonly int[] _tokens;                // [MaxSequences] each row's token, when sampled by ForwardSample
    private readonly Dictionary<Sequence, int> _rowOfSequence = new();
    private bool _logitsOnHost;

    /// <summary>Creates a runner over <paramref name="runner"/>'s model, KV pool and block manager.</summary>
    public ServingModelRunner(IModelRunner runner)
    {
        ArgumentNullException.ThrowIfNull(runner);
        _runner = runner;
        _batch = runner.CreateBatch();
        _logits = new float[(long)runner.Config.MaxSequences * runner.Config.VocabSize];
        _samplers = new Sampler[runner.Config.MaxSequences];
        _tokens = new int[runner.Config.MaxSequences];
    }

    /// <summary>Steps whose rows were sampled where the logits are (<see cref="IModelRunner.ForwardSample"/>).</summary>
    public long NumStepsSampledByRunner { get; private set; }

    /// <summary>Steps whose rows came back to the host to be sampled there (log-probabilities, forking children).</summary>
    public long NumStepsSampledOnHost { get; private set; }

    /// <summary>Vocabulary size (entries per logits row).</summary>
    public int VocabSize => _runner.Config.VocabSize;

    /// <summary>
    /// Runs <paramref name="step"/>'s forward pass. Afterwards the logits of every sequence that samples in
    /// it are available to <see cref="Sample"/> until the next call.
    /// </summary>
    public void Execute(SchedulerStep step)
    {
        foreach (var copy in step.BlockCopies) _runner.CopyKvBlock(copy.SourceBlock, copy.DestinationBlock);
        _batch.Clear();
        _rowOfSequence.Clear();
        _logitsOnHost = false;
        var blocks = _runner.Blocks;
        foreach (var scheduled in step.Scheduled)
        {
            var sequence = scheduled.Sequence;
            if (scheduled.Samples)
            {
                _samplers[_batch.NumLogits] = sequence.Sampler ??= new Sampler(VocabSize, sequence.Sampling);
                _rowOfSequence.Add(sequence, _batch.NumLogits);
                _logitsOnHost |= sequence.WantsLogprobs || sequence.PendingChildren.Count > 0;
            }
            _batch.AddSequence(sequence.Tokens.Slice(scheduled.StartPosition, scheduled.NumNewTokens), scheduled.StartPosition,
                blocks.BlockTable(sequence.Id), scheduled.Samples ? LogitsRows.Last : LogitsRows.None);
        }
        if (_batch.NumTokens == 0) return;
        if (_batch.NumLogits > 0 && !_logitsOnHost)
        {
            _runner.ForwardSample(_batch, _samplers.AsSpan(0, _batch.NumLogits), _tokens);
            NumStepsSampledByRunner++;
        }
        else
        {
            // Copied out because the runner's span is only valid until its next call, and children of a
            // parallel-sampling request sample from their parent's row after the bookkeeping in between.
            _runner.Forward(_batch).CopyTo(_logits);
            _logitsOnHost = true;
            if (_batch.NumLogits > 0) NumStepsSampledOnHost++;
        }
        Array.Clear(_samplers);   // hold no sampler past the step (a finished sequence's is garbage)
    }

    /// <summary>
    /// Samples <paramref name="sequence"/>'s next token from the logits of <paramref name="rowOwner"/> (itself,
    /// or the parent it just forked from) computed by the last <see cref="Execute"/>.
    /// </summary>
    public SampledToken Sample(Sequence sequence, Sequence rowOwner, int numTopLogprobs)
    {
        if (!_rowOfSequence.TryGetValue(rowOwner, out int row)) throw new InvalidOperationException($"{rowOwner} did not sample in the last step.");
        if (!_logitsOnHost)
        {
            // Sampled by the runner; only a row's own sequence can take its token (children fork in host steps).
            if (sequence != rowOwner) throw new InvalidOperationException($"{sequence} cannot sample from {rowOwner}'s row: the step sampled on the runner.");
            return new SampledToken(_tokens[row], float.NaN, Array.Empty<TokenLogprob>());
        }
        var logits = _logits.AsSpan(row * VocabSize, VocabSize);
        sequence.Sampler ??= new Sampler(VocabSize, sequence.Sampling);
        int token = sequence.Sampler.Sample(logits);
        if (!sequence.WantsLogprobs) return new SampledToken(token, float.NaN, Array.Empty<TokenLogprob>());
        float logNormalizer = LogSumExp(logits);
        return new SampledToken(token, logits[token] - logNormalizer, TopLogprobs(logits, logNormalizer, numTopLogprobs));
    }

    private static float LogSumExp(ReadOnlySpan<float> logits)
    {
        float max = logits[Sampler.Argmax(logits)];
        double sum = 0;
        foreach (float logit in logits) sum += Math.Exp(logit - max);
        return max + (float)Math.Log(sum);
    }

    // The count most likely tokens by insertion into a short sorted list: count is small (OpenAI allows 20).
    private static IReadOnlyList<TokenLogprob> TopLogprobs(ReadOnlySpan<float> logits, float logNormalizer, int count)
    {
        count = Math.Min(count, logits.Length);
        if (count <= 0) return Array.Empty<TokenLogprob>();
        var top = new List<int>(count + 1);
        for (int token = 0; token < logits.Length; token++)
        {
            if (top.Count == count && logits[token] <= logits[top[^1]]) continue;
            int at = top.Count;
            while (at > 0 && logits[token] > logits[top[at - 1]]) at--;
            top.Insert(at, token);
            if (top.Count > count) top.RemoveAt(count);
        }
        var result = new TokenLogprob[top.Count];
        for (int i = 0; i < top.Count; i++) result[i] = new TokenLogprob(top[i], logits[top[i]] - logNormalizer);
        return result;
    }
}
