using System.Buffers.Binary;
using System.Text;

namespace ModelCompiler.Tests.Formats;

/// <summary>
/// Writes GGUF and safetensors bytes field by field, straight from the published layouts, so tests can make
/// well-formed and deliberately malformed files without the writer under test.
/// </summary>
internal sealed class RawFileBuilder
{
    private readonly MemoryStream _bytes = new();

    public long Length => _bytes.Length;
    public RawFileBuilder U8(byte v) { _bytes.WriteByte(v); return this; }
    public RawFileBuilder U32(uint v) { Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); _bytes.Write(b); return this; }
    public RawFileBuilder U64(ulong v) { Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); _bytes.Write(b); return this; }
    public RawFileBuilder F32(float v) { Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteSingleLittleEndian(b, v); _bytes.Write(b); return this; }
    public RawFileBuilder Raw(ReadOnlySpan<byte> v) { _bytes.Write(v); return this; }
    public RawFileBuilder Str(string s) { var b = Encoding.UTF8.GetBytes(s); U64((ulong)b.Length); return Raw(b); }
    public RawFileBuilder PadTo(long alignment) { while (_bytes.Length % alignment != 0) _bytes.WriteByte(0); return this; }
    public byte[] ToArray() => _bytes.ToArray();

    /// <summary>GGUF header: magic, version, tensor count, KV count.</summary>
    public RawFileBuilder GgufHeader(uint version, ulong numTensors, ulong numKv) => Raw("GGUF"u8).U32(version).U64(numTensors).U64(numKv);

    /// <summary>A tensor info: name, dims (ne[0] first), type, offset.</summary>
    public RawFileBuilder TensorInfo(string name, ulong[] ne, uint type, ulong offset)
    {
        Str(name).U32((uint)ne.Length);
        foreach (var n in ne) U64(n);
        return U32(type).U64(offset);
    }

    /// <summary>
    /// A small valid GGUF: one f32 tensor "norm" [4] and one f32 matrix "m" [2, 4] (ne = [4, 2]), no metadata,
    /// alignment 32. Returns the bytes.
    /// </summary>
    public static byte[] SmallGguf()
    {
        var b = new RawFileBuilder().GgufHeader(3, 2, 0)
            .TensorInfo("output_norm.weight", [4], 0, 0)
            .TensorInfo("token_embd.weight", [4, 2], 0, 32)
            .PadTo(32);
        for (int i = 0; i < 4; i++) b.F32(i + 1);
        b.PadTo(32);
        for (int i = 0; i < 8; i++) b.F32(10 + i);
        return b.ToArray();
    }

    /// <summary>A safetensors file: header length, the JSON text, then the data bytes.</summary>
    public static byte[] Safetensors(string headerJson, byte[] data)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        return new RawFileBuilder().U64((ulong)header.Length).Raw(header).Raw(data).ToArray();
    }
}

/// <summary>A temporary file deleted on dispose.</summary>
internal sealed class TempFile : IDisposable
{
    public TempFile(string extension = ".bin") { Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"mc-formats-{Guid.NewGuid():N}{extension}"); }
    public TempFile(byte[] contents, string extension = ".bin") : this(extension) { File.WriteAllBytes(Path, contents); }
    public string Path { get; }
    public void Dispose() { try { File.Delete(Path); } catch (IOException) { } }
}
