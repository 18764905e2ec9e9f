using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ModelCompiler.Runtime.Kernels;

public static partial class CpuKernels
{
    /// <summary>Copies the embedding row of every token: <c>x[t, :] = table[tokenIds[t], :]</c>.</summary>
    /// <param name="table"><c>[vocab, dim]</c> embedding matrix in any stored type.</param>
    /// <param name="tokenIds"><c>[numTokens]</c> token ids.</param>
    /// <param name="numTokens">Number of tokens.</param>
    /// <param name="x"><c>[numTokens, dim]</c> output.</param>
    /// <param name="dim">Embedding width.</param>
    public static void Embedding(WeightMatrix table, ReadOnlySpan<int> tokenIds, int numTokens, Span<float> x, int dim)
    {
        if (table.Cols != dim) throw new ArgumentException($"The embedding table is [{table.Rows}, {table.Cols}], not [vocab, {dim}].", nameof(table));
        int vocabSize = table.Rows;
        for (int t = 0; t < numTokens; t++)
        {
            int token = tokenIds[t];
            // A bad id would otherwise read a neighbouring row or throw a bare slicing error.
            if ((uint)token >= (uint)vocabSize) throw new ArgumentOutOfRangeException(nameof(tokenIds), $"Token id {token} at index {t} is outside the vocabulary of {vocabSize}.");
            ModelWeights.CopyRow(table, token, x.Slice(t * dim, dim));
        }
    }

    /// <summary>Gathers rows: <c>y[r, :] = x[rowIndices[r], :]</c> (e.g. the rows that need logits).</summary>
    /// <param name="x"><c>[numTokens, width]</c> input.</param>
    /// <param name="rowIndices"><c>[numRows]</c> row of <paramref name="x"/> for each output row.</param>
    /// <param name="numRows">Number of rows to gather.</param>
    /// <param name="y"><c>[numRows, width]</c> output. It may be <paramref name="x"/> itself when the indices increase
    /// (<c>rowIndices[r] ≥ r</c>, as the rows that need logits do): the rows are then compacted in place, each moved
    /// down before anything overwrites it. Otherwise it must not overlap <paramref name="x"/>.</param>
    /// <param name="width">Row width.</param>
    public static void GatherRows(ReadOnlySpan<float> x, ReadOnlySpan<int> rowIndices, int numRows, Span<float> y, int width)
    {
        for (int r = 0; r < numRows; r++)
            x.Slice(rowIndices[r] * width, width).CopyTo(y.Slice(r * width, width));
    }

    /// <summary><c>y = x * sigmoid(x)</c> elementwise over <paramref name="count"/> elements; y may be x.</summary>
    public static void Silu(ReadOnlySpan<float> x, Span<float> y, int count)
    {
        x = x.Slice(0, count);
        y = y.Slice(0, count);
        ref float px = ref MemoryMarshal.GetReference(x);
        ref float py = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= count - 8; i += 8)
                SiluVector(Vector256.LoadUnsafe(ref px, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < count; i++) Unsafe.Add(ref py, i) = SiluScalar(Unsafe.Add(ref px, i));
    }

    /// <summary><c>y = a * b</c> elementwise over <paramref name="count"/> elements; y may be a or b (same offset).</summary>
    public static void Mul(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y, int count)
    {
        a = a.Slice(0, count);
        b = b.Slice(0, count);
        y = y.Slice(0, count);
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        ref float py = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= count - 8; i += 8)
                (Vector256.LoadUnsafe(ref pa, (nuint)i) * Vector256.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < count; i++) Unsafe.Add(ref py, i) = Unsafe.Add(ref pa, i) * Unsafe.Add(ref pb, i);
    }

    /// <summary><c>y = a + b</c> elementwise over <paramref name="count"/> elements; y may be a or b (same offset).</summary>
    public static void Add(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y, int count)
    {
        a = a.Slice(0, count);
        b = b.Slice(0, count);
        y = y.Slice(0, count);
        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        ref float py = ref MemoryMarshal.GetReference(y);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= count - 8; i += 8)
                (Vector256.LoadUnsafe(ref pa, (nuint)i) + Vector256.LoadUnsafe(ref pb, (nuint)i)).StoreUnsafe(ref py, (nuint)i);
        }
        for (; i < count; i++) Unsafe.Add(ref py, i) = Unsafe.Add(ref pa, i) + Unsafe.Add(ref pb, i);
    }

    /// <summary>The SwiGLU gate of the MLP: <c>y[t, j] = silu(gateUp[t, j]) * gateUp[t, hidden + j]</c>.</summary>
    /// <param name="gateUp"><c>[numTokens, 2 * hidden]</c>: gate in columns <c>[0, hidden)</c>, up in <c>[hidden, 2 * hidden)</c>.</param>
    /// <param name="numTokens">Number of tokens.</param>
    /// <param name="hidden">Width of the MLP's hidden layer.</param>
    /// <param name="y"><c>[numTokens, hidden]</c> output; must not overlap <paramref name="gateUp"/> (rows have different strides).</param>
    public static unsafe void SwiGlu(ReadOnlySpan<float> gateUp, int numTokens, int hidden, Span<float> y)
    {
        // The slices are the bounds checks of the rows' pointers below.
        gateUp = gateUp.Slice(0, numTokens * 2 * hidden);
        y = y.Slice(0, numTokens * hidden);
        fixed (float* pGateUp = gateUp, py = y)
        {
            var rows = new SwiGluRows { GateUp = pGateUp, Y = py, Hidden = hidden };
            Threading.ParallelRows.Run(ref rows, numTokens, 3L * hidden);
        }
    }

    private unsafe struct SwiGluRows : Threading.IRowRange
    {
        public float* GateUp, Y;
        public int Hidden;

        public readonly void Rows(int first, int end)
        {
            int hidden = Hidden;
            for (int t = first; t < end; t++)
            {
                float* gate = GateUp + (nint)t * 2 * hidden, up = gate + hidden, output = Y + (nint)t * hidden;
                int j = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    for (; j <= hidden - 8; j += 8)
                        (SiluVector(Vector256.Load(gate + j)) * Vector256.Load(up + j)).Store(output + j);
                }
                for (; j < hidden; j++) output[j] = SiluScalar(gate[j]) * up[j];
            }
        }
    }

    // x / (1 + e^-x): for very negative x, e^-x overflows to +inf and the quotient is a correct -0.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SiluScalar(float x) => x / (1f + MathF.Exp(-x));

    // The same quotient with e^-x in f32 (CephesExp): .NET's Vector256.Exp for float computes in double, and SwiGLU with
    // it was 2–3% of a Llama110M prefill. Below −88.02 CephesExp.Exp saturates (about 1.7e38, not ∞), so those lanes
    // take −0, the scalar form's x / ∞; NaN stays NaN (the comparison is false).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SiluVector(Vector256<float> x)
    {
        var y = x / (Vector256<float>.One + CephesExp.Exp(-x));
        return Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(-88.02f)), Vector256.Create(-0f), y);
    }
}
