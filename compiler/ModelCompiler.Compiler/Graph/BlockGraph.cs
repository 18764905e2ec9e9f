using System.Collections.Generic;
using ModelCompiler.Compiler.Diagnostics;

namespace ModelCompiler.Compiler.Graph;

/// <summary>The ops a block may use. Every activation is a <c>[numTokens, width]</c> f32 matrix.</summary>
internal enum OpKind
{
    /// <summary><c>y = x / rms(x) * weight</c>, row-wise.</summary>
    RmsNorm,
    /// <summary><c>y = x Wᵀ</c> with W <c>[outFeatures, in]</c>.</summary>
    Linear,
    /// <summary>Rotary position embedding of each head, in place.</summary>
    Rope,
    /// <summary>Causal grouped-query attention over the KV cache; its k and v are this step's keys and values.</summary>
    Attention,
    /// <summary>Elementwise sum.</summary>
    Add,
    /// <summary>Elementwise product.</summary>
    Mul,
    /// <summary>Elementwise x·sigmoid(x).</summary>
    Silu,
}

/// <summary>
/// One op of a block graph. <see cref="Weight"/> is the weight's name inside the block
/// (e.g. <c>attention.wq</c>); layer i reads checkpoint tensor <c>layers.{i}.{Weight}.weight</c>, and a
/// linear with <see cref="Bias"/> also adds <c>layers.{i}.{Weight}.bias</c> <c>[OutFeatures]</c>.
/// </summary>
internal sealed record GraphOp(OpKind Kind, string[] Inputs, string Output, string? Weight, int OutFeatures, SourceSpan Span, bool Bias = false)
{
    public string Describe() => $"{OpNames.Of(Kind)} '{Output}'";
}

/// <summary>
/// The graph of one transformer block, repeated for every layer. <see cref="Input"/> and
/// <see cref="Output"/> are the residual stream <c>[numTokens, dim]</c> entering and leaving the block.
/// Every value is single-assignment; <see cref="Widths"/> holds each value's inferred width.
/// </summary>
internal sealed record BlockGraph(string Input, string Output, IReadOnlyList<GraphOp> Ops, IReadOnlyDictionary<string, int> Widths);

/// <summary>The op names of the description schema.</summary>
internal static class OpNames
{
    public static readonly (string Name, OpKind Kind)[] All =
    {
        ("rmsnorm", OpKind.RmsNorm), ("linear", OpKind.Linear), ("rope", OpKind.Rope), ("attention", OpKind.Attention),
        ("add", OpKind.Add), ("mul", OpKind.Mul), ("silu", OpKind.Silu),
    };

    public static string Of(OpKind kind)
    {
        foreach (var (name, k) in All) if (k == kind) return name;
        return kind.ToString();
    }

    public static bool TryParse(string name, out OpKind kind)
    {
        foreach (var (n, k) in All)
            if (n == name) { kind = k; return true; }
        kind = default;
        return false;
    }

    public static string List() => string.Join(", ", System.Linq.Enumerable.Select(All, a => a.Name));
}
