using System;
using System.Diagnostics;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Engine;

/// <summary>Timings and counts of one generation.</summary>
/// <param name="NumPromptTokens">Prompt tokens, including BOS.</param>
/// <param name="NumGeneratedTokens">Tokens sampled.</param>
/// <param name="TimeToFirstToken">From the start of prefill to the first sampled token.</param>
/// <param name="DecodeTime">From the first sampled token to the last.</param>
public sealed record GenerationStats(int NumPromptTokens, int NumGeneratedTokens, TimeSpan TimeToFirstToken, TimeSpan DecodeTime)
{
    /// <summary>Decode speed: tokens after the first, per second of decode time.</summary>
    public double DecodeTokensPerSecond =>
        NumGeneratedTokens > 1 && DecodeTime > TimeSpan.Zero ? (NumGeneratedTokens - 1) / DecodeTime.TotalSeconds : 0;
}

/// <summary>
/// Generates one sequence: prefill of the prompt in chunks of at most <c>MaxBatchTokens</c>, then one
/// token per step, with the sequence's KV in blocks from the runner's block manager (freed at the end).
/// </summary>
public sealed class TextGenerator
{
    /// <summary>Beginning-of-sequence token of llama2.c vocabularies; the models emit it to end a story.</summary>
    public const int Bos = 1;
    /// <summary>End-of-sequence token.</summary>
    public const int Eos = 2;

    private readonly IModelRunner _runner;
    private readonly ForwardBatch _batch;
    private long _nextSequenceId;

    /// <summary>Creates a generator over <paramref name="runner"/>.</summary>
    public TextGenerator(IModelRunner runner)
    {
        _runner = runner;
        _batch = runner.CreateBatch();
    }

    /// <summary>
    /// Continues <paramref name="promptTokens"/> by up to <paramref name="maxNewTokens"/> tokens, calling
    /// <paramref name="onToken"/> for each; stops early at BOS/EOS (when <paramref name="stopAtEndOfText"/>)
    /// or when the context is full.
    /// </summary>
    public GenerationStats Generate(ReadOnlySpan<int> promptTokens, int maxNewTokens, Sampler sampler, Action<int> onToken, bool stopAtEndOfText = true)
    {
        var config = _runner.Config;
        if (promptTokens.Length == 0) throw new ArgumentException("The prompt needs at least one token.", nameof(promptTokens));
        if (promptTokens.Length >= config.MaxSeqLen)
            throw new ArgumentException($"The prompt has {promptTokens.Length} tokens; the context holds {config.MaxSeqLen}.", nameof(promptTokens));
        long id = _nextSequenceId++;
        var blocks = _runner.Blocks;
        if (!blocks.CanAllocate(promptTokens.Length))
            throw new InvalidOperationException("The KV pool has no room for the prompt.");
        blocks.Allocate(id, promptTokens.Length);
        try
        {
            var clock = Stopwatch.StartNew();
            // Every token is sampled where the logits are (on a GPU only the id comes back).
            ReadOnlySpan<Sampler> samplers = new(ref sampler);
            Span<int> one = stackalloc int[1];
            int position = 0;
            while (position < promptTokens.Length)
            {
                int chunk = Math.Min(config.MaxBatchTokens, promptTokens.Length - position);
                _batch.Clear();
                _batch.AddSequence(promptTokens.Slice(position, chunk), position, blocks.BlockTable(id),
                    position + chunk == promptTokens.Length ? LogitsRows.Last : LogitsRows.None);
                if (position + chunk == promptTokens.Length) _runner.ForwardSample(_batch, samplers, one);
                else _runner.Forward(_batch);
                position += chunk;
            }
            int next = one[0];
            var timeToFirstToken = clock.Elapsed;
            int generated = 0;
            while (true)
            {
                generated++;
                onToken(next);
                if ((stopAtEndOfText && (next == Bos || next == Eos)) || position + 1 >= config.MaxSeqLen || generated >= maxNewTokens) break;
                if (!blocks.CanAppend(id, position + 1)) throw new InvalidOperationException("The KV pool is full.");
                blocks.Append(id, position + 1);
                one[0] = next;
                _batch.Clear();
                _batch.AddSequence(one, position, blocks.BlockTable(id));
                _runner.ForwardSample(_batch, samplers, one);
                next = one[0];
                position++;
            }
            return new GenerationStats(promptTokens.Length, generated, timeToFirstToken, clock.Elapsed - timeToFirstToken);
        }
        finally
        {
            blocks.Free(id);
        }
    }
}
