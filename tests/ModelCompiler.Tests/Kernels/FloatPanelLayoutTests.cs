using System.Collections.Concurrent;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.Kernels.MatMul;
using ModelCompiler.Runtime.Threading;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.CudaEmulation;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// f32/f16/bf16 projections over the load-time float panels (<see cref="FloatPanelLayout"/>: k-major 32-row panels
/// that replace the rows) against a naive double loop over the decoded weights: row counts that are not multiples of
/// 32 (a padded last panel), odd k, one token (the decode stream) and every microkernel group size, more tokens than
/// one activation block, 4096-wide rows (the padded activation copy), accumulate mode, one to three threads. Then the
/// rows read back from the panels, and a CPU runner whose large matrices are packed against the float64 reference.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
[Collection(WorkerPoolCollection.Name)]
public class FloatPanelLayoutTests
{
    private static readonly ConcurrentBag<ModelWeights> s_keepAlive = new();

    public static TheoryData<string, int, int, int, int> Cases()
    {
        var data = new TheoryData<string, int, int, int, int>();
        foreach (var dtype in new[] { "f32", "f16", "bf16" })
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                foreach (int numTokens in new[] { 1, 2, 3, 5, 11, 12, 13, 16, 25 })
                {
                    data.Add(dtype, threads, numTokens, 96, 13);
                    data.Add(dtype, threads, numTokens, 37, 70);
                    // A last panel of 26 rows: both 16-row halves partial or full (the AVX2 kernel's halves).
                    data.Add(dtype, threads, numTokens, 45, 90);
                }
                data.Add(dtype, threads, 1, 1, 32);
                data.Add(dtype, threads, 1, 768, 257);
                data.Add(dtype, threads, 33, 288, 96);
                // 4096 floats per token: 24 tokens per activation block, so 100 tokens take five; rows 16 KiB apart get the padded copy.
                data.Add(dtype, threads, 100, 4096, 33);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Loaded_panel_projections_match_the_decoded_reference(string dtypeName, int threads, int numTokens, int inDim, int outDim)
    {
        Assert.True(WeightDTypes.TryParse(dtypeName, out var dtype));
        var random = new Random(HashCode.Combine(dtypeName, threads, numTokens, inDim, outDim) & 0x7FFFFFFF);
        var x = KernelTestData.RandomFloats(random, numTokens * inDim);
        var weights = KernelTestData.RandomFloats(random, outDim * inDim, 0.5f);
        var w = Packed(TestMatrix.Encoded(weights, inDim, dtype, out var decoded));
        // Without AVX-512 nothing is packed and the same checks cover the row paths.
        Assert.Equal(FloatPanelLayout.Supports(dtype), FloatPanelLayout.IsPacked(w));

        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(threads);
        try
        {
            var y = new float[numTokens * outDim];
            CpuKernels.Linear(x, numTokens, w, y, inDim, outDim);
            LinearDTypeTests.AssertWithinBound(x, decoded, numTokens, inDim, outDim, null, y, int8Activations: false, "Linear");

            var residual = KernelTestData.RandomFloats(random, numTokens * outDim);
            var start = (float[])residual.Clone();
            CpuKernels.LinearAddResidual(x, numTokens, w, residual, inDim, outDim);
            LinearDTypeTests.AssertWithinBound(x, decoded, numTokens, inDim, outDim, start, residual, int8Activations: false, "LinearAddResidual");
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
    }

    [Theory]
    [InlineData(WeightDType.F32)]
    [InlineData(WeightDType.F16)]
    [InlineData(WeightDType.BF16)]
    public void Panels_replace_owned_rows_and_give_them_back(WeightDType dtype)
    {
        if (!FloatPanelLayout.Supports(dtype)) return;
        var random = new Random(7);
        const int rows = 45, cols = 19;
        var raw = TestMatrix.Encoded(KernelTestData.RandomFloats(random, rows * cols), cols, dtype, out var decoded);
        var stored = new List<byte[]>();
        for (int r = 0; r < rows; r++) stored.Add(raw.Row(r).ToArray());

        var packed = Packed(raw);
        Assert.Equal(0, packed.Data);
        Assert.Throws<InvalidOperationException>(() => packed.Row(0).ToArray());

        var row = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            ModelWeights.CopyRow(packed, r, row);
            Assert.Equal(decoded.AsSpan(r * cols, cols).ToArray(), row);
        }
        var unpacked = new byte[rows * raw.RowSizeInBytes];
        FloatPanelLayout.Unpack(packed, unpacked);
        for (int r = 0; r < rows; r++) Assert.Equal(stored[r], unpacked.AsSpan(r * raw.RowSizeInBytes, raw.RowSizeInBytes).ToArray());

        // The embedding lookup reads the panels too.
        var x = new float[2 * cols];
        CpuKernels.Embedding(packed, new[] { 44, 3 }, 2, x, cols);
        Assert.Equal(decoded.AsSpan(44 * cols, cols).ToArray(), x.AsSpan(0, cols).ToArray());
        Assert.Equal(decoded.AsSpan(3 * cols, cols).ToArray(), x.AsSpan(cols, cols).ToArray());
    }

    // f16 panels widen to 2^-112 times each weight and rescale the sums at the end (F16Panel): every product is exact, so
    // sums that never come near zero (positive weights and activations) have the bits of f32 panels of the widened
    // weights, one token and many, on every panel kernel.
    [Theory]
    [InlineData(1, 96, 45)]
    [InlineData(12, 96, 64)]
    [InlineData(5, 768, 70)]
    public void F16_panels_give_the_bits_of_f32_panels_when_no_partial_sum_comes_near_zero(int numTokens, int inDim, int outDim)
    {
        if (!FloatPanelLayout.Supports(WeightDType.F16)) return;
        var random = new Random(numTokens * 1000 + inDim);
        var x = KernelTestData.RandomFloats(random, numTokens * inDim).Select(v => 0.75f + 0.25f * v).ToArray();
        var weights = KernelTestData.RandomFloats(random, outDim * inDim).Select(v => 0.75f + 0.25f * v).ToArray();
        var f16 = Packed(TestMatrix.Encoded(weights, inDim, WeightDType.F16, out var decoded));
        var f32 = Packed(TestMatrix.Encoded(decoded, inDim, WeightDType.F32, out _));
        Assert.True(FloatPanelLayout.IsPacked(f16));
        var expected = new float[numTokens * outDim];
        var actual = new float[numTokens * outDim];
        CpuKernels.Linear(x, numTokens, f32, expected, inDim, outDim);
        CpuKernels.Linear(x, numTokens, f16, actual, inDim, outDim);
        Assert.Equal(expected, actual);
    }

    [Theory]
    [InlineData(0x7C00, 5)]    // +infinity inside a vector of 16
    [InlineData(0xFE01, 17)]   // a NaN in the tail of a 19-wide row
    public unsafe void An_f16_matrix_with_an_infinity_or_NaN_keeps_its_rows_and_propagates_it(int bits, int column)
    {
        var random = new Random(3);
        const int rows = 40, cols = 19;
        var raw = TestMatrix.Encoded(KernelTestData.RandomFloats(random, rows * cols), cols, WeightDType.F16, out _);
        Assert.True(FloatPanelLayout.HasFiniteHalves(raw));
        ((ushort*)((byte*)raw.Data + 33 * raw.RowSizeInBytes))[column] = (ushort)bits;
        Assert.False(FloatPanelLayout.HasFiniteHalves(raw));
        var kept = Packed(raw);
        Assert.False(FloatPanelLayout.IsPacked(kept));
        var y = new float[rows];
        CpuKernels.Linear(Enumerable.Repeat(1f, cols).ToArray(), 1, kept, y, cols, rows);
        Assert.False(float.IsFinite(y[33]));
        Assert.All(y.Where((_, r) => r != 33), v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void Small_matrices_keep_their_rows_by_default()
    {
        var weights = new ModelWeights(1, null);
        weights.Allocate(0, WeightDType.F32, 64, 64);
        Assert.False(weights.PackForCpu(0));
        Assert.NotEqual(0, weights.Matrix(0).Data);
        weights.Dispose();
    }

    [Fact]
    public void A_cpu_runner_with_packed_f32_matrices_matches_the_reference_and_keeps_one_copy()
    {
        var engine = new Llama15MTestEngine();
        var config = engine.Config;
        int[] tokens = [1, 403, 2501, 31999, 17, 9000, 12, 5, 77, 1000, 2, 3, 4, 88, 99, 100, 101, 2000];
        float[][] expected;
        using (var reference = InMemoryWeightSource.CreateRandomLlama(config, seed: 21))
            expected = EngineTestSupport.ReferenceLogits(config, reference, tokens);

        var source = InMemoryWeightSource.CreateRandomLlama(config, seed: 21); // owned by the runner
        using var runner = new ModelRunner(engine, source);
        // The levels that pack f32 matrices for the engines (AVX-512; AVX2 keeps f32 rows, see ShouldPack).
        if (FloatPanelLayout.ShouldPack(WeightDType.F32, 1024, 1024))
        {
            int numPacked = 0;
            foreach (var spec in engine.WeightSpecs)
            {
                var matrix = runner.Weights.Matrix(spec.Index);
                if (spec.Shape.Length != 2 || !FloatPanelLayout.ShouldPack(matrix.DType, matrix.Rows, matrix.Cols)) continue;
                numPacked++;
                Assert.True(FloatPanelLayout.IsPacked(matrix), spec.Name);
                // One copy: owned (fused) rows are freed, borrowed ones released by the source.
                Assert.Equal(0, matrix.Data);
                foreach (var name in spec.Sources) Assert.False(source.TryGetTensor(name, out _), name);
            }
            Assert.True(numPacked > 0);
        }

        // A prefill of 16 tokens (the microkernel), then one-token steps (the panel stream), then two sequences at once.
        int vocab = config.VocabSize;
        const int prefill = 16;
        var batch = runner.CreateBatch();
        runner.Blocks.Allocate(0, prefill);
        batch.AddSequence(tokens.AsSpan(0, prefill), 0, runner.Blocks.BlockTable(0), allLogits: true);
        var logits = runner.Forward(batch);
        for (int p = 0; p < prefill; p++)
        {
            double error = EngineTestSupport.MaxAbsDifference(logits.Slice(p * vocab, vocab), expected[p]);
            Assert.True(error <= EngineTestSupport.LogitsTolerance, $"prefill position {p}: max |engine - reference| = {error:E3}");
        }
        for (int position = prefill; position < tokens.Length; position++)
        {
            runner.Blocks.Append(0, position + 1);
            batch.Clear();
            batch.AddSequence(tokens.AsSpan(position, 1), position, runner.Blocks.BlockTable(0));
            double error = EngineTestSupport.MaxAbsDifference(runner.Forward(batch), expected[position]);
            Assert.True(error <= EngineTestSupport.LogitsTolerance, $"decode position {position}: max |engine - reference| = {error:E3}");
        }
    }

    /// <summary>A copy of <paramref name="raw"/> in a <see cref="ModelWeights"/> that has packed it into float panels whatever its size.</summary>
    internal static unsafe WeightMatrix Packed(WeightMatrix raw)
    {
        var weights = new ModelWeights(1, null);
        var bytes = weights.Allocate(0, raw.DType, raw.Rows, raw.Cols);
        new ReadOnlySpan<byte>((void*)raw.Data, bytes.Length).CopyTo(bytes);
        weights.PackForCpu(0, floatsOfAnySize: true);
        s_keepAlive.Add(weights);
        return weights.Matrix(0);
    }
}
