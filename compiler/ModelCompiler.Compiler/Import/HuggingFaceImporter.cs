using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using ModelCompiler.Compiler.Json;

namespace ModelCompiler.Compiler.Import;

/// <summary>The outcome of an import: description text (null when there were errors) and the errors, each naming its field.</summary>
public sealed record ImportResult(string? DescriptionText, IReadOnlyList<string> Errors)
{
    /// <summary>True when a description was produced.</summary>
    public bool Succeeded => DescriptionText is not null;
}

/// <summary>
/// Turns a Hugging Face <c>config.json</c> of the llama family (LlamaForCausalLM, incl. TinyLlama and Llama 2/3;
/// MistralForCausalLM) into a model description: <c>architecture: llama</c>, the sizes, <c>ropeStyle: half</c>
/// (Hugging Face checkpoints store q/k rows in the half rotary layout) and <c>weights.format: safetensors</c>.
/// What the graph cannot compute is an error naming the field, never silently dropped: Qwen2's q/k/v biases,
/// <c>rope_scaling</c>, attention or MLP biases, activations other than SiLU, a head width other than hidden/heads.
/// </summary>
public static class HuggingFaceImporter
{
    private static readonly string[] SupportedArchitectures = { "LlamaForCausalLM", "MistralForCausalLM" };

    /// <summary>Imports <paramref name="configJson"/> as a description named <paramref name="name"/>.</summary>
    /// <param name="configJson">The text of config.json.</param>
    /// <param name="name">The model's name in the description.</param>
    /// <param name="weightsPath">The description's default weights file (a single-file model.safetensors).</param>
    /// <param name="tokenizerPath">The description's default tokenizer, in llama2.c format (the only one the runtime reads).</param>
    public static ImportResult Import(string configJson, string name, string weightsPath = "model.safetensors", string tokenizerPath = "tokenizer.bin")
    {
        var errors = new List<string>();
        JsonNode root;
        try
        {
            root = JsonReader.Parse(configJson);
        }
        catch (JsonSyntaxException e)
        {
            return Fail($"config.json is not valid JSON at line {e.Span.Line}, column {e.Span.Column}: {e.Message}");
        }
        if (root.Kind != JsonKind.Object) return Fail("config.json is not a JSON object");

        string architecture = Architecture(root, errors);
        if (errors.Count > 0) return new ImportResult(null, errors);

        int hidden = Int(root, "hidden_size", null, errors);
        int intermediate = Int(root, "intermediate_size", null, errors);
        int layers = Int(root, "num_hidden_layers", null, errors);
        int heads = Int(root, "num_attention_heads", null, errors);
        int kvHeads = Int(root, "num_key_value_heads", heads, errors);
        int vocab = Int(root, "vocab_size", null, errors);
        int maxSeq = Int(root, "max_position_embeddings", null, errors);
        double theta = Number(root, "rope_theta", 10000.0, errors);
        double eps = Number(root, "rms_norm_eps", 1e-6, errors);   // LlamaConfig's default
        bool tied = Bool(root, "tie_word_embeddings", false, errors);

        if (IsPresent(root, "rope_scaling"))
            errors.Add("rope_scaling is set; scaled rotary embeddings (linear, dynamic, yarn, llama3) are not supported by the graph");
        if (Bool(root, "attention_bias", false, errors))
            errors.Add("attention_bias is true; projection biases are not supported by the graph IR");
        if (Bool(root, "mlp_bias", false, errors))
            errors.Add("mlp_bias is true; projection biases are not supported by the graph IR");
        if (root.Find("hidden_act") is { } act && !(act.Value.Kind == JsonKind.String && act.Value.Text == "silu"))
            errors.Add($"hidden_act is {act.Value.Describe()}; the llama template computes SwiGLU with silu");
        if (heads > 0 && hidden > 0 && root.Find("head_dim") is { } headDim && headDim.Value.Kind != JsonKind.Null)
        {
            int hd = Int(root, "head_dim", null, errors);
            if (hd != hidden / heads) errors.Add($"head_dim is {hd} but hidden_size / num_attention_heads is {hidden / heads}; the graph needs heads that tile the model width");
        }
        // Mistral's sliding window equals full causal attention for contexts no longer than the window.
        if (root.Find("sliding_window") is { } window && window.Value.Kind != JsonKind.Null)
        {
            int w = Int(root, "sliding_window", null, errors);
            if (w > 0 && w < maxSeq) maxSeq = w;
        }
        string dtype = "f32";
        if (root.Find("torch_dtype") is { } torch && torch.Value.Kind == JsonKind.String)
        {
            switch (torch.Value.Text)
            {
                case "float32": dtype = "f32"; break;
                case "float16": dtype = "f16"; break;
                case "bfloat16": dtype = "bf16"; break;
                default: errors.Add($"torch_dtype is \"{torch.Value.Text}\"; supported: float32, float16, bfloat16"); break;
            }
        }
        if (errors.Count > 0) return new ImportResult(null, errors);

        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append("{\n");
        sb.Append("  \"name\": ").Append(Quote(name)).Append(",\n");
        sb.Append("  \"description\": ").Append(Quote($"Imported from a Hugging Face config.json ({architecture})")).Append(",\n");
        sb.Append("  \"architecture\": \"llama\",\n");
        sb.Append("  \"hyperparameters\": {\n");
        sb.Append("    \"dim\": ").Append(hidden.ToString(ci)).Append(",\n");
        sb.Append("    \"hiddenDim\": ").Append(intermediate.ToString(ci)).Append(",\n");
        sb.Append("    \"numLayers\": ").Append(layers.ToString(ci)).Append(",\n");
        sb.Append("    \"numHeads\": ").Append(heads.ToString(ci)).Append(",\n");
        sb.Append("    \"numKvHeads\": ").Append(kvHeads.ToString(ci)).Append(",\n");
        sb.Append("    \"vocabSize\": ").Append(vocab.ToString(ci)).Append(",\n");
        sb.Append("    \"maxSeqLen\": ").Append(maxSeq.ToString(ci)).Append(",\n");
        sb.Append("    \"ropeTheta\": ").Append(theta.ToString("R", ci)).Append(",\n");
        sb.Append("    \"ropeStyle\": \"half\",\n");
        sb.Append("    \"normEps\": ").Append(eps.ToString("R", ci)).Append(",\n");
        sb.Append("    \"tiedEmbedding\": ").Append(tied ? "true" : "false").Append('\n');
        sb.Append("  },\n");
        sb.Append("  \"weights\": { \"format\": \"safetensors\", \"dtype\": \"").Append(dtype).Append("\", \"path\": ").Append(Quote(weightsPath)).Append(" },\n");
        sb.Append("  \"tokenizer\": { \"format\": \"llama2c\", \"path\": ").Append(Quote(tokenizerPath)).Append(" }\n");
        sb.Append("}\n");
        return new ImportResult(sb.ToString(), errors);

        ImportResult Fail(string message) => new(null, new[] { message });
    }

