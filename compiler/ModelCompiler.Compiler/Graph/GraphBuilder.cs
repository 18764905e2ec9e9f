using System.Collections.Generic;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Diagnostics;

namespace ModelCompiler.Compiler.Graph;

/// <summary>
/// Validates a block graph and infers the width of every value: inputs defined before use, each value
/// defined once, widths that fit each op, exactly one attention, a residual-width output, and no
/// value computed for nothing.
/// </summary>
internal static class GraphBuilder
{
    public static BlockGraph? Build(RawBlock raw, HyperParameters h, string path, List<CompilerDiagnostic> diagnostics, SourceSpan blockSpan)
    {
        int errorsBefore = CountErrors(diagnostics);
        var widths = new Dictionary<string, int> { [raw.Input] = h.Dim };
        var definedAt = new Dictionary<string, SourceSpan> { [raw.Input] = raw.InputSpan };
        var used = new HashSet<string>();
        var ops = new List<GraphOp>();
        int numAttention = 0;

        foreach (var op in raw.Ops)
        {
            string name = OpNames.Of(op.Kind) + " '" + op.Output + "'";
            var inputWidths = new int[op.Inputs.Length];
            bool inputsKnown = true;
            for (int i = 0; i < op.Inputs.Length; i++)
            {
                used.Add(op.Inputs[i]);
                if (!widths.TryGetValue(op.Inputs[i], out inputWidths[i]))
                {
                    diagnostics.Add(DiagnosticCatalog.UndefinedTensor.At(path, op.InputSpans[i], op.Inputs[i], name));
                    inputsKnown = false;
                }
                else if (inputWidths[i] == 0) inputsKnown = false; // already reported upstream
            }
            if (definedAt.ContainsKey(op.Output))
            {
                diagnostics.Add(DiagnosticCatalog.DuplicateTensor.At(path, op.OutputSpan, op.Output));
                continue;
            }
            int width = 0;
            if (inputsKnown) width = InferWidth(op, inputWidths, h, name, path, diagnostics);
            if (op.Kind == OpKind.Attention) numAttention++;
            widths[op.Output] = width;
            definedAt[op.Output] = op.OutputSpan;
            ops.Add(new GraphOp(op.Kind, op.Inputs, op.Output, op.Weight, op.OutFeatures, op.Span, op.Bias));
        }

        if (numAttention != 1)
            diagnostics.Add(DiagnosticCatalog.AttentionCount.At(path, blockSpan, numAttention));
        if (!widths.TryGetValue(raw.Output, out int outputWidth))
            diagnostics.Add(DiagnosticCatalog.UndefinedTensor.At(path, raw.OutputSpan, raw.Output, "block output"));
        else if (outputWidth != h.Dim && outputWidth != 0)
            diagnostics.Add(DiagnosticCatalog.ShapeMismatch.At(path, raw.OutputSpan, "block output",
                $"the block output '{raw.Output}' is [numTokens, {outputWidth}] but the residual stream is [numTokens, {h.Dim}] (hyperparameters.dim)"));
        used.Add(raw.Output);
        foreach (var kv in definedAt)
            if (!used.Contains(kv.Key))
                diagnostics.Add(DiagnosticCatalog.UnusedTensor.At(path, kv.Value, kv.Key));

        return CountErrors(diagnostics) > errorsBefore ? null : new BlockGraph(raw.Input, raw.Output, ops, widths);
    }

    private static int InferWidth(RawOp op, int[] w, HyperParameters h, string name, string path, List<CompilerDiagnostic> diagnostics)
    {
        CompilerDiagnostic Mismatch(string message) => DiagnosticCatalog.ShapeMismatch.At(path, op.Span, name, message);
        switch (op.Kind)
        {
            case OpKind.RmsNorm:
            case OpKind.Silu:
                return w[0];
            case OpKind.Linear:
                return op.OutFeatures;
            case OpKind.Rope:
                if (w[0] % h.HeadDim != 0)
                {
                    diagnostics.Add(Mismatch($"input '{op.Inputs[0]}' is [numTokens, {w[0]}], not a whole number of heads of width {h.HeadDim}"));
                    return 0;
                }
                return w[0];
            case OpKind.Attention:
                int qWidth = h.NumHeads * h.HeadDim;
                if (w[0] != qWidth)
                    diagnostics.Add(Mismatch($"queries '{op.Inputs[0]}' are [numTokens, {w[0]}], expected [numTokens, {qWidth}] (numHeads × headDim)"));
                for (int i = 1; i < 3; i++)
                    if (w[i] != h.KvDim)
                        diagnostics.Add(Mismatch($"{(i == 1 ? "keys" : "values")} '{op.Inputs[i]}' are [numTokens, {w[i]}], expected [numTokens, {h.KvDim}] (numKvHeads × headDim)"));
                return qWidth;
            case OpKind.Add:
            case OpKind.Mul:
                if (w[0] != w[1])
                {
                    diagnostics.Add(Mismatch($"'{op.Inputs[0]}' is [numTokens, {w[0]}] but '{op.Inputs[1]}' is [numTokens, {w[1]}]"));
                    return 0;
                }
                return w[0];
            default:
                return 0;
        }
    }

    private static int CountErrors(List<CompilerDiagnostic> diagnostics)
    {
        int n = 0;
        foreach (var d in diagnostics) if (d.Severity == Severity.Error) n++;
        return n;
    }
}
