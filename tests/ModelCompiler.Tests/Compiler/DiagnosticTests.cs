using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Diagnostics;
using Xunit;
using static ModelCompiler.Tests.Compiler.Descriptions;

namespace ModelCompiler.Tests.Compiler;

/// <summary>
/// One bad description per diagnostic the compiler core reports. Every test checks the ID, the severity,
/// that the message names the field or tensor and what was expected, and the exact position of the
/// offending JSON node, computed here from a marker in the test text rather than by the reader.
/// </summary>
public sealed class DiagnosticTests
{
    /// <summary>The single diagnostic with <paramref name="id"/>, after checking that errors suppress the source.</summary>
    private static CompilerDiagnostic Expect(string text, string id, Severity severity = Severity.Error)
    {
        var result = Compile(text);
        var d = Assert.Single(result.Diagnostics, x => x.Id == id);
        Assert.Equal(severity, d.Severity);
        Assert.Equal("test.model.json", d.FilePath);
        if (severity == Severity.Error) Assert.Null(result.Source);
        return d;
    }

    private static void AssertAt(CompilerDiagnostic d, string text, int offset)
    {
        var (line, column) = LineColumn(text, offset);
        Assert.True(line == d.Span.Line && column == d.Span.Column && offset == d.Span.Start,
            $"expected ({line},{column}) offset {offset}, got {d.Span} offset {d.Span.Start}: {d}");
    }

    private static void AssertMessage(CompilerDiagnostic d, params string[] parts)
    {
        foreach (var part in parts) Assert.Contains(part, d.Message);
    }

    // ---------------------------------------------------------------- MC0001: JSON syntax

    [Fact]
    public void MC0001_unterminated_string_at_end_of_file()
    {
        string text = "{\n  \"name\": \"Stories";
        var d = Expect(text, "MC0001");
        AssertMessage(d, "unterminated string");
        AssertAt(d, text, text.Length);
    }

    [Fact]
    public void MC0001_string_running_into_the_next_line()
    {
        string text = Edit(Stories260K, "\"name\": \"Stories260K\",", "\"name\": \"Stories260K,");
        var d = Expect(text, "MC0001");
        AssertMessage(d, "cannot span lines");
        AssertAt(d, text, OffsetOf(text, "\"Stories260K,", "\"Stories260K,".Length)); // the newline that ends the line
    }

    [Fact]
    public void MC0001_trailing_comma_in_object()
    {
        string text = Edit(Stories260K, "\"tiedEmbedding\": true\n", "\"tiedEmbedding\": true,\n");
        var d = Expect(text, "MC0001");
        AssertMessage(d, "property name");
        AssertAt(d, text, OffsetOf(text, "true,\n  }", "true,\n  ".Length));
    }

    [Fact]
    public void MC0001_trailing_comma_in_array()
    {
        string text = Edit(TinyExplicit, "[\"q_rot\", \"k_rot\", \"v\"]", "[\"q_rot\", \"k_rot\", \"v\",]");
        var d = Expect(text, "MC0001");
        AssertMessage(d, "']'");
        AssertAt(d, text, OffsetOf(text, "\"v\",]", 4));
    }

    [Fact]
    public void MC0001_missing_closing_brace_points_at_end_of_file()
    {
        string text = Stories260K.TrimEnd();
        Assert.EndsWith("}", text);
        text = text.Substring(0, text.Length - 1);
        var d = Expect(text, "MC0001");
        AssertMessage(d, "'}'");
        AssertAt(d, text, text.Length);
    }

    [Fact]
    public void MC0001_duplicate_property_points_at_the_second_name()
    {
        string text = Edit(Stories260K, "\"numLayers\": 5,", "\"numLayers\": 5, \"numLayers\": 6,");
        var d = Expect(text, "MC0001");
        AssertMessage(d, "duplicate", "numLayers");
        AssertAt(d, text, OffsetOf(text, "\"numLayers\": 6"));
    }

    // ---------------------------------------------------------------- MC0002–MC0004: schema

