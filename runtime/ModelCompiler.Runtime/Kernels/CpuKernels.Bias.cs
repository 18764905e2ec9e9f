using System;
using System.Numerics;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime.Kernels;

public static partial class CpuKernels
{
    /// <summary>Adds a bias to every row: <c>y[t, :] += bias</c> (Qwen2's q/k/v projections).</summary>
    /// <param name="y"><c>[numTokens, width]</c> projection output, updated in place.</param>
    /// <param name="numTokens">Number of rows.</param>
    /// <param name="bias"><c>[width]</c> bias.</param>
    /// <param name="width">Row width.</param>
    public static void AddBias(Span<float> y, int numTokens, ReadOnlySpan<float> bias, int width)
    {
        bias = bias.Slice(0, width);
        var biasVectors = MemoryMarshal.Cast<float, Vector<float>>(bias);
        int vectorized = biasVectors.Length * Vector<float>.Count;
        for (int t = 0; t < numTokens; t++)
        {
            var row = y.Slice(t * width, width);
            var rowVectors = MemoryMarshal.Cast<float, Vector<float>>(row);
            for (int i = 0; i < biasVectors.Length; i++) rowVectors[i] += biasVectors[i];
            for (int i = vectorized; i < width; i++) row[i] += bias[i];
        }
    }
}
