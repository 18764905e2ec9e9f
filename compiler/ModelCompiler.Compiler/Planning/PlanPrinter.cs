using System.Linq;
using System.Text;
using ModelCompiler.Compiler.Graph;

namespace ModelCompiler.Compiler.Planning;

/// <summary>Renders a block graph and its kernel plan as text (the CLI's <c>dump-ir</c>).</summary>
internal static class PlanPrinter
{
    public static string Print(KernelPlan plan)
    {
        var sb = new StringBuilder();
        var m = plan.Model;
        var h = m.Hyper;
        sb.Append($"model {m.Name} ({m.Architecture}): dim {h.Dim}, hidden {h.HiddenDim}, {h.NumLayers} layers, {h.NumHeads} heads / {h.NumKvHeads} KV heads of {h.HeadDim}, vocab {h.VocabSize}, context {h.MaxSeqLen}\n");
        sb.Append($"\nblock graph ({m.Block.Ops.Count} ops, input '{m.Block.Input}', output '{m.Block.Output}'):\n");
        foreach (var op in m.Block.Ops)
            sb.Append($"  {op.Output} [T, {m.Block.Widths[op.Output]}] = {OpNames.Of(op.Kind)}({string.Join(", ", op.Inputs)}){(op.Weight is null ? "" : $" weight {op.Weight}")}\n");
        sb.Append($"\nkernels ({plan.Prologue.Count} + {plan.Block.Count} per layer + {plan.Epilogue.Count}):\n");
        void Steps(string title, System.Collections.Generic.IReadOnlyList<KernelStep> steps)
        {
            sb.Append($"  {title}:\n");
            foreach (var s in steps) sb.Append($"    {s.KernelName()}: {string.Join(" → ", s.Fuses)}\n      {s.Signature()}\n");
        }
        Steps("prologue", plan.Prologue);
        Steps("block (every layer)", plan.Block);
        Steps("epilogue", plan.Epilogue);
        sb.Append($"\narena: {plan.ArenaSizeInFloats} floats ({plan.ArenaSizeInFloats * 4L} bytes) for {m.Runtime.MaxBatchTokens} tokens\n");
        foreach (var b in plan.Buffers.OrderBy(b => b.OffsetInFloats))
            sb.Append($"  {b.OffsetInFloats,10} {b.Name} [{m.Runtime.MaxBatchTokens}, {b.Width}]\n");
        sb.Append($"\nweights: {plan.TotalWeights} table entries ({plan.GlobalWeightsBefore.Count} + {plan.LayerWeights.Count} per layer + {plan.GlobalWeightsAfter.Count})\n");
        foreach (var w in plan.LayerWeights) sb.Append($"  layers.N.{w.Name} {w.Typed} <- {string.Join(" | ", w.Sources)}\n");
        return sb.ToString();
    }
}
