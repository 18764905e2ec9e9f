using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Tests.Kernels;

/// <summary>Wraps test float arrays as <see cref="WeightMatrix"/> views over pinned copies.</summary>
internal static class TestMatrix
{
    // Pinned-object-heap copies never move; holding them here keeps the pointers valid for the test run.
    private static readonly ConcurrentBag<float[]> s_keepAlive = new();
    private static readonly ConcurrentBag<byte[]> s_keepAliveBytes = new();

    /// <summary>An f32 matrix of <c>data.Length / cols</c> rows.</summary>
    public static unsafe WeightMatrix F32(float[] data, int cols)
    {
        var pinned = GC.AllocateUninitializedArray<float>(data.Length, pinned: true);
        data.CopyTo(pinned);
        s_keepAlive.Add(pinned);
        return new WeightMatrix((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned)), WeightDType.F32, data.Length / cols, cols);
    }

    /// <summary>
    /// <paramref name="data"/> (<c>[rows, cols]</c>) encoded as <paramref name="dtype"/> with the reference
    /// quantizer; <paramref name="decoded"/> receives what the stored weights decode to, the values a kernel
    /// must multiply by.
    /// </summary>
    public static unsafe WeightMatrix Encoded(float[] data, int cols, WeightDType dtype, out float[] decoded)
    {
        int rows = data.Length / cols;
        int rowBytes = (int)WeightDTypes.SizeInBytes(dtype, cols);
        var pinned = GC.AllocateUninitializedArray<byte>(rows * rowBytes, pinned: true);
        decoded = new float[data.Length];
        for (int r = 0; r < rows; r++)
        {
            ModelCompiler.Runtime.Quantization.WeightConversion.Encode(data.AsSpan(r * cols, cols), dtype, pinned.AsSpan(r * rowBytes, rowBytes));
            ModelCompiler.Runtime.Quantization.WeightConversion.Decode(pinned.AsSpan(r * rowBytes, rowBytes), dtype, decoded.AsSpan(r * cols, cols));
        }
        s_keepAliveBytes.Add(pinned);
        return new WeightMatrix((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned)), dtype, rows, cols);
    }
}
