using System;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// The CPU kernels' load-time layout of an f32, f16 or bf16 projection matrix: the panels that
/// <see cref="FloatPanel"/>'s microkernel consumes, built once instead of once per call and token block.
/// </summary>
/// <remarks>
/// <para>Panel p holds rows 32p..32p+31, k-major: element <c>i * 32 + r</c> of the panel is <c>W[32p + r, i]</c>, in the
/// stored type (f16/bf16 stay 2 bytes and are widened in registers, so the layout takes exactly the bytes of the rows
/// when the row count is a multiple of 32; a last panel with fewer rows is padded with zero weights). Panels follow
/// one another, so a thread's share of rows is one sequential stream, for prefill (every token block meets a panel
/// in L2) and for one-token decode alike (per k: one broadcast of x[k], 32 rows' weights, two FMAs).</para>
/// <para>This copy replaces the rows for the CPU's projections; <see cref="ReadRow"/> gathers a row back (the tied
/// embedding's lookups). Owned rows are freed once packed (see <c>ModelWeights.PackForCpu</c>).</para>
/// </remarks>
internal static unsafe class FloatPanelLayout
{
    /// <summary>
    /// Whether a matrix of <paramref name="dtype"/> with <paramref name="rows"/> × <paramref name="cols"/> weights is
    /// packed on this CPU: the float types with AVX-512, bf16/f16 with AVX2 and FMA, and only matrices whose one-token projection is split over the
    /// worker pool; the small ones run on the calling thread (<see cref="SmallDecode"/>) and keep their rows.
    /// </summary>
    /// <remarks>
    /// Without AVX-512, f32 matrices keep their rows: with the AVX2 panel kernels (<see cref="FloatPanel256"/>) a
    /// Llama110M f32 prefill ran 1.9× faster but its decode 15% slower end to end (Native AOT for x86-64-v3 on this
    /// project's Zen 5 machine, five alternating runs each: 77.5 against 92.3 tokens/s median), although the panel stream
    /// alone (<c>quick step f32</c> vs <c>f32-stored</c>) was as fast as the rows; until that is understood, decode
    /// speed decides, and prefill packs its panels per call instead (<see cref="FloatPanel256.PackF32"/>: the same
    /// build's f32 prefill 384 → 883 tokens/s, decode unchanged). bf16/f16 rows had no vector path on AVX2 at all, so
    /// their panels win everywhere (decode 7–9×).
    /// </remarks>
    public static bool ShouldPack(WeightDType dtype, int rows, int cols) =>
        Supports(dtype) && (CpuFeatures.UseVector512 || dtype != WeightDType.F32)
        && rows >= 1 && (long)rows * cols >= LinearKernel.ParallelThresholdMacs;

    /// <summary>Whether the CPU kernels can read a matrix of <paramref name="dtype"/> in this layout (the float types, with AVX-512 or AVX2 and FMA).</summary>
    public static bool Supports(WeightDType dtype) => CpuFeatures.UseFloatPanels && dtype is WeightDType.F32 or WeightDType.F16 or WeightDType.BF16;

    /// <summary>Whether <paramref name="matrix"/> carries float panels (its <see cref="WeightMatrix.PackedData"/> is this layout).</summary>
    public static bool IsPacked(WeightMatrix matrix) =>
        matrix.PackedData != 0 && matrix.DType is WeightDType.F32 or WeightDType.F16 or WeightDType.BF16;

    /// <summary>
    /// Whether an f16 matrix holds no infinity or NaN, which its panels' short widening (<see cref="F16Panel"/>) would
    /// read as finite values: a matrix that does keeps its rows (and the general widening). Other types: true.
    /// </summary>
    public static bool HasFiniteHalves(WeightMatrix matrix)
    {
        if (matrix.DType != WeightDType.F16) return true;
        for (int row = 0; row < matrix.Rows; row++)
        {
            var halves = new ReadOnlySpan<ushort>((byte*)matrix.Data + (long)row * matrix.RowSizeInBytes, matrix.Cols);
            int i = 0;
            var exponent = System.Runtime.Intrinsics.Vector256.Create((ushort)0x7C00);
            for (; i <= halves.Length - 16; i += 16)
                if (System.Runtime.Intrinsics.Vector256.EqualsAny(System.Runtime.Intrinsics.Vector256.Create(halves.Slice(i, 16)) & exponent, exponent)) return false;
            for (; i < halves.Length; i++)
                if ((halves[i] & 0x7C00) == 0x7C00) return false;
        }
        return true;
    }

    /// <summary>Bytes of one weight.</summary>
    public static int ElementSize(WeightDType dtype) => dtype == WeightDType.F32 ? 4 : 2;

    /// <summary>Bytes of one panel of <paramref name="cols"/> weights per row.</summary>
    public static long PanelSizeInBytes(WeightDType dtype, int cols) => (long)FloatPanel.PanelRows * cols * ElementSize(dtype);