    [Fact]
    public void MC0002_missing_size_points_at_its_object()
    {
        string text = Edit(Stories260K, "\"numLayers\": 5,\n    ", "");
        var d = Expect(text, "MC0002");
        AssertMessage(d, "'hyperparameters.numLayers' is required");
        AssertAt(d, text, OffsetOf(text, "\"hyperparameters\": {", "\"hyperparameters\": ".Length));
    }

    [Fact]
    public void MC0002_custom_architecture_without_block_points_at_the_architecture()
    {
        string text = Edit(Stories260K, "\"architecture\": \"llama\"", "\"architecture\": \"custom\"");
        var d = Expect(text, "MC0002");
        AssertMessage(d, "'block' is required", "custom");
        AssertAt(d, text, OffsetOf(text, "\"custom\""));
    }

    [Fact]
    public void MC0002_linear_without_outFeatures()
    {
        string text = Edit(TinyExplicit, "\"weight\": \"attention.wo\", \"outFeatures\": 48,", "\"weight\": \"attention.wo\",");
        var d = Expect(text, "MC0002");
        AssertMessage(d, "'block.ops[7].outFeatures' is required");
        AssertAt(d, text, OffsetOf(text, "{ \"op\": \"linear\", \"inputs\": [\"attn\"]"));
    }

    [Fact]
    public void MC0003_size_given_as_a_string()
    {
        string text = Edit(Stories260K, "\"dim\": 64,", "\"dim\": \"64\",");
        var d = Expect(text, "MC0003");
        AssertMessage(d, "'hyperparameters.dim' must be a positive integer", "the string \"64\"");
        AssertAt(d, text, OffsetOf(text, "\"64\""));
    }

    [Fact]
    public void MC0003_fractional_size()
    {
        string text = Edit(Stories260K, "\"numLayers\": 5,", "\"numLayers\": 5.5,");
        var d = Expect(text, "MC0003");
        AssertMessage(d, "'hyperparameters.numLayers' must be a positive integer", "5.5");
        AssertAt(d, text, OffsetOf(text, "5.5"));
    }

    [Fact]
    public void MC0003_document_that_is_not_an_object()
    {
        string text = "\n  [1, 2]";
        var d = Expect(text, "MC0003");
        AssertMessage(d, "must be an object", "an array");
        AssertAt(d, text, 3);
    }

    [Fact]
    public void MC0004_unknown_architecture()
    {
        string text = Edit(Stories260K, "\"architecture\": \"llama\"", "\"architecture\": \"gpt2\"");
        var d = Expect(text, "MC0004");
        AssertMessage(d, "'gpt2'", "'llama'", "'custom'");
        AssertAt(d, text, OffsetOf(text, "\"gpt2\""));
    }

    [Fact]
    public void MC0005_unknown_op()
    {
        string text = Edit(TinyExplicit, "\"op\": \"silu\"", "\"op\": \"gelu\"");
        var d = Expect(text, "MC0005");
        AssertMessage(d, "'gelu'", "rmsnorm", "silu");
        AssertAt(d, text, OffsetOf(text, "\"gelu\""));
    }

    // ---------------------------------------------------------------- MC0006–MC0011: values

    [Theory]
    [InlineData("\"dim\": 64,", "\"dim\": 0,", "hyperparameters.dim", "0")]
    [InlineData("\"numLayers\": 5,", "\"numLayers\": -1,", "hyperparameters.numLayers", "-1")]
    [InlineData("\"vocabSize\": 512,", "\"vocabSize\": 0,", "hyperparameters.vocabSize", "0")]
    [InlineData("\"maxSeqLen\": 512,", "\"maxSeqLen\": -512,", "hyperparameters.maxSeqLen", "-512")]
    [InlineData("\"hiddenDim\": 172,", "\"hiddenDim\": -0,", "hyperparameters.hiddenDim", "-0")]
    [InlineData("\"kvBlockSize\": 16,", "\"kvBlockSize\": 0,", "runtime.kvBlockSize", "0")]
    public void MC0006_non_positive_size(string find, string replace, string field, string value)
    {
        string text = Edit(Stories260K, find, replace);
        var d = Expect(text, "MC0006");
        AssertMessage(d, $"'{field}' must be a positive integer, found {value}");
        AssertAt(d, text, OffsetOf(text, replace, replace.IndexOf(':') + 2));
    }

