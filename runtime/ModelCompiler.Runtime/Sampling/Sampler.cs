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
/// every machine. Buffers are sized to the vocabulary once; <see cref="Sample(ReadOnlySpan{float})"/> allocates nothing.
/// One sampler per sequence: it carries the generator's state and is not thread-safe.
/// </summary>
/// <remarks>
/// <para>The draw contract, shared with the CUDA kernel <c>mc_sample</c> (compiler/…/CudaEmitter.Library.cs), which
/// must give the same token for the same logits, options and uniform — so every step below is exact integer
/// arithmetic, or float operations that round the same way everywhere (no summation order anywhere):</para>
/// <list type="number">
/// <item>Drawing is split in two: <see cref="NextUniform"/> takes one 64-bit uniform from this sequence's
/// generator (once per sampled token, never at temperature 0), and <see cref="Sample(ReadOnlySpan{float}, ulong)"/>
/// turns logits and that uniform into a token. A GPU runner draws the uniform here and samples on the device.</item>
/// <item>Each token's weight is <see cref="Weight"/>: exp((logit − max) / T) as an integer in units of 2⁻⁴⁰ of
/// the most likely token's (which weighs exactly 2⁴⁰), computed with one fixed sequence of correctly rounded
/// float operations; tokens below 2⁻⁴⁰ of the maximum weigh 0 and are never drawn.</item>
/// <item>Masses are sums of those integers (in 64 bits: exact in any order, for vocabularies up to 2²³).</item>
/// <item>Likelihood order: larger weight first, ties to the lower id. Top-k keeps the first K; the nucleus is
/// the shortest prefix of the candidates (the top K, or every token) whose mass reaches
/// <see cref="NucleusTarget"/> = ⌈mass · P⌉ (one double product).</item>
/// <item>The draw point is ⌊uniform · mass / 2⁶⁴⌋ (<see cref="DrawPoint"/>, always below the mass), and the token
/// is the first whose running mass exceeds it: walked in id order when nothing is cut, in likelihood order
/// otherwise.</item>
/// </list>
/// <para>A row whose mass is 0 (a NaN or infinite maximum logit) gives the argmax. NaN logits are otherwise
/// outside the contract: <see cref="Argmax"/> answers 0 when <c>logits[0]</c> is NaN, while the kernel's argmax
/// skips NaN entries, so such rows may differ between host and device.</para>
/// </remarks>
public sealed class Sampler
{
    /// <summary>The most likely token's weight (2⁴⁰): weights are integers in units of 2⁻⁴⁰ of it.</summary>
    public const float MaxWeight = 1099511627776f;

    private readonly float[] _weights;      // [vocab] Weight(logit) of the current row: whole numbers in [0, 2^40]
    private readonly ulong[] _candidates;   // [vocab] ~LikelihoodKey of candidates: ascending order is most likely first
    private SplitMix64 _random;

    /// <summary>Creates a sampler for logits rows of <paramref name="vocabSize"/> entries.</summary>
    public Sampler(int vocabSize, SamplingOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        ArgumentNullException.ThrowIfNull(options);
        VocabSize = vocabSize;
        Options = options;
        _weights = new float[vocabSize];
        _candidates = new ulong[vocabSize];
        _random = new SplitMix64(options.Seed);
    }

    /// <summary>Entries per logits row.</summary>
    public int VocabSize { get; }

    /// <summary>The options this sampler was made with.</summary>
    public SamplingOptions Options { get; }

    /// <summary>True when a token needs a uniform from the generator (temperature above 0).</summary>
    public bool NeedsUniform => Options.Temperature != 0;

