using System.Text;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;
using ModelCompiler.Runtime.Weights.Safetensors;
using Xunit;

namespace ModelCompiler.Tests.Formats;

/// <summary>
/// Truncated, corrupt and hostile GGUF and safetensors files: each must be a <see cref="ModelLoadException"/>
/// whose message names the file and the problem, never an out-of-range read, a huge allocation, a hang or a crash.
/// Files are built field by field (<see cref="RawFileBuilder"/>), not with the writer under test.
/// </summary>
public class HostileFileTests
{
    private static string LoadError(byte[] bytes, Func<string, IWeightSource> open)
    {
        using var file = new TempFile(bytes);
        var e = Assert.Throws<ModelLoadException>(() => { using var _ = open(file.Path); });
        Assert.Contains(file.Path, e.Message);
        return e.Message;
    }

    private static string GgufError(byte[] bytes) => LoadError(bytes, GgufFile.Open);
    private static string SafetensorsError(byte[] bytes) => LoadError(bytes, SafetensorsFile.Open);

    [Fact]
    public void The_valid_baseline_opens()
    {
        using var file = new TempFile(RawFileBuilder.SmallGguf());
        using var gguf = GgufFile.Open(file.Path);
        Assert.Equal(2, gguf.Tensors.Count);
    }

    [Fact]
    public void Gguf_bad_magic() => Assert.Contains("not a GGUF file", GgufError(Encoding.ASCII.GetBytes("GGML").Concat(new byte[40]).ToArray()));

    [Fact]
    public void Gguf_version_1_is_rejected_by_name() =>
        Assert.Contains("version 1 is not supported", GgufError(new RawFileBuilder().GgufHeader(1, 0, 0).ToArray()));

    [Fact]
    public void Gguf_unknown_version() =>
        Assert.Contains("unsupported GGUF version 7", GgufError(new RawFileBuilder().GgufHeader(7, 0, 0).ToArray()));

    [Fact]
    public void Gguf_big_endian_version_is_hinted() =>
        Assert.Contains("big-endian", GgufError(new RawFileBuilder().Raw("GGUF"u8).Raw(new byte[] { 0, 0, 0, 3 }).U64(0).U64(0).ToArray()));

    [Fact]
    public void Gguf_truncated_header() => Assert.Contains("truncated", GgufError(new RawFileBuilder().Raw("GGUF"u8).U32(3).U32(0).ToArray()));

    [Fact]
    public void Gguf_truncated_in_a_key_value()
    {
        var bytes = new RawFileBuilder().GgufHeader(3, 0, 1).Str("general.alignment").U32((uint)GgufValueType.UInt32).U8(32).ToArray();
        var message = GgufError(bytes);
        Assert.Contains("truncated", message);
        Assert.Contains("general.alignment", message);
    }

    [Fact]
    public void Gguf_truncated_in_a_tensor_info()
    {
        var bytes = new RawFileBuilder().GgufHeader(3, 1, 0).Str("token_embd.weight").U32(2).U64(4).ToArray();
        var message = GgufError(bytes);
        Assert.Contains("truncated", message);
        Assert.Contains("token_embd.weight", message);
    }

    [Fact]
    public void Gguf_string_length_past_the_end()
    {
        var bytes = new RawFileBuilder().GgufHeader(3, 0, 1).U64(1UL << 40).Raw("abc"u8).Raw(new byte[20]).ToArray();
        Assert.Contains("metadata key 0 is 1099511627776 bytes long", GgufError(bytes));
    }

    [Fact]
    public void Gguf_absurd_tensor_count() =>
        Assert.Contains("claims 1152921504606846976 tensors", GgufError(new RawFileBuilder().GgufHeader(3, 1UL << 60, 0).Raw(new byte[64]).ToArray()));

