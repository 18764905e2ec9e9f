using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.Hosting;

/// <summary>Random f32 weights re-encoded as each dtype decode back to the f32 values within that dtype's error.</summary>
public class ConvertedWeightSourceTests
{
    [Theory]
    [InlineData(WeightDType.F32)]
    [InlineData(WeightDType.F16)]
    [InlineData(WeightDType.BF16)]
    [InlineData(WeightDType.Q8_0)]
    [InlineData(WeightDType.Q4_0)]
    public unsafe void Every_tensor_decodes_to_the_f32_source_within_the_dtype_error(WeightDType dtype)
    {
        var config = new Stories260KTestEngine().Config;
        using var reference = InMemoryWeightSource.CreateRandomLlama(config, 11);
        using var converted = new ConvertedWeightSource(InMemoryWeightSource.CreateRandomLlama(config, 11), dtype);

        Assert.Equal(reference.Tensors.Count, converted.Tensors.Count);
        Assert.Contains(WeightDTypes.Name(dtype), converted.Description);
        foreach (var expected in reference.Tensors)
        {
            Assert.True(converted.TryGetTensor(expected.Name, out var actual));
            Assert.Equal(expected.Shape, actual.Shape);
            bool blockable = expected.Shape[^1] % WeightDTypes.BlockSize(dtype) == 0;
            var expectedType = expected.Shape.Length == 2 && blockable ? dtype : WeightDType.F32;
            Assert.Equal(expectedType, actual.DType);
            Assert.Equal(WeightDTypes.SizeInBytes(expectedType, expected.NumElements), actual.SizeInBytes);
            Assert.Equal(0, actual.Data % 64);

            var want = new ReadOnlySpan<float>((void*)expected.Data, (int)expected.NumElements);
            var got = new float[want.Length];
            WeightConversion.Decode(new ReadOnlySpan<byte>((void*)actual.Data, (int)actual.SizeInBytes), actual.DType, got);
            float maxAbs = 0;
            foreach (float v in want) maxAbs = MathF.Max(maxAbs, MathF.Abs(v));
            // Bound on |decoded - f32| relative to the tensor's largest value: f16 keeps 11 significant bits,
            // bf16 8; q8_0 is off by at most half a step of amax/127, q4_0 by at most one step of amax/8
            // (the f16 scale's rounding is inside these margins).
            float tolerance = actual.DType switch
            {
                WeightDType.F32 => 0f,
                WeightDType.F16 => maxAbs / 2048,
                WeightDType.BF16 => maxAbs / 256,
                WeightDType.Q8_0 => maxAbs / 127,
                WeightDType.Q4_0 => maxAbs / 8,
                _ => throw new InvalidOperationException(),
            };
            for (int i = 0; i < want.Length; i++)
                Assert.True(MathF.Abs(got[i] - want[i]) <= tolerance, $"{expected.Name}[{i}]: {got[i]} vs {want[i]} (tolerance {tolerance})");
        }
    }

    [Fact]
    public void Matrices_with_rows_that_are_not_whole_blocks_stay_f32_and_are_listed()
    {
        var config = new Stories260KTestEngine().Config;
        using var converted = new ConvertedWeightSource(InMemoryWeightSource.CreateRandomLlama(config, 1), WeightDType.Q4_0);
        Assert.Equal(Enumerable.Range(0, 5).Select(l => $"layers.{l}.feed_forward.w2.weight"), converted.KeptAsF32);
        Assert.True(converted.TryGetTensor("layers.0.feed_forward.w1.weight", out var w1));
        Assert.Equal(WeightDType.Q4_0, w1.DType);
        Assert.True(converted.TryGetTensor("norm.weight", out var norm));
        Assert.Equal(WeightDType.F32, norm.DType);
    }
}