    /// <summary>Picks the next token from <paramref name="logits"/> (<c>[vocab]</c>), drawing a uniform when <see cref="NeedsUniform"/>.</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        CheckLength(logits);
        return NeedsUniform ? Sample(logits, NextUniform()) : Argmax(logits);
    }

    /// <summary>
    /// The next uniform of this sequence's generator: a number in [0, 1) as a 64-bit binary fraction
    /// (<c>uniform / 2⁶⁴</c>). Draw exactly one per sampled token, and none at temperature 0, so that a seed
    /// gives the same tokens whether the host or a device samples.
    /// </summary>
    public ulong NextUniform() => _random.NextUInt64();

    /// <summary>
    /// The token the draw contract (see the remarks) picks from <paramref name="logits"/> for
    /// <paramref name="uniform"/>; deterministic, and the generator is not touched. At temperature 0 the argmax.
    /// </summary>
    public int Sample(ReadOnlySpan<float> logits, ulong uniform)
    {
        CheckLength(logits);
        if (!NeedsUniform) return Argmax(logits);
        int argmax = Argmax(logits);
        float max = logits[argmax];
        float inverseTemperature = 1f / Options.Temperature;
        Weights(logits, max, inverseTemperature, _weights);
        ulong total = 0;
        foreach (float w in _weights) total += (ulong)w;
        if (total == 0) return argmax;

        bool cutTopK = Options.TopK > 0 && Options.TopK < VocabSize;
        bool cutTopP = Options.TopP < 1;
        if (!cutTopK && !cutTopP)
        {
            ulong point = DrawPoint(uniform, total), cumulative = 0;
            for (int i = 0; i < _weights.Length; i++)
            {
                cumulative += (ulong)_weights[i];
                if (cumulative > point) return i;
            }
            throw new InvalidOperationException("Unreachable: the draw point lies below the total mass.");
        }

        // Candidates, most likely first: the top K, or (nucleus only) every token that can be in the nucleus.
        int count = cutTopK ? GatherTopK(Options.TopK) : GatherAtLeast(NucleusCutoff(total, NucleusTarget(total, Options.TopP)));
        var candidates = _candidates.AsSpan(0, count);
        candidates.Sort();
        if (cutTopK) candidates = candidates[..Math.Min(Options.TopK, count)];
        ulong mass = cutTopK ? Mass(candidates) : total;
        if (cutTopP) candidates = Nucleus(candidates, NucleusTarget(mass, Options.TopP));
        return DrawFrom(candidates, DrawPoint(uniform, Mass(candidates)));
    }

    /// <summary>
    /// The contract's weight of a token: exp((<paramref name="logit"/> − <paramref name="max"/>) ·
    /// <paramref name="inverseTemperature"/>) · 2⁴⁰ truncated to a whole number (returned as the float that
    /// holds it exactly), 0 below e⁻²⁸ or for NaN. Cody–Waite range reduction and Cephes' expf polynomial with
    /// explicit fused multiply-adds: every operation is a single correctly rounded IEEE float operation, so
    /// the CUDA kernel (and the emulator) computes the same bits. The CUDA copy is <c>mc_sample_weight</c>, the vector copy <see cref="Weights"/>;
    /// change both or neither.
    /// </summary>
    public static float Weight(float logit, float max, float inverseTemperature)
    {
        float x = (logit - max) * inverseTemperature;        // <= 0
        if (!(x >= -28f)) return 0f;                          // e^-28 < 2^-40: truncates to 0 anyway; NaN too
        float n = MathF.Round(x * 1.44269504f);               // nearest power of two, ties to even: [-40, 0]
        float r = MathF.FusedMultiplyAdd(n, -0.693359375f, x); // x - n·ln2, ln2 in two parts
        r = MathF.FusedMultiplyAdd(n, 2.12194440e-4f, r);
        float p = 1.9875691500e-4f;
        p = MathF.FusedMultiplyAdd(p, r, 1.3981999507e-3f);
        p = MathF.FusedMultiplyAdd(p, r, 8.3334519073e-3f);
        p = MathF.FusedMultiplyAdd(p, r, 4.1665795894e-2f);
        p = MathF.FusedMultiplyAdd(p, r, 1.6666665459e-1f);
        p = MathF.FusedMultiplyAdd(p, r, 5.0000001201e-1f);
        p = MathF.FusedMultiplyAdd(p, r * r, r) + 1f;        // e^r on [-ln2/2, ln2/2]
        float scale = BitConverter.Int32BitsToSingle((127 + 40 + (int)n) << 23); // 2^(40 + n), exact
        return MathF.Truncate(p * scale);
    }

    /// <summary>
    /// <see cref="Weight"/> of every entry of <paramref name="logits"/> into <paramref name="weights"/>, 16 (or 8) at a
    /// time. The vector path runs the same IEEE operations as <see cref="Weight"/> in the same order (round to nearest
    /// even, fused multiply-adds, truncation: each correctly rounded, so lane by lane the same bits), and selects 0
    /// where <see cref="Weight"/> returns early; the scalar loop takes the tail. A serving step samples a row of
    /// 32,000 logits per sequence, and the scalar loop cost ~0.25 ms a row.
    /// </summary>
    public static void Weights(ReadOnlySpan<float> logits, float max, float inverseTemperature, Span<float> weights)
    {
        if (weights.Length < logits.Length) throw new ArgumentException($"{logits.Length} weights needed.", nameof(weights));
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= logits.Length - Vector512<float>.Count; i += Vector512<float>.Count)
                Weight512(Vector512.Create(logits.Slice(i, Vector512<float>.Count)), max, inverseTemperature).CopyTo(weights.Slice(i));
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= logits.Length - Vector256<float>.Count; i += Vector256<float>.Count)
                Weight256(Vector256.Create(logits.Slice(i, Vector256<float>.Count)), max, inverseTemperature).CopyTo(weights.Slice(i));
        }
        for (; i < logits.Length; i++) weights[i] = Weight(logits[i], max, inverseTemperature);
    }

    // Weight, lane by lane (keep in step with it and with mc_sample_weight). Not AttentionMath.ExpNonPositive times
    // 2^40, although that runs the same polynomial: Weight puts the 2^40 into the exponent shift, which differs from a
    // separate scaling for x > 0 (logit above the given max, where the shift overflows into the sign), and Weights
    // must give Weight's bits for every input (tested), not only for the rows Sample passes it.
    private static Vector512<float> Weight512(Vector512<float> logit, float max, float inverseTemperature)
    {
        var x = (logit - Vector512.Create(max)) * Vector512.Create(inverseTemperature);
        var inRange = Vector512.GreaterThanOrEqual(x, Vector512.Create(-28f)); // false for NaN too
        var p = Kernels.CephesExp.Polynomial(Kernels.CephesExp.Reduce(x, out var n));
        var scale = Vector512.ShiftLeft(Vector512.Create(127 + 40) + Vector512.ConvertToInt32(n), 23).AsSingle();
        return Vector512.ConditionalSelect(inRange, Vector512.Truncate(p * scale), Vector512<float>.Zero);
    }

    private static Vector256<float> Weight256(Vector256<float> logit, float max, float inverseTemperature)
    {
        var x = (logit - Vector256.Create(max)) * Vector256.Create(inverseTemperature);
        var inRange = Vector256.GreaterThanOrEqual(x, Vector256.Create(-28f));
        var p = Kernels.CephesExp.Polynomial(Kernels.CephesExp.Reduce(x, out var n));
        var scale = Vector256.ShiftLeft(Vector256.Create(127 + 40) + Vector256.ConvertToInt32(n), 23).AsSingle();
        return Vector256.ConditionalSelect(inRange, Vector256.Truncate(p * scale), Vector256<float>.Zero);
    }

    /// <summary>The contract's draw point: ⌊<paramref name="uniform"/> · <paramref name="mass"/> / 2⁶⁴⌋, below <paramref name="mass"/> when it is positive.</summary>
    public static ulong DrawPoint(ulong uniform, ulong mass) => Math.BigMul(uniform, mass, out _);

    /// <summary>The contract's nucleus target: ⌈<paramref name="mass"/> · <paramref name="topP"/>⌉, the product rounded once as a double.</summary>
    public static ulong NucleusTarget(ulong mass, float topP) => (ulong)Math.Ceiling((double)mass * topP);

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

    private void CheckLength(ReadOnlySpan<float> logits)
    {
        if (logits.Length != VocabSize)
            throw new ArgumentException($"Expected {VocabSize} logits, got {logits.Length}.", nameof(logits));
    }

    // Larger weight first, then the lower id; stored complemented so that an ascending sort is most likely first.
    private static ulong Candidate(float weight, int token) =>
        ~(((ulong)BitConverter.SingleToUInt32Bits(weight) << 32) | (uint.MaxValue - (uint)token));

    private static ulong WeightOf(ulong candidate) => (ulong)BitConverter.UInt32BitsToSingle((uint)(~candidate >> 32));

    private static int TokenOf(ulong candidate) => (int)(uint.MaxValue - (uint)~candidate);

    // Tokens of weight >= minimum (at least 1: weightless tokens never matter once sorted last).
    private int GatherAtLeast(ulong minimum)
    {
        minimum = Math.Max(minimum, 1UL);
        int count = 0;
        for (int i = 0; i < _weights.Length; i++)
            if ((ulong)_weights[i] >= minimum) _candidates[count++] = Candidate(_weights[i], i);
        return count;
    }

    // A superset of the top K that is cheap to sort: every token whose weight's binary exponent is at least
    // that of the K-th largest weight (found with a histogram of exponents).
    private int GatherTopK(int k)
    {
        Span<int> numWithExponent = stackalloc int[256];
        numWithExponent.Clear();
        foreach (float w in _weights)
            if (w > 0) numWithExponent[(int)(BitConverter.SingleToUInt32Bits(w) >> 23)]++;
        int exponent = 255, above = 0;
        while (exponent > 0 && above + numWithExponent[exponent] < k) above += numWithExponent[exponent--];
        int count = 0;
        for (int i = 0; i < _weights.Length; i++)
            if (_weights[i] > 0 && (int)(BitConverter.SingleToUInt32Bits(_weights[i]) >> 23) >= exponent) _candidates[count++] = Candidate(_weights[i], i);
        return count;
    }

    // Without top-k, llama2.c's shortcut: at most n − 1 tokens are lighter than c = (total − target) / (n − 1)
    // (capped at the most likely token's weight, which is never among them), so together they hold less than
    // total − target and the nucleus (which reaches target) ends before them in likelihood order.
    private ulong NucleusCutoff(ulong total, ulong target) =>
        VocabSize == 1 || target >= total ? 0 : Math.Min((total - target) / (ulong)(VocabSize - 1), (ulong)MaxWeight);

    private static ulong Mass(ReadOnlySpan<ulong> candidates)
    {
        ulong mass = 0;
        foreach (ulong c in candidates) mass += WeightOf(c);
        return mass;
    }

    // The shortest prefix (most likely first) whose mass reaches target.
    private static Span<ulong> Nucleus(Span<ulong> sorted, ulong target)
    {
        ulong cumulative = 0;
        for (int i = 0; i < sorted.Length; i++)
        {
            cumulative += WeightOf(sorted[i]);
            if (cumulative >= target) return sorted[..(i + 1)];
        }
        return sorted;
    }

    private static int DrawFrom(ReadOnlySpan<ulong> sorted, ulong point)
    {
        ulong cumulative = 0;
        foreach (ulong c in sorted)
        {
            cumulative += WeightOf(c);
            if (cumulative > point) return TokenOf(c);
        }
        throw new InvalidOperationException("Unreachable: the draw point lies below the candidates' mass.");
    }
}