    [Fact]
    public void MC0006_non_positive_outFeatures()
    {
        string text = Edit(TinyExplicit, "\"outFeatures\": 80, \"output\": \"up\"", "\"outFeatures\": 0, \"output\": \"up\"");
        var d = Expect(text, "MC0006");
        AssertMessage(d, "'block.ops[11].outFeatures'", "found 0");
        AssertAt(d, text, OffsetOf(text, "0, \"output\": \"up\""));
    }

    [Fact]
    public void MC0007_heads_do_not_divide_dim()
    {
        string text = Edit(Stories260K, "\"numHeads\": 8,", "\"numHeads\": 12,");
        var d = Expect(text, "MC0007");
        AssertMessage(d, "'numHeads' (12) must divide 'dim' (64)");
        AssertAt(d, text, OffsetOf(text, "\"numHeads\": 12", "\"numHeads\": ".Length));
    }

    [Fact]
    public void MC0008_kv_heads_do_not_divide_heads()
    {
        string text = Edit(Stories260K, "\"numKvHeads\": 4,", "\"numKvHeads\": 3,");
        var d = Expect(text, "MC0008");
        AssertMessage(d, "'numKvHeads' (3) must divide 'numHeads' (8)");
        AssertAt(d, text, OffsetOf(text, "3,\n"));
    }

    [Fact]
    public void MC0009_unknown_dtype()
    {
        string text = Edit(Stories260K, "\"dtype\": \"f32\"", "\"dtype\": \"f64\"");
        var d = Expect(text, "MC0009");
        AssertMessage(d, "'f64'", "'weights.dtype'", "f32", "bf16");
        AssertAt(d, text, OffsetOf(text, "\"f64\""));
    }

    [Fact]
    public void MC0010_unknown_weight_format()
    {
        string text = Edit(Stories260K, "{ \"format\": \"llama2c\", \"dtype\"", "{ \"format\": \"ggml\", \"dtype\"");
        var d = Expect(text, "MC0010");
        AssertMessage(d, "'ggml'", "'weights.format'", "llama2c", "gguf", "safetensors");
        AssertAt(d, text, OffsetOf(text, "\"ggml\""));
    }

    [Fact]
    public void MC0010_unknown_tokenizer_format()
    {
        string text = Edit(Stories260K, "{ \"format\": \"llama2c\", \"path\": \"models/tok512.bin\"", "{ \"format\": \"spm\", \"path\": \"models/tok512.bin\"");
        var d = Expect(text, "MC0010");
        AssertMessage(d, "'spm'", "'tokenizer.format'", "llama2c");
        AssertAt(d, text, OffsetOf(text, "\"spm\""));
    }

    [Theory]
    [InlineData("\"normEps\": 1e-5,", "\"normEps\": 0,", "hyperparameters.normEps", "greater than 0 and below 1")]
    [InlineData("\"normEps\": 1e-5,", "\"normEps\": 2.5,", "hyperparameters.normEps", "greater than 0 and below 1")]
    [InlineData("\"normEps\": 1e-5,", "\"normEps\": 1e-999,", "hyperparameters.normEps", "greater than 0 and below 1")]
    [InlineData("\"ropeTheta\": 10000,", "\"ropeTheta\": -1,", "hyperparameters.ropeTheta", "greater than 0")]
    [InlineData("\"ropeTheta\": 10000,", "\"ropeTheta\": 1e999,", "hyperparameters.ropeTheta", "below 1e12")]
    [InlineData("\"kvBlockSize\": 16,", "\"kvBlockSize\": 12,", "runtime.kvBlockSize", "a power of two")]
    [InlineData("\"numLayers\": 5,", "\"numLayers\": 5000,", "hyperparameters.numLayers", "at most 4096")]
    [InlineData("\"maxBatchTokens\": 512,", "\"maxBatchTokens\": 65537,", "runtime.maxBatchTokens", "at most 65536")]
    [InlineData("\"name\": \"Stories260K\",", "\"name\": \"\",", "name", "a non-empty string")]
    public void MC0011_value_out_of_range(string find, string replace, string field, string expected)
    {
        string text = Edit(Stories260K, find, replace);
        var d = Expect(text, "MC0011");
        AssertMessage(d, $"'{field}' is ", expected);
        AssertAt(d, text, OffsetOf(text, replace, replace.IndexOf(':') + 2));
    }

