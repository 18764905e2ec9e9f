using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime;

/// <summary>
/// The weights of a compiled model, by binding-table index. Matrices keep their stored type
/// (<see cref="Matrix"/>); vectors (norm weights) are always f32 (<see cref="this[int]"/>). A weight that is
/// one checkpoint tensor in a type the kernels read points straight into the memory-mapped file; a fused
/// or converted weight lives in native memory owned here. Everything stays valid until
/// <see cref="Dispose"/>, and the source stays open as long as this object does.
/// </summary>
public sealed unsafe class ModelWeights : IDisposable
{
    private readonly nint[] _pointers;
    private readonly WeightDType[] _dtypes;
    private readonly int[] _rows;
    private readonly int[] _cols;
    private readonly nint[] _packed;
    private readonly List<nint> _owned = new();
    private readonly IDisposable? _source;

    /// <summary>Creates an empty table of <paramref name="count"/> weights that keeps <paramref name="source"/> alive.</summary>
    public ModelWeights(int count, IDisposable? source)
    {
        _pointers = new nint[count];
        _packed = new nint[count];
        _dtypes = new WeightDType[count];
        _rows = new int[count];
        _cols = new int[count];
        _source = source;
    }

    /// <summary>Number of weights.</summary>
    public int Count => _pointers.Length;

    /// <summary>The f32 weight at <paramref name="index"/> (a vector, or an f32 matrix flattened).</summary>
    public ReadOnlySpan<float> this[int index]
    {
        get
        {
            if (_dtypes[index] != WeightDType.F32)
                throw new InvalidOperationException($"Weight {index} is {WeightDTypes.Name(_dtypes[index])}; read it with Matrix({index}).");
            return new((void*)_pointers[index], checked(_rows[index] * _cols[index]));
        }
    }

    /// <summary>The weight at <paramref name="index"/> as a matrix in its stored type.</summary>
    public WeightMatrix Matrix(int index) => new(_pointers[index], _dtypes[index], _rows[index], _cols[index], _packed[index]);

    /// <summary>The stored type of weight <paramref name="index"/>.</summary>
    public WeightDType DType(int index) => _dtypes[index];

    /// <summary>Points weight <paramref name="index"/> (<paramref name="rows"/> × <paramref name="cols"/>; rows = 1 for a vector) at memory owned by someone else (the mapped file).</summary>
    public void SetBorrowed(int index, nint data, WeightDType dtype, int rows, int cols)
    {
        _pointers[index] = data;
        _packed[index] = 0;
        _dtypes[index] = dtype;
        _rows[index] = rows;
        _cols[index] = cols;
    }

    /// <summary>Allocates 64-byte-aligned native memory (on huge pages when large: <see cref="Interop.LargePages"/>) for weight <paramref name="index"/> and returns its bytes for filling.</summary>
    public Span<byte> Allocate(int index, WeightDType dtype, int rows, int cols)
    {
        long size = WeightDTypes.SizeInBytes(dtype, (long)rows * cols);
        nint p = (nint)Interop.LargePages.Allocate((nuint)size);
        _owned.Add(p);
        SetBorrowed(index, p, dtype, rows, cols);
        return new Span<byte>((void*)p, checked((int)size));
    }

    /// <summary>
    /// Adds to the matrix at <paramref name="index"/> a copy in the CPU projections' packed layout
    /// (<see cref="WeightMatrix.PackedData"/>) when its type has one on this CPU; returns whether it did.
    /// <list type="bullet">
    /// <item>q8_0/q4_0 with AVX-VNNI (<c>Kernels.MatMul.PackedQuantizedLayout</c>), unless a block scale is infinite or NaN
    /// (a damaged or adversarial file keeps the matrix on the GGUF-layout path): the stored rows stay as they are
    /// (the GGUF-layout paths, export and uploads read them), so this costs the matrix's size again in memory.</item>
    /// <item>f32/f16/bf16 with AVX-512, matrices large enough to be split over the worker pool
    /// (<c>Kernels.MatMul.FloatPanelLayout</c>): the panels replace the rows for every CPU projection, so rows this
    /// object owns (fused or converted weights) are freed and <see cref="WeightMatrix.Data"/> becomes 0; borrowed rows
    /// (the mapped file, a source's memory) are no longer read. <see cref="CopyRow(int, int, Span{float})"/> reads a row either way.</item>
    /// </list>
    /// A weight over the same rows as one already packed (a tied embedding and LM head) shares its copy. A mapped file's original pages are only read once here and stay clean page cache. Not thread-safe: call it
    /// while loading, before any forward pass.
    /// </summary>
    public bool PackForCpu(int index) => PackForCpu(index, floatsOfAnySize: false);