    [Fact]
    public void Gguf_absurd_metadata_count() =>
        Assert.Contains("metadata entries", GgufError(new RawFileBuilder().GgufHeader(3, 0, ulong.MaxValue).Raw(new byte[64]).ToArray()));

    [Fact]
    public void Gguf_huge_array_length()
    {
        var bytes = new RawFileBuilder().GgufHeader(3, 0, 1).Str("tokenizer.ggml.scores").U32((uint)GgufValueType.Array)
            .U32((uint)GgufValueType.Float32).U64(1UL << 62).Raw(new byte[64]).ToArray();
        var message = GgufError(bytes);
        Assert.Contains("tokenizer.ggml.scores", message);
        Assert.Contains("claims 4611686018427387904 elements", message);
    }

    [Fact]
    public void Gguf_deeply_nested_arrays_are_bounded()
    {
        var b = new RawFileBuilder().GgufHeader(3, 0, 1).Str("nest").U32((uint)GgufValueType.Array);
        for (int i = 0; i < 100; i++) b.U32((uint)GgufValueType.Array).U64(1);
        b.Raw(new byte[64]);
        Assert.Contains("nests arrays deeper", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_unknown_value_type() =>
        Assert.Contains("unknown value type 99", GgufError(new RawFileBuilder().GgufHeader(3, 0, 1).Str("k").U32(99).Raw(new byte[16]).ToArray()));

    [Fact]
    public void Gguf_tensor_offset_past_the_end()
    {
        var b = new RawFileBuilder().GgufHeader(3, 1, 0).TensorInfo("token_embd.weight", [4, 2], 0, 1UL << 20).PadTo(32);
        b.Raw(new byte[32]);
        Assert.Contains("ends past the end of the file", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_tensor_data_running_past_the_end()
    {
        var b = new RawFileBuilder().GgufHeader(3, 1, 0).TensorInfo("token_embd.weight", [4, 2], 0, 0).PadTo(32);
        b.Raw(new byte[31]); // 32 bytes needed
        Assert.Contains("'token_embd.weight' (32 bytes at data offset 0) ends past the end", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_overlapping_tensors()
    {
        var b = new RawFileBuilder().GgufHeader(3, 2, 0)
            .TensorInfo("a", [16], 0, 0)       // 64 bytes at 0
            .TensorInfo("b", [8], 0, 32)       // starts inside a
            .PadTo(32).Raw(new byte[128]);
        var message = GgufError(b.ToArray());
        Assert.Contains("'a'", message);
        Assert.Contains("'b'", message);
        Assert.Contains("overlap", message);
    }

    [Fact]
    public void Gguf_misaligned_offset()
    {
        var b = new RawFileBuilder().GgufHeader(3, 1, 0).TensorInfo("a", [4], 0, 4).PadTo(32).Raw(new byte[64]);
        Assert.Contains("offset 4, not a multiple of the alignment 32", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_bad_alignment_value()
    {
        var b = new RawFileBuilder().GgufHeader(3, 0, 1).Str("general.alignment").U32((uint)GgufValueType.UInt32).U32(24);
        Assert.Contains("general.alignment is 24, not a power of two", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_dimension_product_overflow()
    {
        var b = new RawFileBuilder().GgufHeader(3, 1, 0).TensorInfo("a", [1UL << 40, 1UL << 40], 0, 0).PadTo(32).Raw(new byte[64]);
        Assert.Contains("product overflows", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_too_many_dimensions()
    {
        var b = new RawFileBuilder().GgufHeader(3, 1, 0).TensorInfo("a", [1, 1, 1, 1, 1], 0, 0).PadTo(32).Raw(new byte[64]);
        Assert.Contains("5 dimensions", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_quantized_rows_not_whole_blocks()
    {
        var b = new RawFileBuilder().GgufHeader(3, 1, 0).TensorInfo("a", [48, 2], GgmlTypes.Q8_0, 0).PadTo(32).Raw(new byte[256]);
        Assert.Contains("rows of 48 elements, not whole blocks of 32", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_duplicate_tensor_names()
    {
        var b = new RawFileBuilder().GgufHeader(3, 2, 0).TensorInfo("a", [4], 0, 0).TensorInfo("a", [4], 0, 32).PadTo(32).Raw(new byte[64]);
        Assert.Contains("'a' appears twice", GgufError(b.ToArray()));
    }

    [Fact]
    public void Gguf_every_prefix_of_a_valid_file_fails_cleanly()
    {
        // Truncation at every byte of the header region and through the data: a clear error each time, never a crash.
        var bytes = RawFileBuilder.SmallGguf();
        for (int n = 0; n < bytes.Length; n++)
        {
            var message = GgufError(bytes[..n]);
            Assert.True(message.Contains("truncated") || message.Contains("past the end") || message.Contains("remaining bytes"), $"prefix {n}: {message}");
        }
    }

    [Fact]
    public void Safetensors_header_length_past_the_end()
    {
        var bytes = new RawFileBuilder().U64(1000).Raw("{}"u8).ToArray();
        Assert.Contains("header claims 1000 bytes", SafetensorsError(bytes));
    }

    [Fact]
    public void Safetensors_bad_json()
    {
        Assert.Contains("not valid JSON", SafetensorsError(RawFileBuilder.Safetensors("{\"a\": {\"dtype\": ", new byte[8])));
    }

    [Fact]
    public void Safetensors_offsets_past_the_end()
    {
        var json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
        Assert.Contains("'a' ends at data byte 16, past the end", SafetensorsError(RawFileBuilder.Safetensors(json, new byte[8])));
    }

    [Fact]
    public void Safetensors_overlapping_entries()
    {
        var json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}";
        var message = SafetensorsError(RawFileBuilder.Safetensors(json, new byte[16]));
        Assert.Contains("overlap", message);
        Assert.Contains("'a'", message);
        Assert.Contains("'b'", message);
    }

    [Fact]
    public void Safetensors_size_mismatch()
    {
        var json = "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,16]}}";
        Assert.Contains("'a' is F16 [2, 3] (12 bytes) but its data_offsets span 16 bytes", SafetensorsError(RawFileBuilder.Safetensors(json, new byte[16])));
    }

    [Fact]
    public void Safetensors_backwards_offsets() =>
        Assert.Contains("run backwards", SafetensorsError(RawFileBuilder.Safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", new byte[8])));

    [Fact]
    public void Safetensors_shape_product_overflow() =>
        Assert.Contains("overflows", SafetensorsError(RawFileBuilder.Safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", new byte[8])));

    [Fact]
    public void Safetensors_header_not_an_object() =>
        Assert.Contains("not a JSON object", SafetensorsError(RawFileBuilder.Safetensors("[1, 2]", new byte[8])));

    [Fact]
    public void Sharded_index_is_named_as_out_of_scope()
    {
        using var file = new TempFile(Encoding.UTF8.GetBytes("{\"weight_map\":{}}"), ".safetensors.index.json");
        var e = Assert.Throws<ModelLoadException>(() => WeightFiles.Open(file.Path));
        Assert.Contains("sharded", e.Message);
    }

    [Fact]
    public void Garbage_is_not_mistaken_for_any_format()
    {
        using var file = new TempFile(Encoding.ASCII.GetBytes("this is not a model file at all"));
        var e = Assert.Throws<ModelLoadException>(() => WeightFiles.Open(file.Path));
        Assert.Contains("not a GGUF, safetensors or llama2.c weights file", e.Message);
        Assert.Contains(file.Path, e.Message);
    }

    [Fact]
    public void Empty_file_is_a_clear_error()
    {
        using var file = new TempFile(Array.Empty<byte>());
        var e = Assert.Throws<ModelLoadException>(() => WeightFiles.Open(file.Path));
        Assert.Contains(file.Path, e.Message);
    }
}
