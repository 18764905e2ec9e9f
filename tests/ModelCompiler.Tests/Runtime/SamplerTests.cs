using ModelCompiler.Runtime.Sampling;
using Xunit;

namespace ModelCompiler.Tests.Runtime;

[Trait("Category", TestCategories.CpuPaths)]
public sealed class SamplerTests
{
    // Logits whose softmax at T = 1 is exactly (0.1, 0.2, 0.3, 0.4).
    private static readonly float[] s_fourWay = [MathF.Log(0.1f), MathF.Log(0.2f), MathF.Log(0.3f), MathF.Log(0.4f)];

    [Fact]
    public void Greedy_picks_the_first_largest_logit()
    {
        var sampler = new Sampler(4, new SamplingOptions());
        Assert.Equal(1, sampler.Sample([0.1f, 3f, -1f, 3f]));
        Assert.Equal(0, sampler.Sample([5f, 3f, -1f, 3f]));
        Assert.Equal(3, sampler.Sample([-5f, -3f, -1f, 0f]));
    }

    [Theory]
    [InlineData(512, 0)]
    [InlineData(512, 1)]
    [InlineData(37, 2)]
    [InlineData(100, 3)]
    public void Argmax_is_the_first_index_of_the_largest_value_as_a_plain_loop_finds_it(int length, int seed)
    {
        var random = new Random(seed);
        // Few distinct values so that ties are common; NaN and signed zeros sprinkled in.
        var x = Enumerable.Range(0, length).Select(_ => (float)random.Next(-4, 5)).ToArray();
        for (int trial = 0; trial < 200; trial++)
        {
            var y = (float[])x.Clone();
            for (int i = 0; i < 5; i++) y[random.Next(length)] = random.Next(4) switch { 0 => float.NaN, 1 => -0f, 2 => 0f, _ => random.Next(-6, 7) };
            if (trial % 50 == 0) y[0] = float.NaN;
            int expected = 0;
            for (int i = 1; i < length; i++) if (y[i] > y[expected]) expected = i;
            Assert.Equal(expected, Sampler.Argmax(y));
        }
    }

    [Fact]
    public void Same_seed_gives_the_same_tokens_and_another_seed_differs()
    {
        float[] logits = RandomLogits(new Random(1), 50);
        int[] Run(ulong seed)
        {
            var sampler = new Sampler(50, new SamplingOptions(Temperature: 1f, TopK: 20, TopP: 0.95f, Seed: seed));
            return Enumerable.Range(0, 200).Select(_ => sampler.Sample(logits)).ToArray();
        }
        Assert.Equal(Run(42), Run(42));
        Assert.NotEqual(Run(42), Run(43));
    }

    [Fact]
    public void Top_k_of_one_and_a_tiny_top_p_are_greedy()
    {
        var random = new Random(2);
        var topK1 = new Sampler(300, new SamplingOptions(Temperature: 1.5f, TopK: 1, Seed: 5));
        var tinyP = new Sampler(300, new SamplingOptions(Temperature: 0.8f, TopP: 1e-6f, Seed: 6));
        for (int trial = 0; trial < 100; trial++)
        {
            float[] logits = RandomLogits(random, 300);
            int argmax = Array.IndexOf(logits, logits.Max());
            Assert.Equal(argmax, topK1.Sample(logits));
            Assert.Equal(argmax, tinyP.Sample(logits));
        }
    }

    [Fact]
    public void Frequencies_at_temperature_one_match_the_softmax()
    {
        AssertFrequencies(new SamplingOptions(Temperature: 1f, Seed: 11), [0.1, 0.2, 0.3, 0.4]);
    }

    [Fact]
    public void Temperature_two_flattens_to_the_square_root()
    {
        // softmax(log p / 2) is proportional to sqrt(p).
        double[] root = [Math.Sqrt(0.1), Math.Sqrt(0.2), Math.Sqrt(0.3), Math.Sqrt(0.4)];
        AssertFrequencies(new SamplingOptions(Temperature: 2f, Seed: 12), root.Select(r => r / root.Sum()).ToArray());
    }

    [Fact]
    public void Top_k_keeps_the_k_most_likely_renormalised()
    {
        AssertFrequencies(new SamplingOptions(Temperature: 1f, TopK: 2, Seed: 13), [0, 0, 3.0 / 7, 4.0 / 7]);
    }

    [Fact]
    public void Top_p_keeps_the_smallest_set_reaching_p()
    {
        // Sorted 0.4, 0.3, 0.2, 0.1: 0.4 + 0.3 = 0.7 is the first sum to reach 0.5.
        AssertFrequencies(new SamplingOptions(Temperature: 1f, TopP: 0.5f, Seed: 14), [0, 0, 3.0 / 7, 4.0 / 7]);
        // 0.4 alone reaches 0.35.
        AssertFrequencies(new SamplingOptions(Temperature: 1f, TopP: 0.35f, Seed: 15), [0, 0, 0, 1]);
    }

