using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Tests.Runtime;

/// <summary>
/// The draw contract of <see cref="Sampler"/> written as plainly as possible, for tests: every token's
/// <see cref="Sampler.Weight"/>, a full sort in likelihood order (larger weight, then lower id), the top-k
/// prefix, the nucleus by a running sum, the draw point ⌊u · mass / 2⁶⁴⌋ with BigInteger-free 128-bit
/// arithmetic, and a walk in id order (no cut) or likelihood order. No shortcuts, no prefilters.
/// </summary>
internal static class SamplingReference
{
    /// <summary>The token, and how many candidates the draw was among (the nucleus, the top k, or the vocabulary).</summary>
    public static (int Token, int NumCandidates) Sample(ReadOnlySpan<float> logits, SamplingOptions options, ulong uniform)
    {
        int vocab = logits.Length, argmax = 0;
        for (int i = 1; i < vocab; i++) if (logits[i] > logits[argmax]) argmax = i;
        if (options.Temperature == 0) return (argmax, 1);
        var weights = new ulong[vocab];
        ulong total = 0;
        for (int i = 0; i < vocab; i++) total += weights[i] = (ulong)Sampler.Weight(logits[i], logits[argmax], 1f / options.Temperature);
        if (total == 0) return (argmax, 1);
        bool cutK = options.TopK > 0 && options.TopK < vocab, cutP = options.TopP < 1;
        if (!cutK && !cutP) return (Walk(Enumerable.Range(0, vocab).ToArray(), weights, uniform), vocab);

        int[] order = Enumerable.Range(0, vocab).OrderByDescending(i => weights[i]).ThenBy(i => i).ToArray();
        int[] candidates = cutK ? order[..options.TopK] : order;
        if (cutP)
        {
            ulong mass = 0;
            foreach (int i in candidates) mass += weights[i];
            ulong target = (ulong)Math.Ceiling((double)mass * options.TopP), running = 0;
            int n = 0;
            while (running < target) running += weights[candidates[n++]];
            candidates = candidates[..n];
        }
        return (Walk(candidates, weights, uniform), candidates.Length);
    }

    private static int Walk(int[] tokens, ulong[] weights, ulong uniform)
    {
        ulong mass = 0;
        foreach (int i in tokens) mass += weights[i];
        ulong point = (ulong)(((UInt128)uniform * mass) >> 64), running = 0;
        foreach (int i in tokens)
        {
            running += weights[i];
            if (running > point) return i;
        }
        throw new InvalidOperationException("the draw point must lie below the mass");
    }
}
