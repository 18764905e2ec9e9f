using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace ModelCompiler.Runtime.Weights.Gguf;

/// <summary>
/// Writes a GGUF version 3 file (little-endian): header, metadata, tensor table, then each tensor's bytes at
/// an offset aligned to <see cref="Alignment"/> from the start of the aligned data section, as llama.cpp's
/// <c>gguf_write_to_file</c> lays it out. Tensors are given in ggml layout: shape outermost first here, written
/// as <c>ne[]</c> innermost first; data row-major in the stored type's block layout.
/// </summary>
public sealed class GgufWriter
{
    private readonly List<(string Key, GgufValueType Type, Action<BinaryWriter> Write)> _metadata = new();
    private readonly List<(string Name, uint GgmlType, long[] Shape, byte[] Data)> _tensors = new();
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);

    /// <summary>Creates a writer; <paramref name="alignment"/> (a power of two) is recorded as <c>general.alignment</c> when not 32.</summary>
    public GgufWriter(uint alignment = GgufFile.DefaultAlignment)
    {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(alignment), "The alignment must be a power of two.");
        Alignment = alignment;
        if (alignment != GgufFile.DefaultAlignment) AddUInt32("general.alignment", alignment);
    }

    /// <summary>Data alignment in bytes.</summary>
    public uint Alignment { get; }

    /// <summary>Adds a uint32 value.</summary>
    public void AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, w => w.Write(value));
    /// <summary>Adds an int32 value.</summary>
    public void AddInt32(string key, int value) => Add(key, GgufValueType.Int32, w => w.Write(value));
    /// <summary>Adds a uint64 value.</summary>
    public void AddUInt64(string key, ulong value) => Add(key, GgufValueType.UInt64, w => w.Write(value));
    /// <summary>Adds a float32 value.</summary>
    public void AddFloat32(string key, float value) => Add(key, GgufValueType.Float32, w => w.Write(value));
    /// <summary>Adds a bool value.</summary>
    public void AddBool(string key, bool value) => Add(key, GgufValueType.Bool, w => w.Write((byte)(value ? 1 : 0)));
    /// <summary>Adds a string value.</summary>
    public void AddString(string key, string value) => Add(key, GgufValueType.String, w => WriteString(w, value));

    /// <summary>Adds an array of strings.</summary>
    public void AddStringArray(string key, IReadOnlyList<string> values) => Add(key, GgufValueType.Array, w =>
    {
        w.Write((uint)GgufValueType.String);
        w.Write((ulong)values.Count);
        foreach (var v in values) WriteString(w, v);
    });

    /// <summary>Adds an array of float32 values.</summary>
    public void AddFloat32Array(string key, IReadOnlyList<float> values) => Add(key, GgufValueType.Array, w =>
    {
        w.Write((uint)GgufValueType.Float32);
        w.Write((ulong)values.Count);
        foreach (var v in values) w.Write(v);
    });

    /// <summary>Adds an array of int32 values.</summary>
    public void AddInt32Array(string key, IReadOnlyList<int> values) => Add(key, GgufValueType.Array, w =>
    {
        w.Write((uint)GgufValueType.Int32);
        w.Write((ulong)values.Count);
        foreach (var v in values) w.Write(v);
    });

    /// <summary>Adds a tensor: its llama.cpp name, stored type, shape outermost first and bytes (checked against the shape).</summary>
    public void AddTensor(string name, WeightDType dtype, long[] shape, byte[] data)
    {
        if (shape.Length is 0 or > 4) throw new ArgumentException("GGUF tensors have 1 to 4 dimensions.", nameof(shape));
        long numElements = 1;
        foreach (var d in shape) numElements = checked(numElements * d);
        long expected = WeightDTypes.SizeInBytes(dtype, numElements);
        if (WeightDTypes.IsBlockQuantized(dtype) && shape[^1] % WeightDTypes.BlockSize(dtype) != 0)
            throw new ArgumentException($"Tensor '{name}' rows of {shape[^1]} are not whole {WeightDTypes.Name(dtype)} blocks.", nameof(shape));
        if (data.LongLength != expected) throw new ArgumentException($"Tensor '{name}' needs {expected} bytes, got {data.LongLength}.", nameof(data));
        foreach (var t in _tensors) if (t.Name == name) throw new ArgumentException($"Tensor '{name}' added twice.", nameof(name));
        _tensors.Add((name, GgmlTypes.FromWeightDType(dtype), (long[])shape.Clone(), data));
    }

    /// <summary>Writes the file to <paramref name="path"/> (replacing it).</summary>
    public void Write(string path)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        Write(stream);
    }

    /// <summary>Writes the file to <paramref name="stream"/> from its current position.</summary>
    public void Write(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write("GGUF"u8);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, type, write) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)type);
            write(w);
        }

        long offset = 0;
        var offsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            var (name, type, shape, data) = _tensors[i];
            WriteString(w, name);
            w.Write((uint)shape.Length);
            for (int d = shape.Length - 1; d >= 0; d--) w.Write((ulong)shape[d]); // ne[0] is the innermost
            w.Write(type);
            w.Write((ulong)offset);
            offsets[i] = offset;
            offset = AlignUp(offset + data.LongLength);
        }

        w.Flush();
        long start = stream.Position;
        Pad(w, AlignUp(start) - start);
        for (int i = 0; i < _tensors.Count; i++)
        {
            var data = _tensors[i].Data;
            w.Write(data);
            long end = offsets[i] + data.LongLength;
            // Pad every tensor, the last too, as llama.cpp does; readers only need the padding between tensors.
            Pad(w, AlignUp(end) - end);
        }
    }

    private void Add(string key, GgufValueType type, Action<BinaryWriter> write)
    {
        if (!_keys.Add(key)) throw new ArgumentException($"Metadata key '{key}' added twice.", nameof(key));
        _metadata.Add((key, type, write));
    }

    private long AlignUp(long value) => (value + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w, long count)
    {
        for (long i = 0; i < count; i++) w.Write((byte)0);
    }

    private static void WriteString(BinaryWriter w, string value)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