    /// <summary><see cref="PackForCpu(int)"/>; with <paramref name="floatsOfAnySize"/> also float matrices too small to be packed by default (tests of the layout).</summary>
    internal bool PackForCpu(int index, bool floatsOfAnySize)
    {
        var matrix = Matrix(index);
        if (_packed[index] != 0 || _rows[index] < 1) return false;
        // Another weight over the same rows (a tied embedding's lookup table and LM head) shares its packed copy.
        for (int other = 0; other < Count; other++)
        {
            if (other == index || _packed[other] == 0 || _pointers[other] != _pointers[index] || _pointers[index] == 0) continue;
            if (_dtypes[other] != _dtypes[index] || _rows[other] != _rows[index] || _cols[other] != _cols[index]) continue;
            _packed[index] = _packed[other];
            return true;
        }
        if (Kernels.MatMul.PackedQuantizedLayout.ShouldPack(matrix.DType))
        {
            // A scale of infinity or NaN (a damaged or adversarial file) keeps the matrix on the GGUF-layout path.
            if (!Kernels.MatMul.PackedQuantizedLayout.HasFiniteScales(matrix)) return false;
            long size = Kernels.MatMul.PackedQuantizedLayout.SizeInBytes(matrix.DType, matrix.Rows, matrix.Cols);
            nint p = (nint)Interop.LargePages.Allocate((nuint)size);
            _owned.Add(p);
            Kernels.MatMul.PackedQuantizedLayout.Pack(matrix, (byte*)p);
            _packed[index] = p;
            return true;
        }
        if (floatsOfAnySize ? Kernels.MatMul.FloatPanelLayout.Supports(matrix.DType) : Kernels.MatMul.FloatPanelLayout.ShouldPack(matrix.DType, matrix.Rows, matrix.Cols))
        {
            // An f16 infinity or NaN (a damaged file, or a model that overflowed f16) keeps the rows and the general widening.
            if (!Kernels.MatMul.FloatPanelLayout.HasFiniteHalves(matrix)) return false;
            long size = Kernels.MatMul.FloatPanelLayout.SizeInBytes(matrix.DType, matrix.Rows, matrix.Cols);
            nint p = (nint)Interop.LargePages.Allocate((nuint)size);
            _owned.Add(p);
            Kernels.MatMul.FloatPanelLayout.Pack(matrix, (byte*)p);
            _packed[index] = p;
            // One resident copy: rows we own are freed (an index's owned rows are never shared with another index).
            int owned = _owned.IndexOf(_pointers[index]);
            if (owned >= 0)
            {
                Interop.LargePages.Free((void*)_pointers[index]);
                _owned.RemoveAt(owned);
                _pointers[index] = 0;
            }
            return true;
        }
        return false;
    }

    /// <summary>
    /// Stops pointing at the borrowed rows of a matrix that float panels replaced (<see cref="PackForCpu(int)"/>), so that
    /// their owner may free them; <see cref="WeightMatrix.Data"/> becomes 0.
    /// </summary>
    public void ForgetRows(int index)
    {
        if (!Kernels.MatMul.FloatPanelLayout.IsPacked(Matrix(index)))
            throw new InvalidOperationException($"Weight {index} has no float panels; its rows are still read.");
        if (_owned.Contains(_pointers[index])) throw new InvalidOperationException($"Weight {index}'s rows are owned here, not borrowed.");
        _pointers[index] = 0;
    }

    /// <summary>
    /// Widens row <paramref name="row"/> of the matrix at <paramref name="index"/> to f32, from its stored rows or, for a
    /// matrix whose rows were replaced by float panels (<see cref="PackForCpu(int)"/>), from the panels.
    /// </summary>
    public void CopyRow(int index, int row, Span<float> destination) => CopyRow(Matrix(index), row, destination);

    /// <summary>Widens row <paramref name="row"/> of <paramref name="matrix"/> to f32 (see <see cref="CopyRow(int, int, Span{float})"/>).</summary>
    public static void CopyRow(WeightMatrix matrix, int row, Span<float> destination)
    {
        if (Kernels.MatMul.FloatPanelLayout.IsPacked(matrix))
            Kernels.MatMul.FloatPanelLayout.ReadRow(matrix, row, destination);
        else
            Quantization.WeightConversion.Decode(matrix.Row(row), matrix.DType, destination.Slice(0, matrix.Cols));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var p in _owned) NativeMemory.AlignedFree((void*)p);
        _owned.Clear();
        Array.Clear(_pointers);
        Array.Clear(_packed);
        _source?.Dispose();
    }
}
