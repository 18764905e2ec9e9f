using System;
using System.Diagnostics;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Engine;

/// <summary>What <see cref="Benchmark.Run"/> measures.</summary>
/// <param name="NumPromptTokens">Synthetic prompt tokens prefilled per repetition.</param>
/// <param name="NumDecodeSteps">Decode steps after the prefill (one token each; EOS ignored).</param>
/// <param name="NumRepetitions">Timed repetitions, each a fresh sequence.</param>
/// <param name="NumWarmups">Untimed repetitions first (the JIT's tiering, caches, page faults).</param>
public sealed record BenchmarkOptions(int NumPromptTokens, int NumDecodeSteps, int NumRepetitions, int NumWarmups = 1)
{
    /// <summary>
    /// Under the JIT, warm-up repetitions go on until at least this long has passed: tiered compilation promotes
    /// hot methods only after ~100 ms without new tier-0 activity, in the background, so one short warm-up of a
    /// tiny model times unoptimized code (Stories260K: 3.4K tokens/s after one warm-up, 12.7K with tiering off).
    /// Zero under Native AOT, where everything is compiled ahead of time.
    /// </summary>
    public double MinWarmupSeconds { get; init; } = DefaultMinWarmupSeconds;

    /// <summary>3 s under the JIT, 0 under Native AOT.</summary>
    public static double DefaultMinWarmupSeconds => System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeCompiled ? 3.0 : 0.0;

    /// <summary>Why these options cannot run on <paramref name="config"/>, or null when they can.</summary>
    public string? Problem(ModelConfig config)
    {
        if (NumPromptTokens < 1) return $"--prompt-tokens must be at least 1, got {NumPromptTokens}";
        if (NumDecodeSteps < 1) return $"--gen-tokens must be at least 1, got {NumDecodeSteps}";
        if (NumRepetitions < 1) return $"--repetitions must be at least 1, got {NumRepetitions}";
        if (NumWarmups < 0) return $"--warmup must be 0 or more, got {NumWarmups}";
        if (!(MinWarmupSeconds >= 0)) return $"--warmup-seconds must be 0 or more, got {MinWarmupSeconds}";
        if ((long)NumPromptTokens + NumDecodeSteps > config.MaxSeqLen)
            return $"--prompt-tokens {NumPromptTokens} plus --gen-tokens {NumDecodeSteps} exceed the context of {config.MaxSeqLen} tokens";
        return null;
    }
}

/// <summary>Raw timings of a benchmark, in seconds.</summary>
/// <param name="Options">What was run.</param>
/// <param name="PrefillSeconds"><c>[repetitions]</c> the prefill forward passes of each repetition.</param>
/// <param name="TimeToFirstTokenSeconds"><c>[repetitions]</c> prefill plus choosing the first token.</param>
/// <param name="DecodeStepSeconds"><c>[repetitions × decode steps]</c> every decode step: a one-token forward pass plus the argmax.</param>
/// <param name="NumWarmupsRun">Untimed repetitions actually run (at least the requested number; more under the JIT's time floor).</param>
public sealed record BenchmarkTimings(BenchmarkOptions Options, double[] PrefillSeconds, double[] TimeToFirstTokenSeconds, double[] DecodeStepSeconds, int NumWarmupsRun)
{
    /// <summary>Prompt tokens per second over all timed prefills.</summary>
    public double PrefillTokensPerSecond => Options.NumPromptTokens * PrefillSeconds.Length / Sum(PrefillSeconds);

    /// <summary>Decode steps per second over all timed decode steps (1 / mean time per output token).</summary>
    public double DecodeTokensPerSecond => DecodeStepSeconds.Length / Sum(DecodeStepSeconds);

    private static double Sum(double[] values)
    {
        double sum = 0;
        foreach (double v in values) sum += v;
        return sum;
    }
}

/// <summary>
/// The timing loop of the <c>bench</c> command: per repetition a fresh sequence, a prefill of synthetic
/// prompt tokens (in chunks of at most <c>MaxBatchTokens</c>), then greedy decode steps that ignore EOS.
/// The KV blocks are allocated and freed through the runner's block manager exactly as generation does.
/// </summary>
public static class Benchmark
{
    // Bounds the time-based warm-up extension (a huge model's repetition takes longer than the floor anyway).
    private const int MaxWarmups = 1000;

