using System;
using System.Collections.Generic;
using System.Globalization;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// The checkpoint-name tables of the llama architecture, in one place: how llama.cpp (GGUF) and Hugging Face
/// (safetensors) name each tensor, mapped to the Meta / llama2.c names our engines' weight tables use.
/// Per-layer names are <c>prefix + N + "." + suffix</c>; the tables map the suffixes.
/// </summary>
public static class TensorNames
{
    private static readonly (string Gguf, string Ours)[] s_ggufGlobal =
    {
        ("token_embd.weight", "tok_embeddings.weight"),
        ("output_norm.weight", "norm.weight"),
        ("output.weight", "output.weight"),
    };

    private static readonly (string Gguf, string Ours)[] s_ggufLayer =
    {
        ("attn_norm.weight", "attention_norm.weight"),
        ("attn_q.weight", "attention.wq.weight"),
        ("attn_k.weight", "attention.wk.weight"),
        ("attn_v.weight", "attention.wv.weight"),
        ("attn_q.bias", "attention.wq.bias"),
        ("attn_k.bias", "attention.wk.bias"),
        ("attn_v.bias", "attention.wv.bias"),
        ("attn_output.weight", "attention.wo.weight"),
        ("attn_output.bias", "attention.wo.bias"),
        ("ffn_norm.weight", "ffn_norm.weight"),
        ("ffn_gate.weight", "feed_forward.w1.weight"),
        ("ffn_down.weight", "feed_forward.w2.weight"),
        ("ffn_up.weight", "feed_forward.w3.weight"),
        ("ffn_gate.bias", "feed_forward.w1.bias"),
        ("ffn_down.bias", "feed_forward.w2.bias"),
        ("ffn_up.bias", "feed_forward.w3.bias"),
    };

    private static readonly (string Hf, string Ours)[] s_hfGlobal =
    {
        ("model.embed_tokens.weight", "tok_embeddings.weight"),
        ("model.norm.weight", "norm.weight"),
        ("lm_head.weight", "output.weight"),
    };

    private static readonly (string Hf, string Ours)[] s_hfLayer =
    {
        ("input_layernorm.weight", "attention_norm.weight"),
        ("self_attn.q_proj.weight", "attention.wq.weight"),
        ("self_attn.k_proj.weight", "attention.wk.weight"),
        ("self_attn.v_proj.weight", "attention.wv.weight"),
        ("self_attn.q_proj.bias", "attention.wq.bias"),
        ("self_attn.k_proj.bias", "attention.wk.bias"),
        ("self_attn.v_proj.bias", "attention.wv.bias"),
        ("self_attn.o_proj.weight", "attention.wo.weight"),
        ("self_attn.o_proj.bias", "attention.wo.bias"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "feed_forward.w1.weight"),
        ("mlp.down_proj.weight", "feed_forward.w2.weight"),
        ("mlp.up_proj.weight", "feed_forward.w3.weight"),
        ("mlp.gate_proj.bias", "feed_forward.w1.bias"),
        ("mlp.down_proj.bias", "feed_forward.w2.bias"),
        ("mlp.up_proj.bias", "feed_forward.w3.bias"),
    };

    private const string OurLayerPrefix = "layers.";
    private const string GgufLayerPrefix = "blk.";
    private const string HfLayerPrefix = "model.layers.";

    /// <summary>Our name for a llama.cpp tensor name, or null when the table does not know it.</summary>
    public static string? FromGguf(string ggufName) => Map(ggufName, s_ggufGlobal, GgufLayerPrefix, s_ggufLayer, OurLayerPrefix, toOurs: true);

    /// <summary>The llama.cpp name for one of our names, or null when the table does not know it.</summary>
    public static string? ToGguf(string ourName) => Map(ourName, s_ggufGlobal, OurLayerPrefix, s_ggufLayer, GgufLayerPrefix, toOurs: false);

    /// <summary>Our name for a Hugging Face llama tensor name, or null when the table does not know it.</summary>
    public static string? FromHuggingFace(string hfName) => Map(hfName, s_hfGlobal, HfLayerPrefix, s_hfLayer, OurLayerPrefix, toOurs: true);

    /// <summary>True for our names of the q projection and its bias (the rows the rotary convention orders).</summary>
    public static bool IsQuery(string ourName) => ourName.StartsWith(OurLayerPrefix, StringComparison.Ordinal) &&
        (ourName.EndsWith(".attention.wq.weight", StringComparison.Ordinal) || ourName.EndsWith(".attention.wq.bias", StringComparison.Ordinal));

    /// <summary>True for our names of a k projection and its bias.</summary>
    public static bool IsKey(string ourName) => ourName.StartsWith(OurLayerPrefix, StringComparison.Ordinal) &&
        (ourName.EndsWith(".attention.wk.weight", StringComparison.Ordinal) || ourName.EndsWith(".attention.wk.bias", StringComparison.Ordinal));

    private static string? Map(string name, (string, string)[] global, string fromPrefix, (string, string)[] layer, string toPrefix, bool toOurs)
    {
        foreach (var (a, b) in global)
        {
            string from = toOurs ? a : b, to = toOurs ? b : a;
            if (name == from) return to;
        }
        if (!name.StartsWith(fromPrefix, StringComparison.Ordinal)) return null;
        int dot = name.IndexOf('.', fromPrefix.Length);
        if (dot < 0) return null;
        var number = name.AsSpan(fromPrefix.Length, dot - fromPrefix.Length);
        // Digits only, no sign or leading zeros, so every layer has exactly one spelling.
        if (number.Length == 0 || (number.Length > 1 && number[0] == '0')) return null;
        foreach (char c in number) if (c is < '0' or > '9') return null;
        if (!int.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out int n)) return null;
        string suffix = name.Substring(dot + 1);
        foreach (var (a, b) in layer)
        {
            string from = toOurs ? a : b, to = toOurs ? b : a;
            if (suffix == from) return toPrefix + n.ToString(CultureInfo.InvariantCulture) + "." + to;
        }
        return null;
    }
}
