using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.KvCache;
using Xunit;
using static ModelCompiler.Tests.Kernels.KernelTestData;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// Each non-attention kernel against a naive double-precision loop written here, at widths that are not
/// multiples of any vector size (1, 7, 17, 33, 70, 129) so every SIMD tail runs.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class CpuKernelsTests
{
    public static TheoryData<int> OddWidths => new() { 1, 7, 17, 33, 70, 129 };

    [Fact]
    public void Embedding_copies_each_tokens_row_and_rejects_ids_outside_the_vocabulary()
    {
        const int vocab = 11, dim = 17;
        var table = RandomFloats(new Random(1), vocab * dim);
        int[] tokens = [3, 0, 10, 3];
        var x = new float[tokens.Length * dim];
        CpuKernels.Embedding(TestMatrix.F32(table, dim), tokens, tokens.Length, x, dim);
        for (int t = 0; t < tokens.Length; t++)
            Assert.Equal(table.AsSpan(tokens[t] * dim, dim).ToArray(), x.AsSpan(t * dim, dim).ToArray());

        Assert.Throws<ArgumentOutOfRangeException>(() => CpuKernels.Embedding(TestMatrix.F32(table, dim), [vocab], 1, x, dim));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuKernels.Embedding(TestMatrix.F32(table, dim), [-1], 1, x, dim));
    }

    [Fact]
    public void GatherRows_picks_the_listed_rows_in_order()
    {
        const int width = 33;
        var x = RandomFloats(new Random(2), 5 * width);
        int[] rows = [4, 1, 1];
        var y = new float[rows.Length * width];
        CpuKernels.GatherRows(x, rows, rows.Length, y, width);
        for (int r = 0; r < rows.Length; r++)
            Assert.Equal(x.AsSpan(rows[r] * width, width).ToArray(), y.AsSpan(r * width, width).ToArray());
    }

    [Theory]
    [MemberData(nameof(OddWidths))]
    public void RmsNorm_matches_the_naive_formula(int dim)
    {
        var random = new Random(dim);
        const int numTokens = 3;
        const float eps = 1e-5f;
        var x = RandomFloats(random, numTokens * dim, 3f);
        var weight = RandomFloats(random, dim);
        var y = new float[numTokens * dim];
        CpuKernels.RmsNorm(x, numTokens, dim, weight, eps, y);
        AssertClose(NaiveRmsNorm(x, numTokens, dim, weight, eps), y, what: "rmsnorm");

        // In place, as the contract allows.
        CpuKernels.RmsNorm(x, numTokens, dim, weight, eps, x);
        AssertClose(y, x, relative: 0, absolute: 0, what: "rmsnorm in place");
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(1, 17, 33)]
    [InlineData(3, 33, 17)]
    [InlineData(5, 70, 9)]
    [InlineData(2, 129, 65)]
    [InlineData(1, 16, 16)]     // one token, small matrices: sixteen rows at a time (no row-length tail)
    [InlineData(1, 64, 40)]     // two groups of 16 and 8 leftover rows
    [InlineData(1, 172, 64)]    // Stories260K's down projection: a 12-weight tail
    [InlineData(1, 100, 512)]
    public void Linear_and_LinearAddResidual_match_the_naive_product(int numTokens, int inDim, int outDim)
    {
        var random = new Random(inDim * 1000 + outDim);
        var x = RandomFloats(random, numTokens * inDim);
        var w = RandomFloats(random, outDim * inDim);
        var expected = NaiveLinear(x, numTokens, w, inDim, outDim);

        var y = new float[numTokens * outDim];
        CpuKernels.Linear(x, numTokens, TestMatrix.F32(w, inDim), y, inDim, outDim);
        AssertClose(expected, y, what: "linear");

        var residual = RandomFloats(random, numTokens * outDim);
        var expectedResidual = new double[residual.Length];
        for (int i = 0; i < residual.Length; i++) expectedResidual[i] = residual[i] + expected[i];
        CpuKernels.LinearAddResidual(x, numTokens, TestMatrix.F32(w, inDim), residual, inDim, outDim);
        AssertClose(expectedResidual, residual, what: "linear + residual");
    }

    [Theory]
    [InlineData(1, 17, 33)]
    [InlineData(4, 33, 70)]
    public void RmsNormLinear_matches_norm_then_product_and_leaves_the_normalized_rows_in_scratch(int numTokens, int inDim, int outDim)
    {
        var random = new Random(inDim + outDim);
        const float eps = 1e-6f;
        var x = RandomFloats(random, numTokens * inDim, 2f);
        var normWeight = RandomFloats(random, inDim);
        var w = RandomFloats(random, outDim * inDim);
        var normalized = new float[numTokens * inDim];
        var y = new float[numTokens * outDim];
        CpuKernels.RmsNormLinear(x, numTokens, normWeight, eps, TestMatrix.F32(w, inDim), y, inDim, outDim, normalized);

        var expectedNormalized = NaiveRmsNorm(x, numTokens, inDim, normWeight, eps);
        AssertClose(expectedNormalized, normalized, what: "normalized");
        AssertClose(NaiveLinear(expectedNormalized, numTokens, w, inDim, outDim), y, what: "projection");
    }

    [Theory]
    [MemberData(nameof(OddWidths))]
    public void Elementwise_ops_match_the_naive_loops_and_may_write_over_an_input(int count)
    {
        var random = new Random(count);
        // Wide range so silu sees its saturated tails (e^-x overflowing included).
        var a = RandomFloats(random, count, 100f);
        var b = RandomFloats(random, count, 3f);
        var expectedSilu = a.Select(v => v / (1 + Math.Exp(-(double)v))).ToArray();
        var expectedMul = a.Zip(b, (p, q) => (double)p * q).ToArray();
        var expectedAdd = a.Zip(b, (p, q) => (double)p + q).ToArray();

        var y = new float[count];
        CpuKernels.Silu(a, y, count);
        AssertClose(expectedSilu, y, what: "silu");
        CpuKernels.Mul(a, b, y, count);
        AssertClose(expectedMul, y, what: "mul");
        CpuKernels.Add(a, b, y, count);
        AssertClose(expectedAdd, y, what: "add");

        var aliased = (float[])a.Clone();
        CpuKernels.Silu(aliased, aliased, count);
        AssertClose(expectedSilu, aliased, what: "silu in place");
        aliased = (float[])b.Clone();
        CpuKernels.Mul(a, aliased, aliased, count);
        AssertClose(expectedMul, aliased, what: "mul into b");
        aliased = (float[])a.Clone();
        CpuKernels.Add(aliased, b, aliased, count);
        AssertClose(expectedAdd, aliased, what: "add into a");
    }

    [Fact]
    public void Elementwise_ops_touch_only_count_elements()
    {
        var a = new float[20];
        var y = Enumerable.Repeat(-7f, 20).ToArray();
        CpuKernels.Add(a, a, y, 13);
        Assert.All(y.Skip(13), v => Assert.Equal(-7f, v));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 17)]
    [InlineData(2, 70)]
    public void SwiGlu_multiplies_silu_of_the_gate_half_by_the_up_half(int numTokens, int hidden)
    {
        var gateUp = RandomFloats(new Random(hidden), numTokens * 2 * hidden, 8f);
        var y = new float[numTokens * hidden];
        CpuKernels.SwiGlu(gateUp, numTokens, hidden, y);
        var expected = new double[numTokens * hidden];
        for (int t = 0; t < numTokens; t++)
        for (int j = 0; j < hidden; j++)
        {
            double gate = gateUp[t * 2 * hidden + j], up = gateUp[t * 2 * hidden + hidden + j];
            expected[t * hidden + j] = gate / (1 + Math.Exp(-gate)) * up;
        }
        AssertClose(expected, y, what: "swiglu");
    }

    [Theory]
    [InlineData(RopeStyle.Interleaved, 8)]
    [InlineData(RopeStyle.Half, 8)]
    [InlineData(RopeStyle.Interleaved, 34)]
    [InlineData(RopeStyle.Half, 34)]
    [InlineData(RopeStyle.Interleaved, 16)]
    [InlineData(RopeStyle.Half, 16)]
    [InlineData(RopeStyle.Interleaved, 64)]
    [InlineData(RopeStyle.Half, 64)]
    public void Rope_rotates_only_the_addressed_heads_by_each_tokens_position(RopeStyle style, int headDim)
    {
        // Two sequences with positions far apart (up to ~1000) so angle precision matters; heads sit at a
        // column offset inside wider rows, and every column outside them must stay as it was.
        const int numHeads = 3, columnOffset = 5, maxHeadDim = 64, rowStride = columnOffset + numHeads * maxHeadDim + 4;
        const float theta = 10000f;
        var batch = new ForwardBatch(maxTokens: 8, maxSequences: 2, maxBlocksPerSequence: 1100, blockSize: 1);
        batch.AddSequence([1, 2, 3], startPosition: 0, blockTable: Enumerable.Range(0, 3).ToArray());
        batch.AddSequence([4, 5], startPosition: 997, blockTable: Enumerable.Range(0, 999).ToArray());

        var rows = RandomFloats(new Random(headDim), batch.NumTokens * rowStride);
        var original = (float[])rows.Clone();
        CpuKernels.Rope(rows, rowStride, columnOffset, numHeads, headDim, batch, theta, style);

        for (int t = 0; t < batch.NumTokens; t++)
        {
            int rowStart = t * rowStride;
            for (int c = 0; c < rowStride; c++)
            {
                if (c >= columnOffset && c < columnOffset + numHeads * headDim) continue;
                Assert.Equal(original[rowStart + c], rows[rowStart + c]);
            }
            for (int h = 0; h < numHeads; h++)
            {
                int headStart = rowStart + columnOffset + h * headDim;
                var head = original.AsSpan(headStart, headDim).ToArray().Select(v => (double)v).ToArray();
                NaiveRotate(head, batch.Positions[t], theta, style);
                AssertClose(head, rows.AsSpan(headStart, headDim), what: $"token {t} head {h}");
            }
        }
    }

    /// <summary>
    /// The vector forms (head widths with 4 or 8 pairs per vector) must give exactly what the scalar loop gives: per
    /// element two f32 products and one f32 sum of the table's angles. A greedy output that stays byte-identical to the
    /// reference relies on no kernel change moving a bit it need not.
    /// </summary>
    [Theory]
    [InlineData(RopeStyle.Interleaved, 8)]
    [InlineData(RopeStyle.Interleaved, 64)]
    [InlineData(RopeStyle.Half, 16)]
    [InlineData(RopeStyle.Half, 128)]
    [InlineData(RopeStyle.Half, 34)]
    public void Rope_gives_the_scalar_formulas_result_bit_for_bit(RopeStyle style, int headDim)
    {
        const int numHeads = 5;
        const float theta = 10000f;
        int numPairs = headDim / 2;
        var batch = new ForwardBatch(maxTokens: 4, maxSequences: 1, maxBlocksPerSequence: 700, blockSize: 1);
        batch.AddSequence([1, 2, 3, 4], startPosition: 613, blockTable: Enumerable.Range(0, 700).ToArray());
        var rows = RandomFloats(new Random(headDim + (int)style), batch.NumTokens * numHeads * headDim, 4f);
        var expected = (float[])rows.Clone();
        var inverseFrequencies = new double[numPairs];
        var cos = new float[numPairs];
        var sin = new float[numPairs];
        CpuKernels.RopeInverseFrequencies(theta, headDim, inverseFrequencies);
        for (int t = 0; t < batch.NumTokens; t++)
        {
            CpuKernels.RopeAngles(batch.Positions[t], inverseFrequencies, cos, sin);
            for (int h = 0; h < numHeads; h++)
            for (int i = 0; i < numPairs; i++)
            {
                int start = (t * numHeads + h) * headDim;
                int a = start + (style == RopeStyle.Interleaved ? 2 * i : i), b = start + (style == RopeStyle.Interleaved ? 2 * i + 1 : i + numPairs);
                float x0 = expected[a], x1 = expected[b];
                expected[a] = x0 * cos[i] - x1 * sin[i];
                expected[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
        CpuKernels.Rope(rows, numHeads * headDim, 0, numHeads, headDim, batch, theta, style);
        Assert.Equal(expected, rows);
    }

    /// <summary>SiLU's f32 exponential (CephesExp) against double over a dense sweep, the saturated tails included.</summary>
    [Fact]
    public void Silu_is_within_a_few_ulp_of_double_everywhere()
    {
        var x = new List<float>();
        for (float v = -120f; v <= 120f; v += 0.0137f) x.Add(v);
        x.AddRange([0f, -0f, 1e-30f, -1e-30f, 87.3f, -87.3f, 88.1f, -88.1f, 89f, -89f, 1e6f, -1e6f, float.MaxValue, -float.MaxValue]);
        var input = x.ToArray();
        var y = new float[input.Length];
        CpuKernels.Silu(input, y, input.Length);
        for (int i = 0; i < input.Length; i++)
        {
            double expected = input[i] / (1 + Math.Exp(-(double)input[i]));
            if (expected == 0 || Math.Abs(expected) < 1e-30)
            {
                Assert.True(Math.Abs(y[i]) < 1e-30, $"silu({input[i]}) = {y[i]}, expected about 0");
                continue;
            }
            float magnitude = Math.Abs((float)expected);
            double ulp = MathF.BitIncrement(magnitude) - magnitude;
            Assert.True(Math.Abs(y[i] - expected) <= 4 * ulp, $"silu({input[i]}) = {y[i]}, expected {expected} (error {Math.Abs(y[i] - expected) / ulp:F1} ulp)");
        }
        Assert.True(float.IsNaN(SiluOf(float.NaN)), "silu(NaN) must be NaN");

        static float SiluOf(float v) { var r = new float[8]; CpuKernels.Silu(Enumerable.Repeat(v, 8).ToArray(), r, 8); return r[0]; }
    }

    [Fact]
    public void Rope_styles_differ_so_a_swapped_convention_would_be_caught()
    {
        var batch = new ForwardBatch(1, 1, 1, 16);
        batch.AddSequence([0], startPosition: 3, blockTable: [0]);
        var interleaved = RandomFloats(new Random(5), 8);
        var half = (float[])interleaved.Clone();
        CpuKernels.Rope(interleaved, 8, 0, 1, 8, batch, 10000f, RopeStyle.Interleaved);
        CpuKernels.Rope(half, 8, 0, 1, 8, batch, 10000f, RopeStyle.Half);
        Assert.NotEqual(interleaved, half);
    }

    internal static double[] NaiveRmsNorm(ReadOnlySpan<float> x, int numTokens, int dim, ReadOnlySpan<float> weight, double eps)
    {
        var y = new double[numTokens * dim];
        for (int t = 0; t < numTokens; t++)
        {
            double sumOfSquares = 0;
            for (int i = 0; i < dim; i++) sumOfSquares += (double)x[t * dim + i] * x[t * dim + i];
            double inverseRms = 1 / Math.Sqrt(sumOfSquares / dim + eps);
            for (int i = 0; i < dim; i++) y[t * dim + i] = x[t * dim + i] * inverseRms * weight[i];
        }
        return y;
    }

    internal static double[] NaiveLinear(ReadOnlySpan<float> x, int numTokens, ReadOnlySpan<float> w, int inDim, int outDim)
    {
        var xd = new double[x.Length];
        for (int i = 0; i < x.Length; i++) xd[i] = x[i];
        return NaiveLinear(xd, numTokens, w, inDim, outDim);
    }

    internal static double[] NaiveLinear(double[] x, int numTokens, ReadOnlySpan<float> w, int inDim, int outDim)
    {
        var y = new double[numTokens * outDim];
        for (int t = 0; t < numTokens; t++)
        for (int o = 0; o < outDim; o++)
        {
            double sum = 0;
            for (int i = 0; i < inDim; i++) sum += x[t * inDim + i] * w[o * inDim + i];
            y[t * outDim + o] = sum;
        }
        return y;
    }
}
