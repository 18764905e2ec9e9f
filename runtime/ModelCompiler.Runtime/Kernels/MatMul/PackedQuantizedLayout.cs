using System;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// The CPU kernels' load-time layout of a q8_0 or q4_0 projection matrix: rows interleaved in groups of
/// <see cref="RowsPerGroup"/> so that one 256-bit vpdpbusd multiplies 4 consecutive weights of 8 rows by the
/// same 4 activation bytes (broadcast), with no horizontal sums (the idea of llama.cpp's CPU "repack" buffers).
/// </summary>
/// <remarks>
/// <para>Group g holds rows 8g..8g+7 (a last group with fewer rows is padded with zero weights and zero scales),
/// as <c>cols / 32</c> blocks of <see cref="BlockSizeInBytes"/> bytes, one after another, so that a thread reads
/// its rows as one sequential stream. Block b of a group:</para>
/// <list type="bullet">
/// <item>16 bytes: the 8 rows' f16 scales of GGUF block b, row order (kept f16 so the bytes per weight are the
/// GGUF ones: q8_0 34 bytes and q4_0 18 bytes per row-block, as in the file).</item>
/// <item>q8_0: 8 vectors of 32 bytes, vector j = for each row r, weights 4j..4j+3 of the block plus 128 (w ^ 0x80,
/// 0..255): the unsigned operand of vpdpbusd. The product with signed activations a is then
/// <c>Σ(w + 128)·a = Σ w·a + 128·Σa</c>, corrected by starting the sum at <c>-128·Σa</c> (per activation block,
/// computed once per token by <see cref="ActivationQuantizer"/>), exactly.</item>
/// <item>q4_0: 4 vectors of 32 bytes, vector i = for each row r, GGUF bytes 4i..4i+3 of the row's block unchanged:
/// the low nibbles are weights 4i..4i+3 and the high nibbles weights 16+4i..16+4i+3, each stored as 0..15 = w + 8,
/// so <c>&amp; 0x0F</c> and <c>&gt;&gt; 4</c> give the unsigned operands of k-groups i and i + 4, corrected by
/// <c>-8·Σa</c>.</item>
/// </list>
/// <para>Only the CPU's projections read this layout; <see cref="WeightMatrix.Data"/> keeps the GGUF rows for
/// everything else (embedding gathers, export, the CUDA upload, the reference).</para>
/// </remarks>
internal static unsafe class PackedQuantizedLayout
{
    /// <summary>Rows interleaved per group: the 8 i32 lanes of a 256-bit vector.</summary>
    public const int RowsPerGroup = 8;
    /// <summary>Bytes of the 8 rows' f16 scales at the start of each block.</summary>
    public const int ScalesSizeInBytes = RowsPerGroup * sizeof(ushort);

    /// <summary>
    /// Whether the packed kernel runs on this CPU: AVX2 with AVX-VNNI (256-bit vpdpbusd; .NET 9 and 10 expose no
    /// 512-bit VNNI for AVX-512 CPUs). Elsewhere matrices stay as stored and the GGUF-layout paths run.
    /// </summary>
    public static bool IsSupported => CpuFeatures.UseInt8 && CpuFeatures.UseVnni;

    /// <summary>Whether a matrix of <paramref name="dtype"/> is packed for this CPU.</summary>
    public static bool ShouldPack(WeightDType dtype) => IsSupported && dtype is WeightDType.Q8_0 or WeightDType.Q4_0;

    /// <summary>Bytes per packed block (8 rows × 32 weights): 272 for q8_0, 144 for q4_0.</summary>
    public static int BlockSizeInBytes(WeightDType dtype) => dtype switch
    {
        WeightDType.Q8_0 => ScalesSizeInBytes + RowsPerGroup * 32,
        WeightDType.Q4_0 => ScalesSizeInBytes + RowsPerGroup * 16,
        _ => throw new ArgumentException($"{WeightDTypes.Name(dtype)} has no packed layout.", nameof(dtype)),
    };

    /// <summary>
    /// Whether every block scale of <paramref name="matrix"/> (GGUF rows of q8_0/q4_0) is finite. The packed kernels
    /// widen scales with <see cref="HalfBits.FiniteHalfToSingle"/>, which has no infinity or NaN, so a matrix with such
    /// a scale stays unpacked and takes the GGUF-layout path, which propagates them as the reference does.
    /// </summary>
    public static bool HasFiniteScales(WeightMatrix matrix)
    {
        int sourceBlockSize = matrix.DType == WeightDType.Q8_0 ? 34 : 18;
        int numBlocks = matrix.Cols / 32;
        byte* rowData = (byte*)matrix.Data;
        for (long r = 0; r < matrix.Rows; r++)
        {
            byte* row = rowData + r * matrix.RowSizeInBytes;
            for (int b = 0; b < numBlocks; b++)
                if ((*(ushort*)(row + (long)b * sourceBlockSize) & 0x7C00) == 0x7C00) return false;
        }
        return true;
    }

    /// <summary>Size of the packed copy of a <paramref name="rows"/> × <paramref name="cols"/> matrix.</summary>
    public static long SizeInBytes(WeightDType dtype, int rows, int cols) =>
        (long)((rows + RowsPerGroup - 1) / RowsPerGroup) * (cols / 32) * BlockSizeInBytes(dtype);

    /// <summary>Writes the packed copy of <paramref name="source"/> (GGUF rows) to <paramref name="destination"/> (<see cref="SizeInBytes"/> bytes).</summary>
    public static void Pack(WeightMatrix source, byte* destination)
    {
        var dtype = source.DType;
        int blockSize = BlockSizeInBytes(dtype);
        int sourceBlockSize = dtype == WeightDType.Q8_0 ? 34 : 18;
        int numBlocks = source.Cols / 32;
        int numGroups = (source.Rows + RowsPerGroup - 1) / RowsPerGroup;
        // Padding rows: weight 0 is 128 (q8_0) or the nibble 8 twice (q4_0).
        uint padding = dtype == WeightDType.Q8_0 ? 0x80808080u : 0x88888888u;
        uint flip = dtype == WeightDType.Q8_0 ? 0x80808080u : 0u;
        int numVectors = dtype == WeightDType.Q8_0 ? 8 : 4;
        byte* rowData = (byte*)source.Data;
        for (int g = 0; g < numGroups; g++)
        {
            for (int b = 0; b < numBlocks; b++)
            {
                byte* block = destination + ((long)g * numBlocks + b) * blockSize;
                for (int r = 0; r < RowsPerGroup; r++)
                {
                    int row = g * RowsPerGroup + r;
                    byte* sourceBlock = row < source.Rows ? rowData + (long)row * source.RowSizeInBytes + (long)b * sourceBlockSize : null;
                    ((ushort*)block)[r] = sourceBlock is null ? (ushort)0 : *(ushort*)sourceBlock;
                    for (int j = 0; j < numVectors; j++)
                    {
                        uint group = sourceBlock is null ? padding : *(uint*)(sourceBlock + 2 + 4 * j) ^ flip;
                        *(uint*)(block + ScalesSizeInBytes + 32 * j + 4 * r) = group;
                    }
                }
            }
        }
    }
}
