using System.Buffers.Binary;
using System.Text;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;
using ModelCompiler.Runtime.Weights.Safetensors;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.Formats;

/// <summary>GGUF reading (metadata, names, shapes, checks against a description) and writing (byte layout by the spec).</summary>
public class GgufTests
{
    private static ModelConfig Stories => new Stories260KTestEngine().Config;

    [Fact]
    public void Writer_output_matches_the_published_layout_decoded_by_hand()
    {
        var writer = new GgufWriter();
        writer.AddString("general.architecture", "llama");
        writer.AddUInt32("llama.block_count", 5);
        writer.AddTensor("output_norm.weight", WeightDType.F32, [3], new byte[12]);
        writer.AddTensor("token_embd.weight", WeightDType.Q8_0, [2, 32], new byte[68]);
        var stream = new MemoryStream();
        writer.Write(stream);
        var b = stream.ToArray();

        // gguf.md: magic, u32 version, u64 tensor count, u64 KV count, then KVs as (u64 len, key, u32 type, value).
        Assert.Equal("GGUF", Encoding.ASCII.GetString(b, 0, 4));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4)));
        Assert.Equal(2ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(8)));
        Assert.Equal(2ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(16)));
        Assert.Equal(20ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(24)));
        Assert.Equal("general.architecture", Encoding.UTF8.GetString(b, 32, 20));
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(52)));   // string
        Assert.Equal(5ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(56)));
        Assert.Equal("llama", Encoding.UTF8.GetString(b, 64, 5));
        int p = 69 + 8 + "llama.block_count".Length;
        Assert.Equal(4u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p)));    // uint32
        Assert.Equal(5u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p + 4)));
        p += 8;
        // Tensor info: name, u32 n_dims, ne[] innermost first, u32 type, u64 offset.
        p += 8 + "output_norm.weight".Length;
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p)));
        Assert.Equal(3ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p + 4)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p + 12)));
        Assert.Equal(0ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p + 16)));
        p += 24 + 8 + "token_embd.weight".Length;
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p)));
        Assert.Equal(32ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p + 4)));  // ne[0] = columns
        Assert.Equal(2ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p + 12)));  // ne[1] = rows
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p + 20)));   // GGML_TYPE_Q8_0
        Assert.Equal(32ul, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p + 24))); // 12 bytes padded to 32
        int dataStart = (p + 32 + 31) / 32 * 32;
        Assert.Equal(dataStart + 32 + 68 + 28, b.Length);
    }

    [Fact]
    public void Every_metadata_type_reads_back_including_nested_arrays()
    {
        var b = new RawFileBuilder().GgufHeader(2, 0, 14);
        b.Str("u8").U32(0).U8(200).Str("i8").U32(1).U8(0xFE).Str("u16").U32(2).Raw(new byte[] { 0x34, 0x12 })
         .Str("i16").U32(3).Raw(new byte[] { 0xFF, 0xFF }).Str("u32").U32(4).U32(4000000000).Str("i32").U32(5).U32(unchecked((uint)-7))
         .Str("f32").U32(6).F32(1.5f).Str("bool").U32(7).U8(1).Str("str").U32(8).Str("héllo")
         .Str("u64").U32(10).U64(ulong.MaxValue).Str("i64").U32(11).U64(unchecked((ulong)-9L)).Str("f64").U32(12).Raw(BitConverter.GetBytes(2.25))
         .Str("arr").U32(9).U32(8).U64(2).Str("a").Str("bc")
         .Str("nested").U32(9).U32(9).U64(2).U32(4).U64(1).U32(7).U32(4).U64(2).U32(8).U32(9);
        using var file = new TempFile(b.ToArray());
        using var gguf = GgufFile.Open(file.Path);
        var m = gguf.Metadata;
        Assert.Equal(2u, gguf.Version);
        Assert.True(m.TryGetInteger("u8", out long v) && v == 200);
        Assert.True(m.TryGetInteger("i8", out v) && v == -2);
        Assert.True(m.TryGetInteger("u16", out v) && v == 0x1234);
        Assert.True(m.TryGetInteger("i16", out v) && v == -1);
        Assert.True(m.TryGetInteger("u32", out v) && v == 4000000000);
        Assert.True(m.TryGetInteger("i32", out v) && v == -7);
        Assert.True(m.TryGetNumber("f32", out double d) && d == 1.5);
        Assert.True(m.TryGetBool("bool", out bool flag) && flag);
        Assert.True(m.TryGetString("str", out string s) && s == "héllo");
        Assert.False(m.TryGetInteger("u64", out _)); // above long.MaxValue
        Assert.True(m.TryGetValue("u64", out var type, out var raw) && type == GgufValueType.UInt64 && (ulong)raw == ulong.MaxValue);
        Assert.True(m.TryGetInteger("i64", out v) && v == -9);
        Assert.True(m.TryGetNumber("f64", out d) && d == 2.25);
        Assert.True(m.TryGetArray("arr", out var arr));
        Assert.Equal(new[] { "a", "bc" }, (string[])arr.Values);
        Assert.True(m.TryGetArray("nested", out var nested));
        var inner = (GgufArray[])nested.Values;
        Assert.Equal(new uint[] { 7 }, (uint[])inner[0].Values);
        Assert.Equal(new uint[] { 8, 9 }, (uint[])inner[1].Values);
        Assert.Equal(new[] { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64", "i64", "f64", "arr", "nested" }, m.Keys);
    }

    [Fact]
    public void Tensors_get_our_names_and_outermost_first_shapes_and_offsets_from_the_aligned_data_start()
    {
        using var file = new TempFile(RawFileBuilder.SmallGguf());
        using var gguf = GgufFile.Open(file.Path);
        Assert.True(gguf.TryGetTensor("tok_embeddings.weight", out var embedding));
        Assert.Equal(new long[] { 2, 4 }, embedding.Shape);
        Assert.True(gguf.TryGetTensor("token_embd.weight", out var sameByFileName));
        Assert.Equal(embedding.Data, sameByFileName.Data);
        unsafe
        {
            var values = new ReadOnlySpan<float>((void*)embedding.Data, 8).ToArray();
            Assert.Equal(Enumerable.Range(10, 8).Select(i => (float)i), values);
        }
        Assert.True(gguf.TryGetTensor("norm.weight", out var norm));
        Assert.Equal(new long[] { 4 }, norm.Shape);
        Assert.Equal(RopeStyle.Interleaved, gguf.RopeConvention);
    }

    [Fact]
    public void Alignment_from_metadata_moves_the_data_section()
    {
        var b = new RawFileBuilder().GgufHeader(3, 1, 1).Str("general.alignment").U32(4).U32(64)
            .TensorInfo("output_norm.weight", [2], 0, 0).PadTo(64).F32(3).F32(4);
        using var file = new TempFile(b.ToArray());
        using var gguf = GgufFile.Open(file.Path);
        Assert.Equal(64u, gguf.Alignment);
        Assert.Equal(0, gguf.DataOffset % 64);
        gguf.TryGetTensor("norm.weight", out var t);
        unsafe { Assert.Equal(3f, *(float*)t.Data); }
    }

    [Fact]
    public void Unsupported_type_is_listed_but_an_error_naming_tensor_and_type_when_needed()
    {
        // q4_K (12): 256 weights in 144 bytes.
        var b = new RawFileBuilder().GgufHeader(3, 1, 0).TensorInfo("blk.0.attn_q.weight", [256, 1], 12, 0).PadTo(32).Raw(new byte[144]);
        using var file = new TempFile(b.ToArray());
        using var gguf = GgufFile.Open(file.Path);
        Assert.Single(gguf.TensorInfos);
        Assert.Empty(gguf.Tensors);
        var e = Assert.Throws<ModelLoadException>(() => gguf.TryGetTensor("layers.0.attention.wq.weight", out _));
        Assert.Contains("blk.0.attn_q.weight", e.Message);
        Assert.Contains("q4_K", e.Message);
    }

    [Fact]
    public void Quantized_Stories260K_reads_back_with_the_description_and_checks_pass()
    {
        using var tmp = new TempFile(".gguf");
        using (var source = EngineTestSupport.OpenStories()) GgufExport.Write(source, Stories, WeightDType.Q8_0, tmp.Path);
        var source2 = WeightFiles.OpenChecked(tmp.Path, Stories, out var notes);
        using (source2)
        {
            Assert.IsType<GgufFile>(source2);
            Assert.Empty(notes);
            Assert.True(source2.TryGetTensor("layers.4.attention.wq.weight", out var wq));
            Assert.Equal(WeightDType.Q8_0, wq.DType);
            Assert.Equal(new long[] { 64, 64 }, wq.Shape);
            source2.TryGetTensor("layers.0.feed_forward.w2.weight", out var w2);
            Assert.Equal(WeightDType.F16, w2.DType); // 172 columns are not whole blocks: llama.cpp's f16 fallback
            source2.TryGetTensor("norm.weight", out var norm);
            Assert.Equal(WeightDType.F32, norm.DType);
            Assert.False(source2.TryGetTensor("output.weight", out _)); // tied
        }
    }

    [Fact]
    public void Differences_that_change_the_computation_are_errors_naming_field_and_both_values()
    {
        using var tmp = new TempFile(".gguf");
        using (var source = EngineTestSupport.OpenStories()) GgufExport.Write(source, Stories with { HiddenDim = 172 }, WeightDType.F32, tmp.Path);
        using var gguf = GgufFile.Open(tmp.Path);
        var e = Assert.Throws<ModelLoadException>(() => gguf.CheckAgainst(Stories with { NumKvHeads = 8, RopeTheta = 500000 }));
        Assert.Contains("llama.attention.head_count_kv is 4 in the file but numKvHeads is 8 in the description", e.Message);
        Assert.Contains("llama.rope.freq_base is 10000 in the file but ropeTheta is 500000", e.Message);
        e = Assert.Throws<ModelLoadException>(() => gguf.CheckAgainst(Stories with { TiedEmbedding = false }));
        Assert.Contains("no output.weight", e.Message);
        e = Assert.Throws<ModelLoadException>(() => gguf.CheckAgainst(Stories with { VocabSize = 32000 }));
        Assert.Contains("token_embd.weight has 512 rows", e.Message);
    }

    [Fact]
    public void Context_length_and_name_differences_are_notes()
    {
        using var tmp = new TempFile(".gguf");
        using (var source = EngineTestSupport.OpenStories()) GgufExport.Write(source, Stories with { MaxSeqLen = 1024, Name = "other" }, WeightDType.F16, tmp.Path);
        using var source2 = WeightFiles.OpenChecked(tmp.Path, Stories, out var notes);
        Assert.Equal(2, notes.Count);
        Assert.Contains(notes, n => n.Contains("llama.context_length is 1024"));
        Assert.Contains(notes, n => n.Contains("general.name is 'other'"));
    }

    [Fact]
    public void Format_is_detected_by_magic_not_extension()
    {
        using var gguf = new TempFile(RawFileBuilder.SmallGguf(), ".bin");
        Assert.Equal(WeightFileFormat.Gguf, WeightFiles.DetectFormat(gguf.Path));
        using var st = new TempFile(RawFileBuilder.Safetensors("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", new byte[4]), ".gguf");
        Assert.Equal(WeightFileFormat.Safetensors, WeightFiles.DetectFormat(st.Path));
        Assert.Equal(WeightFileFormat.Llama2c, WeightFiles.DetectFormat(TestPaths.Model("stories260K.bin")));
        using var opened = WeightFiles.Open(st.Path);
        Assert.IsType<SafetensorsFile>(opened);
    }
}