    [Fact]
    public void MC0011_activation_arena_too_large_without_a_runtime_object()
    {
        // 512 tokens (the default) × a 2^20-wide model: buffer offsets would overflow int in the engine.
        string text = Edit(Stories260K, "\"dim\": 64,", "\"dim\": 1048576,");
        text = Edit(text, "\"hiddenDim\": 172,", "\"hiddenDim\": 1048576,");
        int runtime = OffsetOf(text, ",\n  \"runtime\"");
        text = text.Substring(0, runtime) + "\n}\n";
        var d = Expect(text, "MC0011");
        AssertMessage(d, "'runtime.maxBatchTokens' is 512", "2^31 floats");
        AssertAt(d, text, OffsetOf(text, "\"hyperparameters\": {", "\"hyperparameters\": ".Length));
    }

    [Fact]
    public void MC0011_activation_arena_too_large_for_a_wide_custom_op()
    {
        // dim and hiddenDim are small; only the explicit graph's 2^20-wide projection makes the arena overflow.
        string text = Edit(TinyExplicit, "\"maxBatchTokens\": 32,", "\"maxBatchTokens\": 65536,");
        text = Edit(text, "\"outFeatures\": 80, \"output\": \"up\"", "\"outFeatures\": 1048576, \"output\": \"up\"");
        text = Edit(text, "\"outFeatures\": 80, \"output\": \"gate\"", "\"outFeatures\": 1048576, \"output\": \"gate\"");
        var d = Expect(text, "MC0011");
        AssertMessage(d, "'runtime.maxBatchTokens' is 65536", "2^31 floats");
        AssertAt(d, text, OffsetOf(text, "65536,"));
    }

    // ---------------------------------------------------------------- MC0012–MC0017: explicit graphs

    private const string AttnResidualAdd = "{ \"op\": \"add\", \"inputs\": [\"x\", \"attn_out\"], \"output\": \"x_attn\" }";

    [Fact]
    public void MC0012_add_of_different_widths()
    {
        string text = Edit(TinyExplicit, "\"outFeatures\": 48, \"output\": \"attn_out\"", "\"outFeatures\": 40, \"output\": \"attn_out\"");
        var d = Expect(text, "MC0012");
        AssertMessage(d, "add 'x_attn'", "'x' is [numTokens, 48]", "'attn_out' is [numTokens, 40]");
        AssertAt(d, text, OffsetOf(text, AttnResidualAdd, "{ \"op\": ".Length));
    }

    [Fact]
    public void MC0012_attention_with_keys_of_the_wrong_width()
    {
        string text = Edit(TinyExplicit, "\"outFeatures\": 16, \"output\": \"k\"", "\"outFeatures\": 24, \"output\": \"k\"");
        var d = Expect(text, "MC0012");
        AssertMessage(d, "attention 'attn'", "keys 'k_rot'", "[numTokens, 24]", "expected [numTokens, 16]");
        AssertAt(d, text, OffsetOf(text, "\"attention\""));
    }

    [Fact]
    public void MC0012_rope_on_a_partial_head()
    {
        string text = Edit(TinyExplicit, "\"outFeatures\": 16, \"output\": \"k\"", "\"outFeatures\": 12, \"output\": \"k\"");
        var d = Expect(text, "MC0012");
        AssertMessage(d, "rope 'k_rot'", "[numTokens, 12]", "heads of width 8");
        AssertAt(d, text, OffsetOf(text, "{ \"op\": \"rope\", \"inputs\": [\"k\"]", "{ \"op\": ".Length));
    }

