using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ModelCompiler.Runtime.Kernels;

public static partial class CpuKernels
{
    /// <summary>RMSNorm of every row: <c>y[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) * weight</c>.</summary>
    /// <param name="x"><c>[numTokens, dim]</c> input.</param>
    /// <param name="numTokens">Number of rows.</param>
    /// <param name="dim">Row width.</param>
    /// <param name="weight"><c>[dim]</c> gain.</param>
    /// <param name="eps">Added to the mean square before the square root.</param>
    /// <param name="y"><c>[numTokens, dim]</c> output; may be <paramref name="x"/>.</param>
    public static unsafe void RmsNorm(ReadOnlySpan<float> x, int numTokens, int dim, ReadOnlySpan<float> weight, float eps, Span<float> y)
    {
        // The slices are the bounds checks of the rows' pointers below.
        weight = weight.Slice(0, dim);
        x = x.Slice(0, numTokens * dim);
        y = y.Slice(0, numTokens * dim);
        fixed (float* px = x, py = y, pw = weight)
        {
            var rows = new RmsNormRows { X = px, Y = py, Weight = pw, Dim = dim, Eps = eps };
            Threading.ParallelRows.Run(ref rows, numTokens, dim);
        }
    }

    private unsafe struct RmsNormRows : Threading.IRowRange
    {
        public float* X, Y, Weight;
        public int Dim;
        public float Eps;

        public readonly void Rows(int first, int end)
        {
            var weight = new ReadOnlySpan<float>(Weight, Dim);
            for (int t = first; t < end; t++)
            {
                var row = new ReadOnlySpan<float>(X + (nint)t * Dim, Dim);
                float meanSquare = Dot(row, row) / Dim;
                float inverseRms = 1f / MathF.Sqrt(meanSquare + Eps);
                ScaleByWeight(row, inverseRms, weight, new Span<float>(Y + (nint)t * Dim, Dim));
            }
        }
    }

    /// <summary>Linear projection without bias: <c>y = x Wᵀ</c>, i.e. <c>y[t, o] = Σ_i x[t, i] w[o, i]</c>.</summary>
    /// <param name="x"><c>[numTokens, inDim]</c> input.</param>
    /// <param name="numTokens">Number of rows of x.</param>
    /// <param name="w"><c>[outDim, inDim]</c> weight (PyTorch's nn.Linear layout) in any stored type.</param>
    /// <param name="y"><c>[numTokens, outDim]</c> output; must not overlap x.</param>
    /// <param name="inDim">Input width.</param>
    /// <param name="outDim">Output width.</param>
    public static void Linear(ReadOnlySpan<float> x, int numTokens, WeightMatrix w, Span<float> y, int inDim, int outDim) =>
        Project(x, numTokens, w, y, inDim, outDim, accumulate: false);

    /// <summary>Fused <c>Linear(RmsNorm(x))</c>: normalizes into <paramref name="normalized"/>, then projects.</summary>
    /// <param name="x"><c>[numTokens, inDim]</c> input (the residual stream).</param>
    /// <param name="numTokens">Number of rows.</param>
    /// <param name="normWeight"><c>[inDim]</c> RMSNorm gain.</param>
    /// <param name="eps">RMSNorm epsilon.</param>
    /// <param name="w"><c>[outDim, inDim]</c> projection weight.</param>
    /// <param name="y"><c>[numTokens, outDim]</c> output.</param>
    /// <param name="inDim">Input width.</param>
    /// <param name="outDim">Output width.</param>
    /// <param name="normalized"><c>[numTokens, inDim]</c> scratch; holds the normalized rows afterwards.</param>
    public static void RmsNormLinear(ReadOnlySpan<float> x, int numTokens, ReadOnlySpan<float> normWeight, float eps, WeightMatrix w, Span<float> y, int inDim, int outDim, Span<float> normalized)
    {
        RmsNorm(x, numTokens, inDim, normWeight, eps, normalized);
        Linear(normalized, numTokens, w, y, inDim, outDim);
    }

    /// <summary>Projection with the residual add fused in: <c>residual += x Wᵀ</c>.</summary>
    /// <param name="x"><c>[numTokens, inDim]</c> input.</param>
    /// <param name="numTokens">Number of rows.</param>
    /// <param name="w"><c>[outDim, inDim]</c> weight.</param>
    /// <param name="residual"><c>[numTokens, outDim]</c> residual stream, updated in place; must not overlap x.</param>
    /// <param name="inDim">Input width.</param>
    /// <param name="outDim">Output width.</param>
    public static void LinearAddResidual(ReadOnlySpan<float> x, int numTokens, WeightMatrix w, Span<float> residual, int inDim, int outDim) =>
        Project(x, numTokens, w, residual, inDim, outDim, accumulate: true);

    // y (+)= x Wᵀ over the worker pool; see LinearKernel for how each weight type and token count is computed.
    private static unsafe void Project(ReadOnlySpan<float> x, int numTokens, WeightMatrix w, Span<float> y, int inDim, int outDim, bool accumulate)
    {
        if (w.Rows != outDim || w.Cols != inDim)
            throw new ArgumentException($"The weight is [{w.Rows}, {w.Cols}]; the projection needs [{outDim}, {inDim}].", nameof(w));
        // The slices are the bounds checks of everything the unchecked kernels read and write.
        x = x.Slice(0, numTokens * inDim);
        y = y.Slice(0, numTokens * outDim);
        fixed (float* px = x)
        fixed (float* py = y)
            MatMul.LinearKernel.Project(px, numTokens, w, py, inDim, outDim, accumulate);
    }

    /// <summary>y[i] = x[i] * scale * weight[i] over the length of x (the RMSNorm output step); y may be x.</summary>
    private static void ScaleByWeight(ReadOnlySpan<float> x, float scale, ReadOnlySpan<float> weight, Span<float> y)
    {
        int length = x.Length;
        weight = weight.Slice(0, length);
        y = y.Slice(0, length);
        ref float px = ref MemoryMarshal.GetReference(x);
        ref float pw = ref MemoryMarshal.GetReference(weight);
        ref float py = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var s = Vector256.Create(scale);
            for (; i <= length - 8; i += 8)
                (Vector256.LoadUnsafe(ref px, (nuint)i) * s * Vector256.LoadUnsafe(ref pw, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < length; i++) Unsafe.Add(ref py, i) = Unsafe.Add(ref px, i) * scale * Unsafe.Add(ref pw, i);
    }
}