    [Fact]
    public void Top_p_over_a_large_vocabulary_never_leaves_the_nucleus()
    {
        // Token 7 holds about 0.73 of the mass and token 8 about 0.27 less the tail; p = 0.9 needs both.
        float[] logits = new float[1000];
        logits[7] = 10f;
        logits[8] = 9f;
        var sampler = new Sampler(1000, new SamplingOptions(Temperature: 1f, TopP: 0.9f, Seed: 16));
        var seen = Enumerable.Range(0, 2000).Select(_ => sampler.Sample(logits)).ToHashSet();
        Assert.Equal(new HashSet<int> { 7, 8 }, seen);
    }

    [Fact]
    public void Sampling_allocates_nothing_per_call()
    {
        float[] logits = RandomLogits(new Random(3), 32000);
        var sampler = new Sampler(32000, new SamplingOptions(Temperature: 0.9f, TopK: 40, TopP: 0.9f, Seed: 1));
        sampler.Sample(logits);
        // Each call measured on its own: the runtime itself may allocate on the thread now and then (tiered
        // compilation replacing a method mid-run; seen once in a loaded full-suite run, 1.3 KB over 20 calls), while an
        // allocation of the sampler's shows in every call.
        int numAllocating = 0;
        for (int i = 0; i < 40; i++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            sampler.Sample(logits);
            if (GC.GetAllocatedBytesForCurrentThread() != before) numAllocating++;
        }
        Assert.True(numAllocating <= 2, $"{numAllocating} of 40 calls allocated");
    }

