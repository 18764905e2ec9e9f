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
/// positions from its computed count, a logits row only for sequences that sample). Every row is sampled
/// where the logits are, by its sequence's own <see cref="Sampler"/> (<see cref="IModelRunner.ForwardSample"/>:
/// on a GPU only the ids come back); only the rows whose logits are needed as well come to the host
/// (<see cref="IModelRunner.CopyLogitsRow"/>): a sequence reporting log-probabilities, and a parent whose
/// parallel-sampling children fork in this step and draw their first tokens from its row on the host, with
/// the same draw contract. It reads the block manager's tables; it decides nothing.
/// </summary>
public sealed class ServingModelRunner
{
    private readonly IModelRunner _runner;
    private readonly ForwardBatch _batch;
    private readonly float[] _logits;              // [MaxSequences, vocab] the rows copied to the host in the last step
    private readonly Sampler[] _samplers;          // [MaxSequences] the sampler of each logits row, for ForwardSample
    private readonly int[] _tokens;                // [MaxSequences] each row's token from ForwardSample
    private readonly bool[] _rowOnHost;            // [MaxSequences] whether the row's logits were copied to _logits
    private readonly Dictionary<Sequence, int> _rowOfSequence = new();

    /// <summary>Creates a runner over <paramref name="runner"/>'s model, KV pool and block manager.</summary>
    public ServingModelRunner(IModelRunner runner)
    {
        ArgumentNullException.ThrowIfNull(runner);
        _runner = runner;
        _batch = runner.CreateBatch();
        int rows = runner.Config.MaxSequences;
        _logits = new float[(long)rows * runner.Config.VocabSize];
        _samplers = new Sampler[rows];
        _tokens = new int[rows];
        _rowOnHost = new bool[rows];
    }

    /// <summary>Vocabulary size (entries per logits row).</summary>
    public int VocabSize => _runner.Config.VocabSize;

    /// <summary>Logits rows copied to the host so far (log-probabilities, forking parents); the others stayed where they were sampled.</summary>
    public long NumLogitsRowsCopied { get; private set; }

    /// <summary>
    /// Runs <paramref name="step"/>'s forward pass and samples the token of every sequence that samples in it;
    /// <see cref="Sample"/> hands them out until the next call.
    /// </summary>
    public void Execute(SchedulerStep step)
    {
        foreach (var copy in step.BlockCopies) _runner.CopyKvBlock(copy.SourceBlock, copy.DestinationBlock);
        _batch.Clear();
        _rowOfSequence.Clear();
        var blocks = _runner.Blocks;
        foreach (var scheduled in step.Scheduled)
        {
            var sequence = scheduled.Sequence;
            if (scheduled.Samples)
            {
                int row = _batch.NumLogits;
                _samplers[row] = sequence.Sampler ??= new Sampler(VocabSize, sequence.Sampling);
                _rowOnHost[row] = sequence.WantsLogprobs || sequence.PendingChildren.Count > 0;
                _rowOfSequence.Add(sequence, row);
            }
            _batch.AddSequence(sequence.Tokens.Slice(scheduled.StartPosition, scheduled.NumNewTokens), scheduled.StartPosition,
                blocks.BlockTable(sequence.Id), scheduled.Samples ? LogitsRows.Last : LogitsRows.None);
        }
        if (_batch.NumTokens == 0) return;
        if (_batch.NumLogits == 0)
        {
            _runner.Forward(_batch);   // prefill chunks that sample nothing
            return;
        }
        _runner.ForwardSample(_batch, _samplers.AsSpan(0, _batch.NumLogits), _tokens);
        for (int row = 0; row < _batch.NumLogits; row++)
        {
            if (!_rowOnHost[row]) continue;
            // Copied now because children of a parallel-sampling request sample from their parent's row after the bookkeeping in between.
            _runner.CopyLogitsRow(row, _logits.AsSpan(row * VocabSize, VocabSize));
            NumLogitsRowsCopied++;
        }
        Array.Clear(_samplers);   // hold no sampler past the step
    }

    /// <summary>
    /// <paramref name="sequence"/>'s next token from the row of <paramref name="rowOwner"/> (itself: the token
    /// sampled by the last <see cref="Execute"/>; or the parent it just forked from: drawn now on the host from
    /// the parent's logits with the child's own sampler), with its log-probabilities when the sequence asked for them.
    /// </summary>
    public SampledToken Sample(Sequence sequence, Sequence rowOwner, int numTopLogprobs)
    {
        if (!_rowOfSequence.TryGetValue(rowOwner, out int row)) throw new InvalidOperationException($"{rowOwner} did not sample in the last step.");
        bool own = sequence == rowOwner;
        if (!own && !_rowOnHost[row]) throw new InvalidOperationException($"{sequence} cannot sample from {rowOwner}'s row: its logits stayed on the runner.");
        if (!_rowOnHost[row] || (own && !sequence.WantsLogprobs)) return new SampledToken(_tokens[row], float.NaN, Array.Empty<TokenLogprob>());
        var logits = _logits.AsSpan(row * VocabSize, VocabSize);
        int token = own ? _tokens[row] : (sequence.Sampler ??= new Sampler(VocabSize, sequence.Sampling)).Sample(logits);
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
