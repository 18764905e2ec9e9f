using System;
using System.IO;
using System.IO.MemoryMappedFiles;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// A whole file memory-mapped read-only, with its base address and length. Readers parse through
/// <see cref="ByteCursor"/> over it, so every read is checked against <see cref="Length"/>.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private bool _disposed;

    private MappedFile(string path, MemoryMappedFile file, MemoryMappedViewAccessor view, long length)
    {
        Path = path;
        _file = file;
        _view = view;
        Length = length;
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        // The view may start before the requested offset (page alignment); PointerOffset corrects for it.
        Base = pointer + view.PointerOffset;
    }

    /// <summary>The path, for messages.</summary>
    public string Path { get; }
    /// <summary>Address of byte 0.</summary>
    public byte* Base { get; }
    /// <summary>File size in bytes.</summary>
    public long Length { get; }

    /// <summary>
    /// Maps <paramref name="path"/>; a missing, unreadable or shorter-than-<paramref name="minLength"/> file is a
    /// <see cref="ModelLoadException"/> that names it and <paramref name="format"/>.
    /// </summary>
    public static MappedFile Open(string path, string format, long minLength)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"weights file not found: {path}");
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"{path}: cannot open weights file ({e.Message})");
        }
        MemoryMappedFile? file = null;
        try
        {
            long length = stream.Length;
            // An empty file cannot be mapped at all; anything shorter than a header is truncated.
            if (length < Math.Max(1, minLength))
                throw new ModelLoadException($"{path}: truncated {format} file ({length} bytes, a header alone needs {minLength})");
            file = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            var view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            return new MappedFile(path, file, view, length);
        }
        catch
        {
            file?.Dispose();
            stream.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}

/// <summary>
/// A forward reader over mapped bytes that checks every read against the end of the file and names the
/// file, the item being read and the offset when it runs out: a hostile length can never read past the map.
/// </summary>
internal unsafe struct ByteCursor
{
    private readonly byte* _base;
    private readonly string _path;
    private readonly string _format;

    public ByteCursor(byte* baseAddress, long length, string path, string format)
    {
        _base = baseAddress;
        Length = length;
        _path = path;
        _format = format;
        Position = 0;
    }

    public long Length { get; }
    public long Position { get; set; }
    public readonly long Remaining => Length - Position;

    public ModelLoadException Error(string message) => new($"{_path}: {message}");

    /// <summary>Throws unless <paramref name="count"/> bytes remain.</summary>
    public readonly void Need(long count, string what)
    {
        if (count < 0 || count > Length - Position)
            throw new ModelLoadException($"{_path}: truncated {_format} file: {what} needs {(count < 0 ? "a negative number of" : count.ToString(System.Globalization.CultureInfo.InvariantCulture))} bytes at offset {Position}, but the file ends at {Length}");
    }

    public ReadOnlySpan<byte> Bytes(long count, string what)
    {
        Need(count, what);
        if (count > int.MaxValue) throw Error($"{what} of {count} bytes is too large");
        var span = new ReadOnlySpan<byte>(_base + Position, (int)count);
        Position += count;
        return span;
    }

    public byte U8(string what) => Bytes(1, what)[0];
    public ushort U16(string what) => System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2, what));
    public uint U32(string what) => System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4, what));
    public ulong U64(string what) => System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(Bytes(8, what));
    public float F32(string what) => System.Buffers.Binary.BinaryPrimitives.ReadSingleLittleEndian(Bytes(4, what));
    public double F64(string what) => System.Buffers.Binary.BinaryPrimitives.ReadDoubleLittleEndian(Bytes(8, what));
}
