using System.Collections.Generic;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Json;

namespace ModelCompiler.Compiler.Graph;

/// <summary>
/// Reads a <c>custom</c> architecture's <c>block</c>: <c>{ "input": "x", "output": "y", "ops": [ { "op":
/// "rmsnorm", "inputs": ["x"], "weight": "attention_norm", "output": "h" }, ... ] }</c>, then hands it to
/// <see cref="GraphBuilder"/> like a template's expansion.
/// </summary>
internal static class ExplicitBlockReader
{
    public static BlockGraph? Read(JsonNode node, HyperParameters h, string path, List<CompilerDiagnostic> diagnostics)
    {
        if (node.Kind != JsonKind.Object)
        {
            diagnostics.Add(DiagnosticCatalog.WrongType.At(path, node.Span, "block", "an object", node.Describe()));
            return null;
        }
        var r = new FieldReader(node, "block", path, diagnostics, "input", "output", "ops");
        var inputNode = r.Get("input", JsonKind.String, "a string", true, "the name of the residual stream entering the block");
        var outputNode = r.Get("output", JsonKind.String, "a string", true, "the name of the residual stream leaving the block");
        var opsNode = r.Get("ops", JsonKind.Array, "an array", true, "the block's ops in execution order");
        if (inputNode is null || outputNode is null || opsNode is null) return null;

        var ops = new List<RawOp>();
        bool ok = true;
        for (int i = 0; i < opsNode.Items.Count; i++)
        {
            var op = ReadOp(opsNode.Items[i], i, h, path, diagnostics);
            if (op is null) ok = false;
            else ops.Add(op);
        }
        if (!ok) return null;
        return GraphBuilder.Build(new RawBlock(inputNode.Text, inputNode.Span, outputNode.Text, outputNode.Span, ops), h, path, diagnostics, opsNode.Span);
    }

    private static RawOp? ReadOp(JsonNode node, int index, HyperParameters h, string path, List<CompilerDiagnostic> diagnostics)
    {
        string context = $"block.ops[{index}]";
        if (node.Kind != JsonKind.Object)
        {
            diagnostics.Add(DiagnosticCatalog.WrongType.At(path, node.Span, context, "an object", node.Describe()));
            return null;
        }
        var r = new FieldReader(node, context, path, diagnostics, "op", "inputs", "output", "weight", "outFeatures", "bias");
        var opNode = r.Get("op", JsonKind.String, "a string", true, "the op's name");
        var outputNode = r.Get("output", JsonKind.String, "a string", true, "the name of the tensor the op defines");
        var inputsNode = r.Get("inputs", JsonKind.Array, "an array of tensor names", true, "the tensors the op reads");
        if (opNode is null || outputNode is null || inputsNode is null) return null;
        if (!OpNames.TryParse(opNode.Text, out var kind))
        {
            r.Report(DiagnosticCatalog.UnknownOp.At(path, opNode.Span, opNode.Text, OpNames.List()));
            return null;
        }

        var inputs = new List<string>();
        var spans = new List<SourceSpan>();
        foreach (var item in inputsNode.Items)
        {
            if (item.Kind != JsonKind.String)
            {
                r.Report(DiagnosticCatalog.WrongType.At(path, item.Span, context + ".inputs", "an array of tensor names", "an item that is " + item.Describe()));
                return null;
            }
            inputs.Add(item.Text);
            spans.Add(item.Span);
        }

        int arity = kind switch { OpKind.Attention => 3, OpKind.Add or OpKind.Mul => 2, _ => 1 };
        string name = opNode.Text + " '" + outputNode.Text + "'";
        if (inputs.Count != arity)
        {
            r.Report(DiagnosticCatalog.BadOpArguments.At(path, inputsNode.Span, name, $"takes {arity} input{(arity == 1 ? "" : "s")}, found {inputs.Count}"));
            return null;
        }

        bool needsWeight = kind is OpKind.Linear or OpKind.RmsNorm;
        string? weight = null;
        var weightProperty = r.Find("weight");
        if (needsWeight)
        {
            weight = r.String("weight", true, "", "the op's weight, named as in the checkpoint without 'layers.N.' and '.weight'");
            if (weight.Length == 0) return null;
        }
        else if (weightProperty is not null)
        {
            r.Report(DiagnosticCatalog.BadOpArguments.At(path, weightProperty.NameSpan, name, "takes no weight"));
            return null;
        }

        int outFeatures = 0;
        var outFeaturesProperty = r.Find("outFeatures");
        if (kind == OpKind.Linear)
        {
            outFeatures = r.PositiveInt("outFeatures", true, 0, DescriptionParser.MaxDimension, "the width of the projection's output");
            if (outFeatures == 0) return null;
        }
        else if (outFeaturesProperty is not null)
        {
            r.Report(DiagnosticCatalog.BadOpArguments.At(path, outFeaturesProperty.NameSpan, name, "takes no 'outFeatures' (only 'linear' does)"));
            return null;
        }
        bool bias = false;
        if (r.Find("bias") is { } biasProperty)
        {
            if (kind != OpKind.Linear)
            {
                r.Report(DiagnosticCatalog.BadOpArguments.At(path, biasProperty.NameSpan, name, "takes no 'bias' (only 'linear' does)"));
                return null;
            }
            bias = r.Boolean("bias", false);
        }
        return new RawOp(kind, inputs.ToArray(), spans.ToArray(), outputNode.Text, outputNode.Span, weight, outFeatures, opNode.Span, bias);
    }
}
