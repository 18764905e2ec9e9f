using System;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// Per-thread native scratch, 64-byte aligned, grown on demand and never shrunk: after the first call at the
/// largest shape no kernel allocates. Owned by its thread; a worker may read the caller's scratch during a run
/// (the caller waits for the run to end before it reuses it).
/// </summary>
internal static unsafe class Scratch
{
    [ThreadStatic] private static byte* t_weights;
    [ThreadStatic] private static nint t_weightsSize;
    [ThreadStatic] private static byte* t_activations;
    [ThreadStatic] private static nint t_activationsSize;

    /// <summary>Room for dequantized weight rows on this thread.</summary>
    public static float* WeightRows(int numFloats) => (float*)Ensure(ref t_weights, ref t_weightsSize, (nint)numFloats * sizeof(float));

    /// <summary>Room for quantized activations on this thread.</summary>
    public static byte* Activations(nint sizeInBytes) => Ensure(ref t_activations, ref t_activationsSize, sizeInBytes);

    private static byte* Ensure(ref byte* buffer, ref nint size, nint needed)
    {
        if (needed <= size) return buffer;
        nint grown = Math.Max(needed, size * 2);
        NativeMemory.AlignedFree(buffer);
        buffer = (byte*)NativeMemory.AlignedAlloc((nuint)grown, 64);
        size = grown;
        return buffer;
    }
}
