using System;
using System.Runtime.Intrinsics;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Runtime.Kernels;

public static partial class CpuKernels
{
    // Bounds the stackalloc'd angle tables (two floats and one double per pair); no model comes close.
    private const int MaxRopeHeadDim = 1024;

    /// <summary>
    /// Rotary position embedding, in place. For each packed token t (<c>t &lt; batch.NumTokens</c>) rotates the
    /// <paramref name="numHeads"/> heads stored at <c>rows[t * rowStride + columnOffset ...]</c> by the angles of
    /// position <c>batch.Positions[t]</c>: pair i (of headDim/2) turns by <c>position * theta^(-2i/headDim)</c>.
    /// </summary>
    /// <param name="rows"><c>[numTokens, rowStride]</c> rows holding <c>[numHeads, headDim]</c> at <paramref name="columnOffset"/>.</param>
    /// <param name="rowStride">Floats between consecutive tokens' rows.</param>
    /// <param name="columnOffset">Column of the first head's first element.</param>
    /// <param name="numHeads">Number of heads to rotate per token.</param>
    /// <param name="headDim">Head width (even).</param>
    /// <param name="batch">Supplies the token count and each token's position.</param>
    /// <param name="theta">Rotary base (10000 for Llama 2).</param>
    /// <param name="style">Which elements form the rotated pairs.</param>
    public static void Rope(Span<float> rows, int rowStride, int columnOffset, int numHeads, int headDim, ForwardBatch batch, float theta, RopeStyle style)
    {
        CheckRopeHeadDim(headDim);
        var table = RopeTable.For(theta, headDim, MaxPosition(batch));
        for (int t = 0; t < batch.NumTokens; t++)
        {
            int position = batch.Positions[t];
            RotateHeads(rows.Slice(t * rowStride + columnOffset, numHeads * headDim), numHeads, headDim, table.Cos(position), table.Sin(position), style);
        }
    }

    /// <summary>The largest position of the batch's tokens (0 for an empty batch); a negative one is an error.</summary>
    private static int MaxPosition(ForwardBatch batch)
    {
        int max = 0;
        for (int t = 0; t < batch.NumTokens; t++)
        {
            int position = batch.Positions[t];
            if (position < 0) throw new ArgumentOutOfRangeException(nameof(batch), position, $"Token {t} has a negative position.");
            max = Math.Max(max, position);
        }
        return max;
    }

    private static void CheckRopeHeadDim(int headDim)
    {
        if (headDim <= 0 || headDim % 2 != 0 || headDim > MaxRopeHeadDim)
            throw new ArgumentOutOfRangeException(nameof(headDim), $"RoPE needs an even head width of at most {MaxRopeHeadDim}; got {headDim}.");
    }

    /// <summary>theta^(-2i/headDim) for each pair i, in double so that large positions keep their angle exact.</summary>
    internal static void RopeInverseFrequencies(float theta, int headDim, Span<double> inverseFrequencies)
    {
        for (int i = 0; i < inverseFrequencies.Length; i++)
            inverseFrequencies[i] = Math.Pow(theta, -2.0 * i / headDim);
    }

    /// <summary>cos and sin of position * inverseFrequency[i]; the product is formed in double (the f32 product
    /// loses about 1e-5 radians at position 500) and only the results are rounded to f32.</summary>
    internal static void RopeAngles(int position, ReadOnlySpan<double> inverseFrequencies, Span<float> cos, Span<float> sin)
    {
        for (int i = 0; i < inverseFrequencies.Length; i++)
        {
            (double s, double c) = Math.SinCos(position * inverseFrequencies[i]);
            cos[i] = (float)c;
            sin[i] = (float)s;
        }
    }

    /// <summary>
    /// Rotates <c>[numHeads, headDim]</c> heads by one token's angles. The vector forms compute each element with the
    /// scalar loop's operations (two rounded products, one rounded sum), so the result is the same bit for bit.
    /// </summary>
    private static unsafe void RotateHeads(Span<float> heads, int numHeads, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, RopeStyle style)
    {
        int numPairs = headDim / 2;
        heads = heads.Slice(0, numHeads * headDim);
        cos = cos.Slice(0, numPairs);
        sin = sin.Slice(0, numPairs);
        if (Vector256.IsHardwareAccelerated && numPairs % (style == RopeStyle.Interleaved ? 4 : 8) == 0)
        {
            fixed (float* pHeads = heads, pCos = cos, pSin = sin)
            {
                if (style == RopeStyle.Interleaved) RotateInterleaved(pHeads, numHeads, numPairs, pCos, pSin);
                else RotateHalves(pHeads, numHeads, numPairs, pCos, pSin);
            }
            return;
        }
        for (int h = 0; h < numHeads; h++)
        {
            var head = heads.Slice(h * headDim, headDim);
            if (style == RopeStyle.Interleaved)
            {
                for (int i = 0; i < numPairs; i++)
                {
                    float x0 = head[2 * i], x1 = head[2 * i + 1];
                    head[2 * i] = x0 * cos[i] - x1 * sin[i];
                    head[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
                }
            }
            else
            {
                for (int i = 0; i < numPairs; i++)
                {
                    float x0 = head[i], x1 = head[i + numPairs];
                    head[i] = x0 * cos[i] - x1 * sin[i];
                    head[i + numPairs] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }

    // Adjacent pairs, four per vector: x = (a0 b0 a1 b1 ...), the angles' cos and sin each repeated for a pair;
    // x·cos + swap(x)·(−sin, sin) gives a·c − b·s in the even lanes and b·c + a·s in the odd ones. numPairs % 4 == 0.
    private static unsafe void RotateInterleaved(float* heads, int numHeads, int numPairs, float* cos, float* sin)
    {
        var repeatPairs = Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3);
        var swapPairs = Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6);
        var alternateSign = Vector256.Create(-1f, 1f, -1f, 1f, -1f, 1f, -1f, 1f);
        for (int i = 0; i < numPairs; i += 4)
        {
            var c = Vector256.Shuffle(Vector256.Create(Vector128.Load(cos + i), Vector128<float>.Zero), repeatPairs);
            var s = Vector256.Shuffle(Vector256.Create(Vector128.Load(sin + i), Vector128<float>.Zero), repeatPairs) * alternateSign;
            for (int h = 0; h < numHeads; h++)
            {
                float* p = heads + h * 2 * numPairs + 2 * i;
                var x = Vector256.Load(p);
                (x * c + Vector256.Shuffle(x, swapPairs) * s).Store(p);
            }
        }
    }

    // Halves: pair i is (x[i], x[i + numPairs]), eight pairs per vector. numPairs % 8 == 0.
    private static unsafe void RotateHalves(float* heads, int numHeads, int numPairs, float* cos, float* sin)
    {
        for (int i = 0; i < numPairs; i += 8)
        {
            var c = Vector256.Load(cos + i);
            var s = Vector256.Load(sin + i);
            for (int h = 0; h < numHeads; h++)
            {
                float* p = heads + h * 2 * numPairs + i;
                var x0 = Vector256.Load(p);
                var x1 = Vector256.Load(p + numPairs);
                (x0 * c - x1 * s).Store(p);
                (x0 * s + x1 * c).Store(p + numPairs);
            }
        }
    }
}