    [Fact]
    public void MC0012_block_output_narrower_than_the_residual_stream()
    {
        string text = Edit(TinyExplicit, "\"output\": \"x_out\",\n", "\"output\": \"ffn_hidden\",\n");
        var d = Expect(text, "MC0012");
        AssertMessage(d, "'ffn_hidden' is [numTokens, 80]", "[numTokens, 48] (hyperparameters.dim)");
        AssertAt(d, text, OffsetOf(text, "\"ffn_hidden\",\n"));
    }

    [Fact]
    public void MC0013_undefined_tensor()
    {
        string text = Edit(TinyExplicit, "\"inputs\": [\"gate\"]", "\"inputs\": [\"gaet\"]");
        var d = Expect(text, "MC0013");
        AssertMessage(d, "'gaet'", "silu 'gate_act'");
        AssertAt(d, text, OffsetOf(text, "\"gaet\""));
    }

    [Fact]
    public void MC0013_tensor_used_before_its_definition()
    {
        // Swap the silu and the gate projection: 'gate' is defined, but only after it is read.
        string silu = "{ \"op\": \"silu\", \"inputs\": [\"gate\"], \"output\": \"gate_act\" },";
        string text = Edit(TinyExplicit, silu + "\n", "");
        text = Edit(text, "{ \"op\": \"linear\", \"inputs\": [\"ffn_in\"], \"weight\": \"feed_forward.w1\"", silu + " { \"op\": \"linear\", \"inputs\": [\"ffn_in\"], \"weight\": \"feed_forward.w1\"");
        var d = Expect(text, "MC0013");
        AssertMessage(d, "'gate'", "not defined before");
        AssertAt(d, text, OffsetOf(text, "[\"gate\"]", 1));
    }

    [Fact]
    public void MC0013_undefined_block_output()
    {
        string text = Edit(TinyExplicit, "\"output\": \"x_out\",\n", "\"output\": \"y\",\n");
        var d = Expect(text, "MC0013");
        AssertMessage(d, "'y'", "block output");
        AssertAt(d, text, OffsetOf(text, "\"y\""));
    }

    [Fact]
    public void MC0014_unused_tensor_is_a_warning_and_the_engine_is_still_generated()
    {
        string text = Edit(TinyExplicit, "{ \"op\": \"rmsnorm\", \"inputs\": [\"x_attn\"]",
            "{ \"op\": \"silu\", \"inputs\": [\"x_attn\"], \"output\": \"dead\" },\n      { \"op\": \"rmsnorm\", \"inputs\": [\"x_attn\"]");
        var d = Expect(text, "MC0014", Severity.Warning);
        AssertMessage(d, "'dead'", "never used");
        AssertAt(d, text, OffsetOf(text, "\"dead\""));
        Assert.NotNull(Compile(text).Source);
    }

    [Fact]
    public void MC0015_unknown_field_is_a_warning()
    {
        string text = Edit(Stories260K, "\"maxSequences\": 16", "\"maxSequence\": 16");
        var d = Expect(text, "MC0015", Severity.Warning);
        AssertMessage(d, "'maxSequence'", "'runtime'", "maxSequences");
        AssertAt(d, text, OffsetOf(text, "\"maxSequence\""));
        Assert.NotNull(Compile(text).Source);
    }

    [Fact]
    public void MC0016_duplicate_tensor()
    {
        string text = Edit(TinyExplicit, "{ \"op\": \"silu\", \"inputs\": [\"gate\"], \"output\": \"gate_act\" },",
            "{ \"op\": \"silu\", \"inputs\": [\"gate\"], \"output\": \"gate_act\" }, { \"op\": \"silu\", \"inputs\": [\"up\"], \"output\": \"gate_act\" },");
        var d = Expect(text, "MC0016");
        AssertMessage(d, "'gate_act'", "already defined");
        AssertAt(d, text, OffsetOf(text, "[\"up\"], \"output\": \"gate_act\"", "[\"up\"], \"output\": ".Length));
    }

    [Fact]
    public void MC0016_redefining_the_block_input()
    {
        string text = Edit(TinyExplicit, "\"weight\": \"attention_norm\", \"output\": \"attn_in\" },",
            "\"weight\": \"attention_norm\", \"output\": \"attn_in\" }, { \"op\": \"silu\", \"inputs\": [\"attn_in\"], \"output\": \"x\" },");
        var d = Expect(text, "MC0016");
        AssertMessage(d, "'x'");
        AssertAt(d, text, OffsetOf(text, "\"output\": \"x\"", "\"output\": ".Length));
    }

