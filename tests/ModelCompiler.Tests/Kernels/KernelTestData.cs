using ModelCompiler.Runtime;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>Seeded random data and the tolerance check shared by the kernel tests.</summary>
internal static class KernelTestData
{
    public static float[] RandomFloats(Random random, int count, float scale = 1f)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = (float)(random.NextDouble() * 2 - 1) * scale;
        return values;
    }

    /// <summary>Asserts |actual - expected| ≤ absolute + relative·|expected| element by element, naming the first index that fails.</summary>
    public static void AssertClose(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double relative = 1e-5, double absolute = 1e-5, string what = "")
    {
        Assert.True(actual.Length >= expected.Length, $"{what}: {actual.Length} values, expected {expected.Length}.");
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(actual[i] - expected[i]);
            if (!(error <= absolute + relative * Math.Abs(expected[i])))
                Assert.Fail($"{what}[{i}]: got {actual[i]:R}, expected {expected[i]:R} (error {error:E2}).");
        }
    }

    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double relative = 1e-5, double absolute = 1e-5, string what = "")
    {
        var asDouble = new double[expected.Length];
        for (int i = 0; i < expected.Length; i++) asDouble[i] = expected[i];
        AssertClose(asDouble, actual, relative, absolute, what);
    }

    /// <summary>Naive double-precision RoPE of one head, the test's own statement of the convention.</summary>
    public static void NaiveRotate(double[] head, int position, double theta, RopeStyle style)
    {
        int headDim = head.Length, numPairs = headDim / 2;
        for (int i = 0; i < numPairs; i++)
        {
            double angle = position / Math.Pow(theta, 2.0 * i / headDim);
            int a = style == RopeStyle.Interleaved ? 2 * i : i;
            int b = style == RopeStyle.Interleaved ? 2 * i + 1 : i + numPairs;
            double x0 = head[a], x1 = head[b];
            head[a] = x0 * Math.Cos(angle) - x1 * Math.Sin(angle);
            head[b] = x0 * Math.Sin(angle) + x1 * Math.Cos(angle);
        }
    }
}