    private static string Architecture(JsonNode root, List<string> errors)
    {
        string? architecture = null;
        if (root.Find("architectures") is { } list)
        {
            if (list.Value.Kind != JsonKind.Array || list.Value.Items.Count != 1 || list.Value.Items[0].Kind != JsonKind.String)
            {
                errors.Add("architectures must be an array of one string");
                return "";
            }
            architecture = list.Value.Items[0].Text;
        }
        else if (root.Find("model_type") is { } type && type.Value.Kind == JsonKind.String)
        {
            architecture = type.Value.Text switch { "llama" => "LlamaForCausalLM", "mistral" => "MistralForCausalLM", "qwen2" => "Qwen2ForCausalLM", _ => type.Value.Text };
        }
        if (architecture is null)
        {
            errors.Add("config.json has neither architectures nor model_type");
            return "";
        }
        if (architecture == "Qwen2ForCausalLM")
        {
            errors.Add("architectures is Qwen2ForCausalLM: Qwen2 adds biases to the q, k and v projections, which the graph IR cannot express yet");
            return architecture;
        }
        if (Array.IndexOf(SupportedArchitectures, architecture) < 0)
            errors.Add($"architectures is {architecture}; supported: {string.Join(", ", SupportedArchitectures)} (TinyLlama and Llama 2/3 are LlamaForCausalLM)");
        return architecture;
    }

    private static bool IsPresent(JsonNode root, string field) => root.Find(field) is { } p && p.Value.Kind != JsonKind.Null;

    private static int Int(JsonNode root, string field, int? fallback, List<string> errors)
    {
        var p = root.Find(field);
        if (p is null || p.Value.Kind == JsonKind.Null)
        {
            if (fallback is null) errors.Add($"{field} is missing");
            return fallback ?? 0;
        }
        if (p.Value.Kind != JsonKind.Number || !int.TryParse(p.Value.Text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value <= 0)
        {
            errors.Add($"{field} is {p.Value.Describe()}, expected a positive integer");
            return 0;
        }
        return value;
    }

    private static double Number(JsonNode root, string field, double fallback, List<string> errors)
    {
        var p = root.Find(field);
        if (p is null || p.Value.Kind == JsonKind.Null) return fallback;
        if (p.Value.Kind != JsonKind.Number || !p.Value.TryGetDouble(out double value) || !(value > 0))
        {
            errors.Add($"{field} is {p.Value.Describe()}, expected a positive number");
            return fallback;
        }
        return value;
    }

    private static bool Bool(JsonNode root, string field, bool fallback, List<string> errors)
    {
        var p = root.Find(field);
        if (p is null || p.Value.Kind == JsonKind.Null) return fallback;
        if (p.Value.Kind != JsonKind.Boolean)
        {
            errors.Add($"{field} is {p.Value.Describe()}, expected true or false");
            return fallback;
        }
        return p.Value.Boolean;
    }

    private static string Quote(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in s)
        {
            if (c == '"' || c == '\\') sb.Append('\\').Append(c);
            else if (c < ' ') sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else sb.Append(c);
        }
        return sb.Append('"').ToString();
    }
}
