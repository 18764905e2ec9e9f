using System.Collections.Concurrent;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.Kernels.MatMul;
using ModelCompiler.Runtime.Threading;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// q8_0/q4_0 projections over the load-time packed layout (8-row groups, <see cref="PackedQuantizedLayout"/>)
/// against the decoded reference (WeightConversion.Decode, then a double dot product): row counts that are not
/// multiples of 8 (a padded last group), k not a multiple of 256, every token-tile remainder from 1 to 33 tokens,
/// more tokens than one activation block, accumulate mode, one and two threads. The packed path quantizes the
/// activations to int8 blocks at every token count, so every output is held to the int8-activation bound of
/// <see cref="LinearDTypeTests"/>.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
[Collection(WorkerPoolCollection.Name)]
public class PackedQuantizedTests
{
    // Packed matrices live as long as the test run (their native memory is owned by these ModelWeights).
    private static readonly ConcurrentBag<ModelWeights> s_keepAlive = new();

    public static TheoryData<string, int, int, int, int> Cases()
    {
        var data = new TheoryData<string, int, int, int, int>();
        foreach (var dtype in new[] { "q8_0", "q4_0" })
        {
            foreach (int threads in new[] { 1, 2 })
            {
                foreach (int numTokens in new[] { 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33 })
                {
                    data.Add(dtype, threads, numTokens, 96, 13);
                    data.Add(dtype, threads, numTokens, 288, 37);
                }
                data.Add(dtype, threads, 1, 32, 1);
                data.Add(dtype, threads, 6, 160, 5);
                data.Add(dtype, threads, 1, 768, 257);
                data.Add(dtype, threads, 19, 256, 130);
                // 4096 int8 activations per token: 96 tokens per activation block, so 100 tokens take two.
                data.Add(dtype, threads, 100, 4096, 9);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Packed_projections_match_the_decoded_reference(string dtypeName, int threads, int numTokens, int inDim, int outDim)
    {
        Assert.True(WeightDTypes.TryParse(dtypeName, out var dtype));
        var random = new Random(HashCode.Combine(dtypeName, threads, numTokens, inDim, outDim) & 0x7FFFFFFF);
        var x = KernelTestData.RandomFloats(random, numTokens * inDim);
        var weights = KernelTestData.RandomFloats(random, outDim * inDim, 0.5f);
        var w = Packed(TestMatrix.Encoded(weights, inDim, dtype, out var decoded));
        // Without AVX-VNNI nothing is packed and the same checks cover the GGUF-layout paths.
        Assert.Equal(PackedQuantizedLayout.IsSupported, w.PackedData != 0);

        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(threads);
        try
        {
            var y = new float[numTokens * outDim];
            CpuKernels.Linear(x, numTokens, w, y, inDim, outDim);
            LinearDTypeTests.AssertWithinBound(x, decoded, numTokens, inDim, outDim, null, y, int8Activations: true, "Linear");

            var residual = KernelTestData.RandomFloats(random, numTokens * outDim);
            var start = (float[])residual.Clone();
            CpuKernels.LinearAddResidual(x, numTokens, w, residual, inDim, outDim);
            LinearDTypeTests.AssertWithinBound(x, decoded, numTokens, inDim, outDim, start, residual, int8Activations: true, "LinearAddResidual");
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void Packing_keeps_the_stored_rows_and_skips_other_types(string dtypeName)
    {
        Assert.True(WeightDTypes.TryParse(dtypeName, out var dtype));
        var random = new Random(5);
        var raw = TestMatrix.Encoded(KernelTestData.RandomFloats(random, 11 * 64), 64, dtype, out _);
        var before = new List<byte[]>();
        for (int r = 0; r < raw.Rows; r++) before.Add(raw.Row(r).ToArray());

        var packed = Packed(raw);
        Assert.Equal(PackedQuantizedLayout.IsSupported, packed.PackedData != 0);
        for (int r = 0; r < raw.Rows; r++) Assert.Equal(before[r], packed.Row(r).ToArray());

        var f16 = Packed(TestMatrix.Encoded(KernelTestData.RandomFloats(random, 11 * 64), 64, WeightDType.F16, out _));
        Assert.Equal(0, f16.PackedData);
    }

    [Theory]
    [InlineData(WeightDType.Q8_0)]
    [InlineData(WeightDType.Q4_0)]
    public void The_cpu_runner_packs_every_quantized_matrix_of_a_tied_model(WeightDType dtype)
    {
        var engine = new ModelCompiler.Tests.Engine.Stories260KTestEngine();
        var source = new ConvertedWeightSource(InMemoryWeightSource.CreateRandomLlama(engine.Config, 4), dtype); // owned by the runner
        using var runner = new ModelCompiler.Runtime.Engine.ModelRunner(engine, source);
        int numQuantized = 0;
        foreach (var spec in engine.WeightSpecs)
        {
            var matrix = runner.Weights.Matrix(spec.Index);
            if (matrix.DType != dtype) continue;
            numQuantized++;
            // Tied: the token embedding is also the LM head, so it is packed like the projections.
            Assert.Equal(PackedQuantizedLayout.IsSupported, matrix.PackedData != 0);
        }
        Assert.True(numQuantized > 0);
    }

    [Fact]
    public void Finite_half_widening_matches_the_general_conversion_for_every_finite_pattern()
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) return;
        var halves = new short[8];
        for (int h = 0; h < 65536; h += 8)
        {
            for (int i = 0; i < 8; i++) halves[i] = (short)(h + i);
            var widened = HalfBits.FiniteHalfToSingle(System.Runtime.Intrinsics.Vector128.Create(halves));
            for (int i = 0; i < 8; i++)
            {
                ushort bits = (ushort)(h + i);
                if ((bits & 0x7C00) == 0x7C00) continue; // infinity and NaN: excluded by contract
                Assert.Equal(BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf(bits)), BitConverter.SingleToUInt32Bits(widened[i]));
            }
        }
    }

    [Fact]
    public void Scaled_finite_half_widening_times_its_scale_is_the_value_for_every_finite_pattern()
    {
        // The attention's short f16 read (FiniteF16Kv): 2^-112 times the value, exact, in all three forms.
        var halves = new short[16];
        for (int h = 0; h < 65536; h += 16)
        {
            for (int i = 0; i < 16; i++) halves[i] = (short)(h + i);
            var wide = System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? HalfBits.ScaledFiniteHalfToSingle(System.Runtime.Intrinsics.Vector256.Create(halves)) : default;
            var low = System.Runtime.Intrinsics.X86.Avx2.IsSupported ? HalfBits.ScaledFiniteHalfToSingle(System.Runtime.Intrinsics.Vector128.Create(halves, 0)) : default;
            for (int i = 0; i < 16; i++)
            {
                ushort bits = (ushort)(h + i);
                if ((bits & 0x7C00) == 0x7C00) continue; // infinity and NaN: excluded by contract
                float value = (float)BitConverter.UInt16BitsToHalf(bits);
                float scaled = HalfBits.ScaledFiniteHalfToSingle(bits);
                Assert.Equal(BitConverter.SingleToUInt32Bits(value), BitConverter.SingleToUInt32Bits(scaled * HalfBits.FiniteHalfScale));
                if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported) Assert.Equal(BitConverter.SingleToUInt32Bits(scaled), BitConverter.SingleToUInt32Bits(wide[i]));
                if (System.Runtime.Intrinsics.X86.Avx2.IsSupported && i < 8) Assert.Equal(BitConverter.SingleToUInt32Bits(scaled), BitConverter.SingleToUInt32Bits(low[i]));
            }
        }
    }

    [Theory]
    [InlineData(WeightDType.Q8_0, 0x7C00)]
    [InlineData(WeightDType.Q4_0, 0xFC00)]
    [InlineData(WeightDType.Q4_0, 0x7E00)]
    public unsafe void A_matrix_with_a_non_finite_scale_stays_unpacked_and_propagates_it(WeightDType dtype, int scaleBits)
    {
        var random = new Random(11);
        const int inDim = 64, outDim = 9;
        var raw = TestMatrix.Encoded(KernelTestData.RandomFloats(random, outDim * inDim, 0.5f), inDim, dtype, out var decoded);
        // Row 3, second block: the scale is the block's first two bytes.
        *(ushort*)((byte*)raw.Data + 3 * raw.RowSizeInBytes + (dtype == WeightDType.Q8_0 ? 34 : 18)) = (ushort)scaleBits;
        var w = Packed(raw);
        Assert.Equal(0, w.PackedData);

        var x = KernelTestData.RandomFloats(random, inDim);
        var y = new float[outDim];
        CpuKernels.Linear(x, 1, w, y, inDim, outDim);
        for (int r = 0; r < outDim; r++)
        {
            if (r == 3) { Assert.False(float.IsFinite(y[r])); continue; }
            double expected = 0, magnitude = 0;
            for (int i = 0; i < inDim; i++)
            {
                expected += (double)x[i] * decoded[r * inDim + i];
                magnitude += Math.Abs((double)x[i] * decoded[r * inDim + i]);
            }
            // int8 activations: each is off by at most half a step of its block's scale (max |x| / 127).
            Assert.True(Math.Abs(y[r] - expected) <= magnitude / 127 + 1e-4, $"row {r}: {y[r]} vs {expected}");
        }
    }

    /// <summary>A copy of <paramref name="raw"/> in a <see cref="ModelWeights"/> that has packed it for the CPU.</summary>
    internal static unsafe WeightMatrix Packed(WeightMatrix raw)
    {
        var weights = new ModelWeights(1, null);
        var bytes = weights.Allocate(0, raw.DType, raw.Rows, raw.Cols);
        new ReadOnlySpan<byte>((void*)raw.Data, bytes.Length).CopyTo(bytes);
        weights.PackForCpu(0);
        s_keepAlive.Add(weights);
        return weights.Matrix(0);
    }
}
