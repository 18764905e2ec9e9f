using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime;

/// <summary>
/// The weights of a compiled model, by binding-table index, as f32 spans. A weight stored in f32 as one
/// checkpoint tensor points straight into the memory-mapped file; a fused or converted weight lives in
/// native memory owned here. Spans stay valid until <see cref="Dispose"/>, and the source stays open
/// as long as this object does.
/// </summary>
public sealed unsafe class ModelWeights : IDisposable
{
    private readonly nint[] _pointers;
    private readonly int[] _lengths;
    private readonly List<nint> _owned = new();
    private readonly IDisposable? _source;

    /// <summary>Creates an empty table of <paramref name="count"/> weights that keeps <paramref name="source"/> alive.</summary>
    public ModelWeights(int count, IDisposable? source)
    {
        _pointers = new nint[count];
        _lengths = new int[count];
        _source = source;
    }

    /// <summary>Number of weights.</summary>
    public int Count => _pointers.Length;

    /// <summary>The weight at <paramref name="index"/> of the binding table.</summary>
    public ReadOnlySpan<float> this[int index] => new((void*)_pointers[index], _lengths[index]);

    /// <summary>Points weight <paramref name="index"/> at memory owned by someone else (the mapped file).</summary>
    public void SetBorrowed(int index, nint data, int numElements)
    {
        _pointers[index] = data;
        _lengths[index] = numElements;
    }

    /// <summary>Allocates native memory for weight <paramref name="index"/> and returns it for filling.</summary>
    public Span<float> Allocate(int index, int numElements)
    {
        nint p = (nint)NativeMemory.AlignedAlloc((nuint)numElements * sizeof(float), 64);
        _owned.Add(p);
        _pointers[index] = p;
        _lengths[index] = numElements;
        return new Span<float>((void*)p, numElements);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var p in _owned) NativeMemory.AlignedFree((void*)p);
        _owned.Clear();
        Array.Clear(_pointers);
        Array.Clear(_lengths);
        _source?.Dispose();
    }
}
