using System.Text.Json;
using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Emit;
using ModelCompiler.Compiler.Import;
using Xunit;

namespace ModelCompiler.Tests.Formats;

/// <summary>config.json of each llama-family model → a description that compiles; unsupported features are errors naming the field.</summary>
public class HuggingFaceImporterTests
{
    // Shaped like the published configs, sizes shrunk so the compiled engines stay small.
    private const string TinyLlama = """
        { "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": 64,
          "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
          "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_scaling": null,
          "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "attention_bias": false,
          "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": true }
        """;

    private const string Llama3 = """
        { "architectures": ["LlamaForCausalLM"], "hidden_size": 128, "intermediate_size": 448, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 1024, "max_position_embeddings": 8192,
          "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "float32" }
        """;

    private const string Mistral = """
        { "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu", "hidden_size": 64,
          "intermediate_size": 224, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 512, "max_position_embeddings": 32768, "sliding_window": 4096, "rms_norm_eps": 1e-05,
          "rope_theta": 1000000.0, "tie_word_embeddings": false, "torch_dtype": "float16" }
        """;

    private const string Qwen2 = """
        { "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 1024,
          "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": true }
        """;

    private static JsonElement Hyper(ImportResult r) => JsonDocument.Parse(r.DescriptionText!).RootElement.GetProperty("hyperparameters");

    private static void AssertCompiles(ImportResult r)
    {
        Assert.True(r.Succeeded, string.Join("\n", r.Errors));
        var compiled = ModelCompilerDriver.Compile(r.DescriptionText!, "imported.model.json", new EngineClassInfo("Test", "ImportedEngine", "imported.model.json"));
        Assert.True(compiled.Succeeded, string.Join("\n", compiled.Diagnostics));
        Assert.DoesNotContain(compiled.Diagnostics, d => d.Severity == Severity.Error);
        Assert.DoesNotContain(compiled.Diagnostics, d => d.Id == "MC0015"); // no unknown fields either
    }

    [Fact]
    public void TinyLlama_config_imports_with_half_rope_and_safetensors()
    {
        var r = HuggingFaceImporter.Import(TinyLlama, "TinyLlamaMini");
        AssertCompiles(r);
        var h = Hyper(r);
        Assert.Equal(64, h.GetProperty("dim").GetInt32());
        Assert.Equal(176, h.GetProperty("hiddenDim").GetInt32());
        Assert.Equal(2, h.GetProperty("numLayers").GetInt32());
        Assert.Equal(8, h.GetProperty("numHeads").GetInt32());
        Assert.Equal(2, h.GetProperty("numKvHeads").GetInt32());
        Assert.Equal(512, h.GetProperty("vocabSize").GetInt32());
        Assert.Equal(256, h.GetProperty("maxSeqLen").GetInt32());
        Assert.Equal(1e-5, h.GetProperty("normEps").GetDouble());
        Assert.Equal("half", h.GetProperty("ropeStyle").GetString());
        Assert.False(h.GetProperty("tiedEmbedding").GetBoolean());
        var weights = JsonDocument.Parse(r.DescriptionText!).RootElement.GetProperty("weights");
        Assert.Equal("safetensors", weights.GetProperty("format").GetString());
        Assert.Equal("bf16", weights.GetProperty("dtype").GetString());
    }

    [Fact]
    public void Llama3_config_imports_theta_gqa_and_tied_head()
    {
        var r = HuggingFaceImporter.Import(Llama3, "Llama3Mini");
        AssertCompiles(r);
        var h = Hyper(r);
        Assert.Equal(500000.0, h.GetProperty("ropeTheta").GetDouble());
        Assert.Equal(1, h.GetProperty("numKvHeads").GetInt32());
        Assert.True(h.GetProperty("tiedEmbedding").GetBoolean());
    }

    [Fact]
    public void Mistral_sliding_window_caps_the_context_where_it_equals_full_attention()
    {
        var r = HuggingFaceImporter.Import(Mistral, "MistralMini");
        AssertCompiles(r);
        Assert.Equal(4096, Hyper(r).GetProperty("maxSeqLen").GetInt32());
        Assert.Equal(1000000.0, Hyper(r).GetProperty("ropeTheta").GetDouble());
    }

    [Fact]
    public void Qwen2_is_a_clear_error_about_its_qkv_biases()
    {
        var r = HuggingFaceImporter.Import(Qwen2, "Qwen");
        Assert.False(r.Succeeded);
        Assert.Contains(r.Errors, e => e.Contains("Qwen2ForCausalLM") && e.Contains("biases"));
    }

    [Theory]
    [InlineData("\"architectures\": [\"GPT2LMHeadModel\"]", "architectures is GPT2LMHeadModel")]
    [InlineData("\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", "rope_scaling")]
    [InlineData("\"attention_bias\": true", "attention_bias")]
    [InlineData("\"hidden_act\": \"gelu\"", "hidden_act")]
    [InlineData("\"head_dim\": 16", "head_dim is 16")]
    [InlineData("\"num_hidden_layers\": -1", "num_hidden_layers")]
    [InlineData("\"torch_dtype\": \"int8\"", "torch_dtype")]
    public void Unsupported_fields_are_errors_naming_the_field(string replacement, string expected)
    {
        // Drop the field from the base text (if there) and put the replacement first: one value per key.
        string key = replacement[..replacement.IndexOf(':')];
        string text = System.Text.RegularExpressions.Regex.Replace(TinyLlama, System.Text.RegularExpressions.Regex.Escape(key) + @":\s*(\[[^\]]*\]|[^,}]*),?", "");
        text = "{ " + replacement + ", " + text.TrimStart()[1..];
        var r = HuggingFaceImporter.Import(text, "X");
        Assert.False(r.Succeeded, r.DescriptionText);
        Assert.Contains(r.Errors, e => e.Contains(expected));
    }

    [Fact]
    public void Missing_required_field_and_bad_json_are_named()
    {
        var r = HuggingFaceImporter.Import(TinyLlama.Replace("\"vocab_size\": 512,", ""), "X");
        Assert.Contains("vocab_size is missing", r.Errors);
        r = HuggingFaceImporter.Import("{ \"hidden_size\": ", "X");
        Assert.Contains(r.Errors, e => e.Contains("not valid JSON"));
    }
}
