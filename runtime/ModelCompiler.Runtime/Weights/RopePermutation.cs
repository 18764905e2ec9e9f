using System;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// Reorders the rows of a q or k projection between the two rotary conventions. Within each head of
/// <c>headDim</c> rows, Meta's interleaved layout rotates the pair (2i, 2i+1) where Hugging Face's half layout
/// rotates (i, i + headDim/2); llama.cpp's <c>convert_hf_to_gguf.py permute</c> maps half to interleaved
/// (<c>w.reshape(n_head, 2, headDim/2, cols).swapaxes(1, 2)</c>), so interleaved row 2i+s is half row
/// s·headDim/2 + i. Rows are moved whole, so this works for every stored type, quantized included.
/// </summary>
public static class RopePermutation
{
    /// <summary>
    /// The source row that destination row <paramref name="row"/> comes from when converting a projection whose heads are
    /// <paramref name="headDim"/> rows each from <paramref name="from"/> to <paramref name="to"/>.
    /// </summary>
    public static int SourceRow(int row, int headDim, RopeStyle from, RopeStyle to)
    {
        if (from == to) return row;
        int head = row / headDim, r = row % headDim, half = headDim / 2;
        int source = to == RopeStyle.Interleaved
            ? (r % 2) * half + r / 2          // half → interleaved: dest 2i+s ← src s·half+i
            : 2 * (r % half) + r / half;      // interleaved → half: dest s·half+i ← src 2i+s
        return head * headDim + source;
    }

    /// <summary>
    /// Copies <paramref name="source"/> (<paramref name="numRows"/> rows of <paramref name="rowSizeInBytes"/>, whole heads)
    /// into <paramref name="destination"/> with its rows reordered from <paramref name="from"/> to <paramref name="to"/>.
    /// </summary>
    public static void PermuteRows(ReadOnlySpan<byte> source, Span<byte> destination, int numRows, int rowSizeInBytes, int numHeads, RopeStyle from, RopeStyle to)
    {
        if (numHeads <= 0 || numRows % numHeads != 0 || (numRows / numHeads) % 2 != 0)
            throw new ArgumentException($"{numRows} rows are not {numHeads} heads of an even width.", nameof(numRows));
        int headDim = numRows / numHeads;
        for (int row = 0; row < numRows; row++)
        {
            int from_ = SourceRow(row, headDim, from, to);
            source.Slice(from_ * rowSizeInBytes, rowSizeInBytes).CopyTo(destination.Slice(row * rowSizeInBytes, rowSizeInBytes));
        }
    }
}
