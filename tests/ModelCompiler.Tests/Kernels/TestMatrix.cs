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

    /// <summary>An f32 matrix of <c>data.Length / cols</c> rows.</summary>
    public static unsafe WeightMatrix F32(float[] data, int cols)
    {
        var pinned = GC.AllocateUninitializedArray<float>(data.Length, pinned: true);
        data.CopyTo(pinned);
        s_keepAlive.Add(pinned);
        return new WeightMatrix((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned)), WeightDType.F32, data.Length / cols, cols);
    }
}
