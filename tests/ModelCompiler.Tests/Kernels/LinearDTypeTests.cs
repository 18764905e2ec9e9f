using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.Threading;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// Every weight type through Linear, LinearAddResidual and RmsNormLinear against the reference decode path
/// (WeightConversion.Decode, then a double dot product), at token counts that hit the decode tiles (1, 3), the
/// prefill paths (the packed outer-product tile for float types from 16 tokens, widen-then-f32 for quantized from
/// 16) and their remainders (4-row/4-token tiles, partial 32-row panels, token groups of up to 12), on one and two
/// threads.
/// </summary>
/// <remarks>
/// Tolerances. The kernels multiply by exactly the decoded weights, so the only float error is f32 accumulation:
/// at most about (k/16 + 16)·2⁻²⁴·Σ|wᵢxᵢ| for the blocked sums of the dot-product tiles, bounded by 1e-5·Σ|wᵢxᵢ|.
/// The outer-product tile sums each output in k order: k·2⁻²⁴·Σ|wᵢxᵢ| at worst, about √k·2⁻²⁴·Σ|wᵢxᵢ| with the
/// random signs here (3.3e-6 at the largest k, 3072), inside the same bound. For q8_0/q4_0
/// with fewer than 16 tokens the activations are also quantized to int8 blocks of 32 (scale d = max|x|/127, round to
/// nearest), so each xⱼ moves by at most d/2 = max_b|x|/254 and the dot product by at most
/// Σ_b (max_b|x| / 254)·Σ_{j∈b}|wⱼ|; that bound (plus the accumulation term) is what those outputs are held to.
/// </remarks>
[Trait("Category", TestCategories.CpuPaths)]
[Collection(WorkerPoolCollection.Name)]
public class LinearDTypeTests
{
    public static TheoryData<string, int, int, int, int> Cases()
    {
        var data = new TheoryData<string, int, int, int, int>();
        foreach (var dtype in new[] { "f32", "f16", "bf16", "q8_0", "q4_0" })
        {
            bool quantized = dtype.StartsWith('q');
            foreach (int threads in new[] { 1, 2 })
            {
                foreach (int numTokens in new[] { 1, 3, 17, 128 })
                {
                    data.Add(dtype, threads, numTokens, quantized ? 96 : 67, 37);
                    data.Add(dtype, threads, numTokens, quantized ? 160 : 172, 5);
                }
                data.Add(dtype, threads, 1, 768, 257);
                // One token over two threads: a large chunk each, then a tail of small chunks that does not divide evenly.
                data.Add(dtype, threads, 1, 256, 1000);
                data.Add(dtype, threads, 2, quantized ? 256 : 250, 130);
                if (quantized)
                {
                    // Either side of the switch from int8 activations to widened weights (16 tokens).
                    data.Add(dtype, threads, 15, 96, 37);
                    data.Add(dtype, threads, 16, 160, 37);
                    continue;
                }
                // The packed outer-product path: token counts around its threshold (16) and its groups of up to 12,
                // 32-row panels with a partial last one (70 = 2·32 + 6, 100 over two threads' chunks), k with and
                // without a 16-wide tail.
                foreach (int numTokens in new[] { 15, 16, 17, 23, 24, 25, 36, 40 })
                    data.Add(dtype, threads, numTokens, numTokens % 2 == 0 ? 67 : 64, 70);
                data.Add(dtype, threads, 33, 48, 100);
                data.Add(dtype, threads, 20, 1024, 40); // rows 4 KiB apart: the activations are copied with padding
                data.Add(dtype, threads, 35, 3072, 40); // two token blocks (of up to 32 at this width)
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Projections_match_the_decoded_reference(string dtypeName, int threads, int numTokens, int inDim, int outDim)
    {
        Assert.True(WeightDTypes.TryParse(dtypeName, out var dtype));
        var random = new Random(HashCode.Combine(dtypeName, threads, numTokens, inDim, outDim) & 0x7FFFFFFF);
        var x = KernelTestData.RandomFloats(random, numTokens * inDim);
        var weights = KernelTestData.RandomFloats(random, outDim * inDim, 0.5f);
        var w = TestMatrix.Encoded(weights, inDim, dtype, out var decoded);
        bool int8Activations = WeightDTypes.IsBlockQuantized(dtype) && numTokens < 16;

        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(threads);
        try
        {
            var y = new float[numTokens * outDim];
            CpuKernels.Linear(x, numTokens, w, y, inDim, outDim);
            AssertWithinBound(x, decoded, numTokens, inDim, outDim, null, y, int8Activations, "Linear");

            var residual = KernelTestData.RandomFloats(random, numTokens * outDim);
            var start = (float[])residual.Clone();
            CpuKernels.LinearAddResidual(x, numTokens, w, residual, inDim, outDim);
            AssertWithinBound(x, decoded, numTokens, inDim, outDim, start, residual, int8Activations, "LinearAddResidual");

            var normWeight = KernelTestData.RandomFloats(random, inDim);
            var normalized = new float[numTokens * inDim];
            var projected = new float[numTokens * outDim];
            CpuKernels.RmsNormLinear(x, numTokens, normWeight, 1e-5f, w, projected, inDim, outDim, normalized);
            // The norm itself is checked elsewhere; here the projection of the rows it produced.
            AssertWithinBound(normalized, decoded, numTokens, inDim, outDim, null, projected, int8Activations, "RmsNormLinear");
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
    }

    internal static void AssertWithinBound(float[] x, float[] w, int numTokens, int inDim, int outDim, float[]? start, float[] actual, bool int8Activations, string what)
    {
        for (int t = 0; t < numTokens; t++)
        {
            for (int o = 0; o < outDim; o++)
            {
                double sum = start is null ? 0 : start[t * outDim + o];
                double magnitude = start is null ? 0 : Math.Abs(start[t * outDim + o]);
                double quantizationBound = 0;
                for (int b = 0; b < inDim; b += 32)
                {
                    double blockMax = 0, blockWeight = 0;
                    for (int j = b; j < Math.Min(b + 32, inDim); j++)
                    {
                        double xv = x[t * inDim + j], wv = w[o * inDim + j];
                        sum += xv * wv;
                        magnitude += Math.Abs(xv * wv);
                        blockMax = Math.Max(blockMax, Math.Abs(xv));
                        blockWeight += Math.Abs(wv);
                    }
                    quantizationBound += blockMax / 254 * blockWeight;
                }
                double bound = 1e-5 * magnitude + 1e-6 + (int8Activations ? quantizationBound * 1.001 : 0);
                double error = Math.Abs(actual[t * outDim + o] - sum);
                if (!(error <= bound))
                    Assert.Fail($"{what}[token {t}, row {o}]: got {actual[t * outDim + o]:R}, expected {sum:R} (error {error:E2}, bound {bound:E2}).");
            }
        }
    }
}
