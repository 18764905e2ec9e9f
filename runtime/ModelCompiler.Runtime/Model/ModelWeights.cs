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
    /// (<see cref="WeightMatrix.PackedData"/>) when its type has one on this CPU (q8_0/q4_0 with AVX-VNNI); returns
    /// whether it did (not for a matrix with a non-finite block scale). The stored rows stay as they are (embedding gathers, export and uploads read them), so
    /// this costs the matrix's size again in memory; a mapped file's original pages are only read once and stay
    /// clean page cache. Not thread-safe: call it while loading, before any forward pass.
    /// </summary>
    public bool PackForCpu(int index)
    {
        var matrix = Matrix(index);
        if (_packed[index] != 0 || _rows[index] < 1 || !Kernels.MatMul.PackedQuantizedLayout.ShouldPack(matrix.DType)) return false;
        // A scale of infinity or NaN (a damaged or adversarial file) keeps the matrix on the GGUF-layout path.
        if (!Kernels.MatMul.PackedQuantizedLayout.HasFiniteScales(matrix)) return false;
        long size = Kernels.MatMul.PackedQuantizedLayout.SizeInBytes(matrix.DType, matrix.Rows, matrix.Cols);
        nint p = (nint)Interop.LargePages.Allocate((nuint)size);
        _owned.Add(p);
        Kernels.MatMul.PackedQuantizedLayout.Pack(matrix, (byte*)p);
        _packed[index] = p;
        return true;
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