    [Fact]
    public void MC0017_add_with_one_input()
    {
        string text = Edit(TinyExplicit, AttnResidualAdd, "{ \"op\": \"add\", \"inputs\": [\"x\"], \"output\": \"x_attn\" }");
        var d = Expect(text, "MC0017");
        AssertMessage(d, "add 'x_attn'", "takes 2 inputs, found 1");
        AssertAt(d, text, OffsetOf(text, "[\"x\"], \"output\": \"x_attn\""));
    }

    [Fact]
    public void MC0017_weight_on_an_op_without_one()
    {
        string text = Edit(TinyExplicit, "{ \"op\": \"rope\", \"inputs\": [\"q\"], \"output\": \"q_rot\" }",
            "{ \"op\": \"rope\", \"inputs\": [\"q\"], \"weight\": \"rope\", \"output\": \"q_rot\" }");
        var d = Expect(text, "MC0017");
        AssertMessage(d, "rope 'q_rot'", "takes no weight");
        AssertAt(d, text, OffsetOf(text, "\"weight\": \"rope\""));
    }

    [Fact]
    public void MC0017_outFeatures_on_an_op_other_than_linear()
    {
        string text = Edit(TinyExplicit, "\"weight\": \"ffn_norm\", \"output\": \"ffn_in\"", "\"weight\": \"ffn_norm\", \"outFeatures\": 48, \"output\": \"ffn_in\"");
        var d = Expect(text, "MC0017");
        AssertMessage(d, "rmsnorm 'ffn_in'", "outFeatures");
        AssertAt(d, text, OffsetOf(text, "\"outFeatures\": 48, \"output\": \"ffn_in\""));
    }

    // ---------------------------------------------------------------- MC0018, MC0020, MC0021, MC0024

    [Fact]
    public void MC0017_bias_on_an_op_that_is_not_a_linear()
    {
        string text = Edit(TinyExplicit, "{ \"op\": \"silu\", \"inputs\": [\"gate\"], \"output\": \"gate_act\" }",
            "{ \"op\": \"silu\", \"inputs\": [\"gate\"], \"output\": \"gate_act\", \"bias\": true }");
        var d = Expect(text, "MC0017");
        AssertMessage(d, "silu 'gate_act'", "'bias'", "only 'linear'");
        AssertAt(d, text, OffsetOf(text, "\"bias\": true"));
    }

    [Fact]
    public void MC0018_unknown_chat_template()
    {
        string text = Edit(Stories260K, "\"architecture\": \"llama\",", "\"architecture\": \"llama\", \"chatTemplate\": \"chatml\",");
        var d = Expect(text, "MC0018");
        AssertMessage(d, "'chatTemplate' is 'chatml'", "plain", "llama2");
        AssertAt(d, text, OffsetOf(text, "\"chatml\""));
    }

    [Fact]
    public void MC0018_kv_cache_type_other_than_f32_or_f16()
    {
        string text = Edit(Stories260K, "\"maxSequences\": 16", "\"maxSequences\": 16, \"kvCacheDType\": \"bf16\"");
        var d = Expect(text, "MC0018");
        AssertMessage(d, "'runtime.kvCacheDType' is 'bf16'", "f32, f16");
        AssertAt(d, text, OffsetOf(text, "\"bf16\""));
    }

    [Fact]
    public void MC0018_unknown_rope_style()
    {
        string text = Edit(Stories260K, "\"ropeStyle\": \"interleaved\"", "\"ropeStyle\": \"neox\"");
        var d = Expect(text, "MC0018");
        AssertMessage(d, "'hyperparameters.ropeStyle' is 'neox'", "interleaved", "half");
        AssertAt(d, text, OffsetOf(text, "\"neox\""));
    }

