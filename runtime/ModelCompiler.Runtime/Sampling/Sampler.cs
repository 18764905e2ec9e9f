using System;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ModelCompiler.Runtime.Sampling;

/// <summary>
/// Chooses a token from a row of logits: argmax at temperature 0; otherwise a draw from
/// softmax(logits / T), cut to the <see cref="SamplingOptions.TopK"/> most likely tokens and then to the
/// nucleus of <see cref="SamplingOptions.TopP"/>, renormalised. Random numbers come from our own
/// <see cref="SplitMix64"/> seeded by <see cref="SamplingOptions.Seed"/>, so a seed gives the same tokens on
/// every machine. Buffers are sized to the vocabulary once; <see cref="Sample"/> allocates nothing.
/// One sampler per sequence: it carries the generator's state and is not thread-safe.
/// </summary>
public sealed class Sampler
{
    private readonly float[] _probs;      // [vocab] unnormalised exp((logit - max) / T)
    private readonly int[] _candidates;   // [vocab] token ids, most likely first once sorted
    private readonly Comparison<int> _moreLikelyFirst;
    private SplitMix64 _random;

    /// <summary>Creates a sampler for logits rows of <paramref name="vocabSize"/> entries.</summary>
    public Sampler(int vocabSize, SamplingOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        ArgumentNullException.ThrowIfNull(options);
        VocabSize = vocabSize;
        Options = options;
        _probs = new float[vocabSize];
        _candidates = new int[vocabSize];
        // Created once: a lambda per call would allocate. Ties go to the lower id, as argmax does.
        _moreLikelyFirst = (a, b) => _probs[a] != _probs[b] ? _probs[b].CompareTo(_probs[a]) : a.CompareTo(b);
        _random = new SplitMix64(options.Seed);
    }

    /// <summary>Entries per logits row.</summary>
    public int VocabSize { get; }

    /// <summary>The options this sampler was made with.</summary>
    public SamplingOptions Options { get; }

    /// <summary>Picks the next token from <paramref name="logits"/> (<c>[vocab]</c>).</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (logits.Length != VocabSize)
            throw new ArgumentException($"Expected {VocabSize} logits, got {logits.Length}.", nameof(logits));
        if (Options.Temperature == 0) return Argmax(logits);

        double total = Exponentiate(logits);
        bool cutTopK = Options.TopK > 0 && Options.TopK < VocabSize;
        bool cutTopP = Options.TopP < 1;
        if (!cutTopK && !cutTopP) return Draw(_probs, total);

        int numCandidates = GatherCandidates(total, cutTopK);
        var candidates = _candidates.AsSpan(0, numCandidates);
        candidates.Sort(_moreLikelyFirst);
        if (cutTopK) candidates = candidates[..Math.Min(Options.TopK, candidates.Length)];
        if (cutTopP) candidates = Nucleus(candidates);
        return DrawFrom(candidates);
    }

    /// <summary>The index of the largest logit; the first one on ties.</summary>
    public static int Argmax(ReadOnlySpan<float> logits)
    {
        // Vectorised with the scalar loop's exact result: NaN never wins (comparisons with it are false) unless it
        // is logits[0], and ties go to the first index (found by an equality scan, so -0 and +0 tie too).
        int n = logits.Length;
        if (!Vector512.IsHardwareAccelerated || n < 32 || float.IsNaN(logits[0]))
        {
            int best = 0;
            for (int i = 1; i < n; i++)
                if (logits[i] > logits[best]) best = i;
            return best;
        }
        ref float x = ref MemoryMarshal.GetReference(logits);
        var m = Vector512.Create(logits[0]);
        int k = 0;
        for (; k <= n - 16; k += 16)
        {
            var v = Vector512.LoadUnsafe(ref x, (nuint)k);
            m = Vector512.ConditionalSelect(Vector512.GreaterThan(v, m), v, m);
        }
        float max = m[0];
        for (int lane = 1; lane < 16; lane++)
            if (m[lane] > max) max = m[lane];
        for (int i = k; i < n; i++)
            if (logits[i] > max) max = logits[i];
        var target = Vector512.Create(max);
        for (k = 0; k <= n - 16; k += 16)
        {
            ulong equal = Vector512.Equals(Vector512.LoadUnsafe(ref x, (nuint)k), target).ExtractMostSignificantBits();
            if (equal != 0) return k + BitOperations.TrailingZeroCount(equal);
        }
        for (int i = k; ; i++)
            if (logits[i] == max) return i;
    }

    // Fills _probs with exp((logit - max) / T); subtracting the max keeps exp from overflowing.
    private double Exponentiate(ReadOnlySpan<float> logits)
    {
        float max = logits[Argmax(logits)];
        float inverseTemperature = 1f / Options.Temperature;
        double total = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            _probs[i] = MathF.Exp((logits[i] - max) * inverseTemperature);
            total += _probs[i];
        }
        return total;
    }

    // Without top-k, llama2.c's shortcut applies: a token below (1 - p) / (n - 1) of the mass cannot be in
    // the nucleus, because all such tokens together hold less than 1 - p. Sorting only the rest is far cheaper.
    private int GatherCandidates(double total, bool cutTopK)
    {
        double cutoff = cutTopK || VocabSize == 1 ? 0 : (1 - Options.TopP) / (VocabSize - 1) * total;
        int count = 0;
        for (int i = 0; i < VocabSize; i++)
            if (_probs[i] >= cutoff) _candidates[count++] = i;
        return count;
    }

    // The shortest prefix (most likely first) whose mass reaches TopP of the candidates' mass.
    private Span<int> Nucleus(Span<int> sorted)
    {
        double mass = 0;
        foreach (int token in sorted) mass += _probs[token];
        double target = Options.TopP * mass, cumulative = 0;
        for (int i = 0; i < sorted.Length; i++)
        {
            cumulative += _probs[sorted[i]];
            if (cumulative >= target) return sorted[..(i + 1)];
        }
        return sorted;
    }

    private int DrawFrom(ReadOnlySpan<int> tokens)
    {
        double mass = 0;
        foreach (int token in tokens) mass += _probs[token];
        double r = _random.NextDouble() * mass, cumulative = 0;
        foreach (int token in tokens)
        {
            cumulative += _probs[token];
            if (r < cumulative) return token;
        }
        return tokens[^1]; // rounding left r at the very top
    }

    private int Draw(ReadOnlySpan<float> probs, double total)
    {
        double r = _random.NextDouble() * total, cumulative = 0;
        int last = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            if (probs[i] == 0) continue;
            cumulative += probs[i];
            last = i;
            if (r < cumulative) return i;
        }
        return last; // rounding left r at the very top: the last token that had any mass
    }
}
