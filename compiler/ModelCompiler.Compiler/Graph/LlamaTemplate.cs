using System.Collections.Generic;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Diagnostics;

namespace ModelCompiler.Compiler.Graph;

/// <summary>
/// The <c>llama</c> architecture template. It expands into exactly the op graph a user could write by
/// hand as a <c>custom</c> block, so everything after parsing sees one graph form. Weight names are
/// those of Meta's checkpoints and llama2.c exports.
/// </summary>
internal static class LlamaTemplate
{
    /// <summary>The block of a Llama layer; every op points at <paramref name="span"/> (the architecture field).</summary>
    public static RawBlock Expand(HyperParameters h, SourceSpan span)
    {
        var ops = new List<RawOp>();
        void Op(OpKind kind, string output, string? weight, int outFeatures, params string[] inputs) => Add(kind, output, weight, outFeatures, false, inputs);
        void Add(OpKind kind, string output, string? weight, int outFeatures, bool bias, params string[] inputs)
        {
            var spans = new SourceSpan[inputs.Length];
            for (int i = 0; i < spans.Length; i++) spans[i] = span;
            ops.Add(new RawOp(kind, inputs, spans, output, span, weight, outFeatures, span, bias));
        }

        // Attention half: x → RMSNorm → q, k, v (+ bias for Qwen2) → RoPE(q, k) → causal GQA → output projection → + x
        Op(OpKind.RmsNorm, "attn_in", "attention_norm", 0, "x");
        Add(OpKind.Linear, "q", "attention.wq", h.Dim, h.QkvBias, "attn_in");
        Add(OpKind.Linear, "k", "attention.wk", h.KvDim, h.QkvBias, "attn_in");
        Add(OpKind.Linear, "v", "attention.wv", h.KvDim, h.QkvBias, "attn_in");
        Op(OpKind.Rope, "q_rot", null, 0, "q");
        Op(OpKind.Rope, "k_rot", null, 0, "k");
        Op(OpKind.Attention, "attn", null, 0, "q_rot", "k_rot", "v");
        Op(OpKind.Linear, "attn_out", "attention.wo", h.Dim, "attn");
        Op(OpKind.Add, "x_attn", null, 0, "x", "attn_out");
        // MLP half: RMSNorm → SwiGLU (down(silu(gate) · up)) → + residual
        Op(OpKind.RmsNorm, "ffn_in", "ffn_norm", 0, "x_attn");
        Op(OpKind.Linear, "gate", "feed_forward.w1", h.HiddenDim, "ffn_in");
        Op(OpKind.Linear, "up", "feed_forward.w3", h.HiddenDim, "ffn_in");
        Op(OpKind.Silu, "gate_act", null, 0, "gate");
        Op(OpKind.Mul, "ffn_hidden", null, 0, "gate_act", "up");
        Op(OpKind.Linear, "ffn_out", "feed_forward.w2", h.Dim, "ffn_hidden");
        Op(OpKind.Add, "x_out", null, 0, "x_attn", "ffn_out");
        return new RawBlock("x", span, "x_out", span, ops);
    }
}