    /// <summary>Size of the packed copy of a <paramref name="rows"/> × <paramref name="cols"/> matrix.</summary>
    public static long SizeInBytes(WeightDType dtype, int rows, int cols) =>
        (long)((rows + FloatPanel.PanelRows - 1) / FloatPanel.PanelRows) * PanelSizeInBytes(dtype, cols);

    /// <summary>Writes the packed copy of <paramref name="source"/> (rows) to <paramref name="destination"/> (<see cref="SizeInBytes"/> bytes, 64-byte aligned).</summary>
    public static void Pack(WeightMatrix source, byte* destination)
    {
        int k = source.Cols, numPanels = (source.Rows + FloatPanel.PanelRows - 1) / FloatPanel.PanelRows;
        long panelBytes = PanelSizeInBytes(source.DType, k);
        for (int p = 0; p < numPanels; p++)
        {
            int firstRow = p * FloatPanel.PanelRows, numRows = Math.Min(FloatPanel.PanelRows, source.Rows - firstRow);
            byte* rows = (byte*)source.Data + (long)firstRow * source.RowSizeInBytes;
            byte* panel = destination + p * panelBytes;
            if (source.DType == WeightDType.F32 && CpuFeatures.UseVector512)
                FloatPanel.Pack<F32Row>(rows, source.RowSizeInBytes, numRows, k, (float*)panel);
            else if (source.DType == WeightDType.F32)
                FloatPanel256.PackF32(rows, source.RowSizeInBytes, numRows, k, (float*)panel); // AVX2: the per-call packing's transposes
            else
                TransposeHalves(rows, source.RowSizeInBytes, numRows, k, (ushort*)panel);
        }
    }

    // f16/bf16: panel[i * 32 + r] = row r's element i, the bits as they are (the kernels widen them), rows numRows..31
    // zero: one element at a time, once at load.
    private static void TransposeHalves(byte* rows, nint rowBytes, int numRows, int k, ushort* panel)
    {
        for (int r = 0; r < FloatPanel.PanelRows; r++)
        {
            ushort* row = (ushort*)(rows + r * rowBytes);
            for (int i = 0; i < k; i++) panel[(nint)i * FloatPanel.PanelRows + r] = r < numRows ? row[i] : (ushort)0;
        }
    }

    /// <summary>
    /// Writes the rows of a packed matrix back in their stored type (row-major, <c>Rows × RowSizeInBytes</c> bytes):
    /// for readers that need the stored rows after they were freed (the CUDA upload from a CPU runner's weights).
    /// </summary>
    public static void Unpack(WeightMatrix matrix, Span<byte> destination)
    {
        int k = matrix.Cols, size = ElementSize(matrix.DType);
        if (destination.Length < (long)matrix.Rows * matrix.RowSizeInBytes)
            throw new ArgumentException($"The destination holds {destination.Length} bytes, not {(long)matrix.Rows * matrix.RowSizeInBytes}.", nameof(destination));
        long panelBytes = PanelSizeInBytes(matrix.DType, k);
        fixed (byte* d = destination)
        {
            for (int row = 0; row < matrix.Rows; row++)
            {
                byte* panel = (byte*)matrix.PackedData + row / FloatPanel.PanelRows * panelBytes + row % FloatPanel.PanelRows * size;
                byte* output = d + (long)row * matrix.RowSizeInBytes;
                if (size == 4) for (int i = 0; i < k; i++) ((float*)output)[i] = *(float*)(panel + (nint)i * FloatPanel.PanelRows * 4);
                else for (int i = 0; i < k; i++) ((ushort*)output)[i] = *(ushort*)(panel + (nint)i * FloatPanel.PanelRows * 2);
            }
        }
    }

    /// <summary>Widens row <paramref name="row"/> of a packed matrix to f32: <c>destination[i] = W[row, i]</c>.</summary>
    public static void ReadRow(WeightMatrix matrix, int row, Span<float> destination)
    {
        if ((uint)row >= (uint)matrix.Rows) throw new ArgumentOutOfRangeException(nameof(row), $"Row {row} is outside the matrix's {matrix.Rows} rows.");
        int k = matrix.Cols;
        if (destination.Length < k) throw new ArgumentException($"The destination holds {destination.Length} floats, not {k}.", nameof(destination));
        byte* panel = (byte*)matrix.PackedData + row / FloatPanel.PanelRows * PanelSizeInBytes(matrix.DType, k);
        int lane = row % FloatPanel.PanelRows;
        switch (matrix.DType)
        {
            case WeightDType.F32:
                for (int i = 0; i < k; i++) destination[i] = ((float*)panel)[(nint)i * FloatPanel.PanelRows + lane];
                break;
            case WeightDType.BF16:
                for (int i = 0; i < k; i++) destination[i] = HalfBits.BFloat16ToSingle(((ushort*)panel)[(nint)i * FloatPanel.PanelRows + lane]);
                break;
            default:
                for (int i = 0; i < k; i++) destination[i] = HalfBits.HalfToSingle(((ushort*)panel)[(nint)i * FloatPanel.PanelRows + lane]);
                break;
        }
    }
}