    /// <summary>Runs <paramref name="options"/> (checked with <see cref="BenchmarkOptions.Problem"/>) on <paramref name="runner"/>.</summary>
    public static BenchmarkTimings Run(IModelRunner runner, BenchmarkOptions options)
    {
        var config = runner.Config;
        if (options.Problem(config) is string problem) throw new ArgumentException(problem, nameof(options));
        int[] prompt = SyntheticPrompt(options.NumPromptTokens, config.VocabSize);
        var batch = runner.CreateBatch();
        var prefill = new double[options.NumRepetitions];
        var firstToken = new double[options.NumRepetitions];
        var steps = new double[options.NumRepetitions * options.NumDecodeSteps];
        var scratchSteps = new double[options.NumDecodeSteps];
        long warmupStart = Stopwatch.GetTimestamp();
        int numWarmups = options.NumWarmups;
        for (int run = 0; run < numWarmups + options.NumRepetitions; run++)
        {
            // Extend the warm-up (one more untimed repetition) until MinWarmupSeconds have passed.
            if (run == numWarmups && options.NumWarmups > 0 && numWarmups < MaxWarmups && Stopwatch.GetElapsedTime(warmupStart).TotalSeconds < options.MinWarmupSeconds)
                numWarmups++;
            int timed = run - numWarmups;
            var stepTimes = timed >= 0 ? steps.AsSpan(timed * options.NumDecodeSteps, options.NumDecodeSteps) : scratchSteps;
            var (prefillSeconds, firstTokenSeconds) = RunSequence(runner, batch, prompt, run, stepTimes);
            if (timed < 0) continue;
            prefill[timed] = prefillSeconds;
            firstToken[timed] = firstTokenSeconds;
        }
        return new BenchmarkTimings(options, prefill, firstToken, steps, numWarmups);
    }

    /// <summary>
    /// Deterministic prompt ids: BOS, then a fixed pseudo-random walk over the vocabulary (the same for every
    /// run and machine; ids 0–2 are special in llama2.c vocabularies and avoided when the vocabulary allows).
    /// </summary>
    public static int[] SyntheticPrompt(int numTokens, int vocabSize)
    {
        var random = new SplitMix64(0x5EED);
        var tokens = new int[numTokens];
        tokens[0] = Math.Min(TextGenerator.Bos, vocabSize - 1);
        int first = vocabSize > 3 ? 3 : 0;
        for (int i = 1; i < numTokens; i++) tokens[i] = first + (int)(random.NextUInt64() % (ulong)(vocabSize - first));
        return tokens;
    }

    private static (double Prefill, double FirstToken) RunSequence(IModelRunner runner, ForwardBatch batch, int[] prompt, long id, Span<double> stepSeconds)
    {
        var config = runner.Config;
        var blocks = runner.Blocks;
        int total = prompt.Length + stepSeconds.Length;
        if (!blocks.CanAllocate(total)) throw new InvalidOperationException($"The KV pool has no room for {total} tokens.");
        blocks.Allocate(id, prompt.Length);
        try
        {
            long start = Stopwatch.GetTimestamp();
            ReadOnlySpan<float> logits = default;
            for (int position = 0; position < prompt.Length;)
            {
                int chunk = Math.Min(config.MaxBatchTokens, prompt.Length - position);
                batch.Clear();
                batch.AddSequence(prompt.AsSpan(position, chunk), position, blocks.BlockTable(id));
                logits = runner.Forward(batch);
                position += chunk;
            }
            double prefill = Stopwatch.GetElapsedTime(start).TotalSeconds;
            int next = Sampler.Argmax(logits);
            double firstToken = Stopwatch.GetElapsedTime(start).TotalSeconds;

            Span<int> one = stackalloc int[1];
            for (int step = 0; step < stepSeconds.Length; step++)
            {
                long stepStart = Stopwatch.GetTimestamp();
                int position = prompt.Length + step;
                blocks.Append(id, position + 1);
                one[0] = next;
                batch.Clear();
                batch.AddSequence(one, position, blocks.BlockTable(id));
                runner.ForwardGreedy(batch, one);
                next = one[0];
                stepSeconds[step] = Stopwatch.GetElapsedTime(stepStart).TotalSeconds;
            }
            return (prefill, firstToken);
        }
        finally
        {
            blocks.Free(id);
        }
    }
}