    [Fact]
    public void MC0018_llama2c_weights_in_a_dtype_other_than_f32()
    {
        string text = Edit(Stories260K, "\"dtype\": \"f32\"", "\"dtype\": \"f16\"");
        var d = Expect(text, "MC0018");
        AssertMessage(d, "'weights.dtype' is 'f16'", "f32");
        AssertAt(d, text, OffsetOf(text, "\"f16\""));
    }

    [Fact]
    public void MC0020_odd_head_dimension()
    {
        string text = Edit(Stories260K, "\"dim\": 64,", "\"dim\": 24,");
        var d = Expect(text, "MC0020");
        AssertMessage(d, "= 3)", "even");
        AssertAt(d, text, OffsetOf(text, "\"numHeads\": 8", "\"numHeads\": ".Length));
    }

    [Fact]
    public void MC0021_block_without_attention()
    {
        string text = Edit(TinyExplicit, "{ \"op\": \"attention\", \"inputs\": [\"q_rot\", \"k_rot\", \"v\"], \"output\": \"attn\" }",
            "{ \"op\": \"mul\", \"inputs\": [\"q_rot\", \"q_rot\"], \"output\": \"attn\" }");
        var d = Expect(text, "MC0021");
        AssertMessage(d, "exactly one 'attention'", "found 0");
        AssertAt(d, text, OffsetOf(text, "\"ops\": [", "\"ops\": ".Length));
    }

    [Fact]
    public void MC0021_block_with_two_attentions()
    {
        string text = Edit(TinyExplicit, "\"output\": \"attn\" },", "\"output\": \"attn0\" }, { \"op\": \"attention\", \"inputs\": [\"q_rot\", \"k_rot\", \"v\"], \"output\": \"attn1\" }, { \"op\": \"add\", \"inputs\": [\"attn0\", \"attn1\"], \"output\": \"attn\" },");
        var d = Expect(text, "MC0021");
        AssertMessage(d, "found 2");
        AssertAt(d, text, OffsetOf(text, "\"ops\": [", "\"ops\": ".Length));
    }

    [Fact]
    public void MC0024_template_with_an_explicit_block()
    {
        string text = Edit(Stories260K, "\"runtime\": {", "\"block\": { \"input\": \"x\", \"output\": \"x\", \"ops\": [] },\n  \"runtime\": {");
        var d = Expect(text, "MC0024");
        AssertMessage(d, "'llama'", "'custom'", "'block'");
        AssertAt(d, text, OffsetOf(text, "\"block\""));
    }

    // ---------------------------------------------------------------- every ID the core owns is exercised

    [Fact]
    public void Every_core_diagnostic_ID_is_covered_by_a_test_here()
    {
        var tested = typeof(DiagnosticTests).GetMethods()
            .Where(m => m.Name.StartsWith("MC", StringComparison.Ordinal))
            .Select(m => m.Name.Substring(0, 6)).ToHashSet();
        string[] fromGenerator = { "MC0019", "MC0022", "MC0025" }, internalOnly = { "MC0023" };
        foreach (var kind in DiagnosticCatalog.All)
            if (!fromGenerator.Contains(kind.Id) && !internalOnly.Contains(kind.Id))
                Assert.True(tested.Contains(kind.Id), $"{kind.Id} ({kind.Title}) has no test");
    }

    [Fact]
    public void Catalog_IDs_are_unique_and_in_order()
    {
        var ids = DiagnosticCatalog.All.Select(k => k.Id).ToArray();
        Assert.Equal(Enumerable.Range(1, ids.Length).Select(i => $"MC{i:D4}"), ids);
    }

    [Fact]
    public void Several_errors_are_all_reported_in_one_pass()
    {
        string text = Edit(Stories260K, "\"dim\": 64,", "\"dim\": \"wide\",");
        text = Edit(text, "\"dtype\": \"f32\"", "\"dtype\": \"f64\"");
        text = Edit(text, "\"kvBlockSize\": 16", "\"kvBlockSize\": 12");
        var ids = Compile(text).Diagnostics.Select(d => d.Id).ToArray();
        Assert.Contains("MC0003", ids);
        Assert.Contains("MC0009", ids);
        Assert.Contains("MC0011", ids);
    }
}