    [Fact]
    public void Invalid_options_are_rejected_naming_the_option()
    {
        Assert.Equal("Temperature", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(Temperature: -0.5f)).ParamName);
        Assert.Equal("Temperature", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(Temperature: float.NaN)).ParamName);
        Assert.Equal("Temperature", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(Temperature: float.PositiveInfinity)).ParamName);
        Assert.Equal("TopK", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(TopK: -1)).ParamName);
        Assert.Equal("TopP", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(TopP: 0f)).ParamName);
        Assert.Equal("TopP", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(TopP: 1.01f)).ParamName);
        Assert.Equal("TopP", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions() with { TopP = float.NaN }).ParamName);
        Assert.Throws<ArgumentException>(() => new Sampler(4, new SamplingOptions()).Sample(new float[3]));
    }

    [Fact]
    public void SplitMix64_matches_the_reference_sequence()
    {
        // First outputs for seed 0 of the reference C implementation (Vigna, splitmix64.c).
        var random = new SplitMix64(0);
        Assert.Equal(0xE220A8397B1DCDAFUL, random.NextUInt64());
        Assert.Equal(0x6E789E6AA1B965F4UL, random.NextUInt64());
        Assert.Equal(0x06C45D188009454FUL, random.NextUInt64());
    }

    [Fact]
    public void Row_weights_are_bit_identical_to_the_scalar_weight_in_every_lane_and_tail()
    {
        // The vector path (Vector512 or Vector256) must give Weight's exact bits: the device kernel and the
        // draw contract are defined by the scalar function. Special values sit at every lane position.
        float[] specials = [float.NaN, float.NegativeInfinity, float.PositiveInfinity, -0f, 0f, -28f, -28.000002f, -27.999998f,
            float.MinValue, float.MaxValue, -1e-30f, 1e-30f, float.Epsilon, -float.Epsilon, 3f];
        var random = new Random(11);
        foreach (int length in new[] { 0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 32000 })
        {
            foreach (float inverseTemperature in new[] { 1f, 0.125f, 1.7f, 10f, float.PositiveInfinity })
            {
                var logits = new float[length];
                for (int i = 0; i < length; i++)
                    logits[i] = random.Next(8) == 0 ? specials[random.Next(specials.Length)] : (float)(random.NextDouble() * 40 - 30);
                float max = length == 0 ? 0f : (float)(random.NextDouble() * 6 - 3);
                var weights = new float[length + 3];
                weights.AsSpan().Fill(-1f);
                Sampler.Weights(logits, max, inverseTemperature, weights);
                for (int i = 0; i < length; i++)
                {
                    float expected = Sampler.Weight(logits[i], max, inverseTemperature);
                    Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(weights[i]),
                        $"length {length}, 1/T {inverseTemperature}, logit {logits[i]:R}, max {max:R}: {weights[i]:R} against Weight's {expected:R}");
                }
                Assert.All(weights.AsSpan(length).ToArray(), w => Assert.Equal(-1f, w)); // nothing written past the row
            }
        }
    }

    [Fact]
    public void Weights_are_exp_of_the_scaled_logit_gap_in_units_of_two_to_the_minus_forty()
    {
        Assert.Equal(Sampler.MaxWeight, Sampler.Weight(3.5f, 3.5f, 1.7f));
        Assert.Equal(Sampler.MaxWeight, Sampler.Weight(-0f, 0f, 1f));
        Assert.Equal(0f, Sampler.Weight(float.NegativeInfinity, 2f, 1f));
        Assert.Equal(0f, Sampler.Weight(float.NaN, 2f, 1f));
        Assert.Equal(0f, Sampler.Weight(-28.5f, 0f, 1f));
        var random = new Random(7);
        for (int i = 0; i < 200_000; i++)
        {
            float gap = (float)(random.NextDouble() * 30), inverseTemperature = (float)(0.1 + random.NextDouble() * 3);
            float w = Sampler.Weight(-gap, 0f, inverseTemperature);
            double x = (double)((-gap) * inverseTemperature);
            double exact = x < -28 ? 0 : Math.Exp(x) * Math.Pow(2, 40);
            Assert.True(w == Math.Floor(w) && w <= Sampler.MaxWeight, $"{w} is not a whole weight");
            // Truncation loses under 1; the polynomial and the reduction a few float ulps.
            Assert.True(Math.Abs(w - exact) <= 1 + 4e-7 * exact, $"Weight({x}) = {w}, exp gives {exact}");
        }
    }

    [Theory]
    [InlineData(50, 1)]
    [InlineData(512, 2)]
    [InlineData(32000, 3)]
    public void Sampling_from_a_given_uniform_follows_the_naive_draw_contract(int vocab, int seed)
    {
        var random = new Random(seed);
        float[] temperatures = [0f, 0.05f, 0.7f, 1f, 1.5f, 8f];
        int[] topKs = [0, 1, 2, 40, vocab - 1, vocab, vocab + 3, 2000];
        float[] topPs = [1f, 0.999f, 0.9f, 0.5f, 1e-6f];
        int rows = vocab > 1000 ? 60 : 600, notArgmax = 0;
        for (int r = 0; r < rows; r++)
        {
            float scale = (r % 4) switch { 0 => 0.01f, 1 => 2f, 2 => 10f, _ => 40f };
            float[] logits = Enumerable.Range(0, vocab).Select(_ => r % 5 == 0 ? random.Next(-2, 3) : (float)(random.NextDouble() * 2 - 1) * scale).ToArray();
            if (r % 7 == 0) logits[random.Next(vocab)] = float.NegativeInfinity;
            var options = new SamplingOptions(temperatures[random.Next(temperatures.Length)], topKs[random.Next(topKs.Length)], topPs[random.Next(topPs.Length)]);
            ulong uniform = (r % 9) switch { 0 => 0, 1 => ulong.MaxValue, _ => (ulong)random.NextInt64() ^ ((ulong)random.Next() << 40) };
            var sampler = new Sampler(vocab, options);
            int token = sampler.Sample(logits, uniform);
            Assert.Equal(SamplingReference.Sample(logits, options, uniform).Token, token);
            Assert.Equal(token, sampler.Sample(logits, uniform));   // a given uniform leaves the generator alone
            if (token != Sampler.Argmax(logits)) notArgmax++;
        }
        Assert.True(notArgmax > rows / 4, $"only {notArgmax} of {rows} draws differ from the argmax");
    }

    [Fact]
    public void Sample_draws_one_uniform_per_sampled_token_and_none_when_greedy()
    {
        float[] logits = RandomLogits(new Random(4), 300);
        var options = new SamplingOptions(Temperature: 0.9f, TopK: 50, TopP: 0.9f, Seed: 77);
        var drawing = new Sampler(300, options);
        var generator = new SplitMix64(77);
        for (int i = 0; i < 50; i++) Assert.Equal(new Sampler(300, options).Sample(logits, generator.NextUInt64()), drawing.Sample(logits));
        Assert.Equal(generator.NextUInt64(), drawing.NextUniform());
        var greedy = new Sampler(300, new SamplingOptions(Seed: 77));
        greedy.Sample(logits);
        Assert.Equal(new SplitMix64(77).NextUInt64(), greedy.NextUniform());
    }

    // Chi-square goodness of fit over 20,000 draws. The seed is fixed, so the test is deterministic; the
    // bound (3 degrees of freedom, p ≈ 1e-4) only guards against a wrong distribution, not bad luck.
    private static void AssertFrequencies(SamplingOptions options, double[] expected)
    {
        const int numDraws = 20_000;
        var sampler = new Sampler(4, options);
        var counts = new int[4];
        for (int i = 0; i < numDraws; i++) counts[sampler.Sample(s_fourWay)]++;

        double chiSquare = 0;
        for (int i = 0; i < 4; i++)
        {
            if (expected[i] == 0)
            {
                Assert.Equal(0, counts[i]);
                continue;
            }
            double e = expected[i] * numDraws;
            chiSquare += (counts[i] - e) * (counts[i] - e) / e;
        }
        Assert.True(chiSquare < 21.1, $"chi-square {chiSquare:F1} for counts [{string.Join(", ", counts)}]");
    }

    private static float[] RandomLogits(Random random, int count) =>
        Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 8 - 4)).ToArray();
}
