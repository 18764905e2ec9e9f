using System.Buffers.Binary;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Safetensors;
using Xunit;

namespace ModelCompiler.Tests.Formats;

/// <summary>The safetensors reader: Hugging Face names, dtypes, data placement, rotary convention.</summary>
public class SafetensorsTests
{
    [Fact]
    public void Reads_hf_names_dtypes_and_data_at_their_offsets()
    {
        var data = new byte[4 * 4 + 2 * 2 + 2 * 2];
        for (int i = 0; i < 4; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(i * 4), i + 0.5f);
        BinaryPrimitives.WriteHalfLittleEndian(data.AsSpan(16), (Half)2.5f);
        BinaryPrimitives.WriteHalfLittleEndian(data.AsSpan(18), (Half)(-1f));
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(20), 0x3F80); // bf16 1.0
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(22), 0x4000); // bf16 2.0
        string json = "{\"__metadata__\":{\"format\":\"pt\"}," +
            "\"model.layers.3.self_attn.k_proj.weight\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[16,20]}," +
            "\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}," +
            "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[20,24]}," +
            "\"model.layers.0.mlp.gate_proj.bias\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[24,24]}}";
        using var file = new TempFile(RawFileBuilder.Safetensors(json, data), ".safetensors");
        using var st = SafetensorsFile.Open(file.Path);
        Assert.Equal("pt", st.Metadata["format"]);
        Assert.Equal(RopeStyle.Half, st.RopeConvention);
        Assert.Equal(3, st.Tensors.Count);
        var values = FormatTestSupport.Entries(st).ToDictionary(e => e.Name, e => (e.Shape, e.Data));
        Assert.Equal(new[] { 0.5f, 1.5f, 2.5f, 3.5f }, values["tok_embeddings.weight"].Data);
        Assert.Equal(new long[] { 2, 2 }, values["tok_embeddings.weight"].Shape);
        Assert.Equal(new[] { 2.5f, -1f }, values["layers.3.attention.wk.weight"].Data);
        Assert.Equal(new[] { 1f, 2f }, values["norm.weight"].Data);
        Assert.True(st.TryGetTensor("model.norm.weight", out _));
        var e = Assert.Throws<ModelLoadException>(() => st.TryGetTensor("model.layers.0.mlp.gate_proj.bias", out _));
        Assert.Contains("I64", e.Message);
    }

    [Theory]
    [InlineData("model.embed_tokens.weight", "tok_embeddings.weight")]
    [InlineData("model.layers.12.input_layernorm.weight", "layers.12.attention_norm.weight")]
    [InlineData("model.layers.0.self_attn.q_proj.weight", "layers.0.attention.wq.weight")]
    [InlineData("model.layers.0.self_attn.o_proj.weight", "layers.0.attention.wo.weight")]
    [InlineData("model.layers.1.post_attention_layernorm.weight", "layers.1.ffn_norm.weight")]
    [InlineData("model.layers.1.mlp.gate_proj.weight", "layers.1.feed_forward.w1.weight")]
    [InlineData("model.layers.1.mlp.down_proj.weight", "layers.1.feed_forward.w2.weight")]
    [InlineData("model.layers.1.mlp.up_proj.weight", "layers.1.feed_forward.w3.weight")]
    [InlineData("model.norm.weight", "norm.weight")]
    [InlineData("lm_head.weight", "output.weight")]
    [InlineData("model.layers.01.mlp.up_proj.weight", null)]
    [InlineData("model.layers.x.mlp.up_proj.weight", null)]
    public void Hugging_face_names_map_to_ours(string hf, string? ours) => Assert.Equal(ours, TensorNames.FromHuggingFace(hf));

    [Theory]
    [InlineData("token_embd.weight", "tok_embeddings.weight")]
    [InlineData("blk.7.attn_norm.weight", "layers.7.attention_norm.weight")]
    [InlineData("blk.0.attn_q.weight", "layers.0.attention.wq.weight")]
    [InlineData("blk.0.attn_k.weight", "layers.0.attention.wk.weight")]
    [InlineData("blk.0.attn_v.weight", "layers.0.attention.wv.weight")]
    [InlineData("blk.0.attn_output.weight", "layers.0.attention.wo.weight")]
    [InlineData("blk.0.ffn_norm.weight", "layers.0.ffn_norm.weight")]
    [InlineData("blk.0.ffn_gate.weight", "layers.0.feed_forward.w1.weight")]
    [InlineData("blk.0.ffn_down.weight", "layers.0.feed_forward.w2.weight")]
    [InlineData("blk.0.ffn_up.weight", "layers.0.feed_forward.w3.weight")]
    [InlineData("output_norm.weight", "norm.weight")]
    [InlineData("output.weight", "output.weight")]
    [InlineData("rope_freqs.weight", null)]
    public void Llama_cpp_names_map_to_ours_and_back(string gguf, string? ours)
    {
        Assert.Equal(ours, TensorNames.FromGguf(gguf));
        if (ours is not null) Assert.Equal(gguf, TensorNames.ToGguf(ours));
    }
}
