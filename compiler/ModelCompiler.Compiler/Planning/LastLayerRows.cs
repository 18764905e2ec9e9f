using System.Collections.Generic;
using System.Linq;

namespace ModelCompiler.Compiler.Planning;

/// <summary>
/// Where the last layer may stop computing the rows that need no logits. Past the last layer's KV write nothing reads
/// a token's row except the final norm and LM head, which read only the rows that need logits (the last token of a
/// prompt, a decode token); so from the block's attention on, the last layer can run on those rows alone, compacted
/// to the front of the buffers in order. For a 128-token prompt that skips 127 rows of the last layer's attention,
/// output projection and MLP (about 1/16 of a Llama prefill's work). Found only for blocks with one attention step
/// and, after it, no step that reads the batch's positions (RoPE, another attention).
/// </summary>
/// <param name="AttentionIndex">Index in <see cref="KernelPlan.Block"/> of the attention step: its KV write (if any) still takes every row, its attention only the logits rows.</param>
/// <param name="Compacted">Buffers that must be compacted to the logits rows once the attention is done: every buffer still to be read after it that was written before it (the residual stream always: the logits read it).</param>
/// <param name="RowsOnlyWeights">The block's matrices after the attention, which the last layer multiplies for the logits rows only (the cost model counts them so).</param>
internal sealed record LastLayerRows(int AttentionIndex, IReadOnlyList<Buffer> Compacted, IReadOnlyList<WeightRef> RowsOnlyWeights)
{
    /// <summary>The plan's pruning point, or null when its block does not allow one.</summary>
    public static LastLayerRows? Of(KernelPlan plan)
    {
        var block = plan.Block;
        int attention = -1;
        for (int i = 0; i < block.Count; i++)
        {
            if (block[i] is not AttentionStep) continue;
            if (attention >= 0) return null;
            attention = i;
        }
        if (attention < 0) return null;
        for (int i = attention + 1; i < block.Count; i++)
            if (block[i] is QkvStep or RopeStep or AttentionStep or EmbeddingStep) return null;

        var output = ((AttentionStep)block[attention]).Output;
        var before = new HashSet<Buffer>(block.Take(attention + 1).SelectMany(MemoryPlanner.Touched));
        var after = new HashSet<Buffer>(block.Skip(attention + 1).Concat(plan.Epilogue).SelectMany(MemoryPlanner.Touched));
        var residual = plan.Buffers[plan.ResidualBufferIndex];
        // Declaration order, so that the generated code does not depend on hashing.
        var compacted = plan.Buffers.Where(b => !ReferenceEquals(b, output) && (ReferenceEquals(b, residual) || before.Contains(b) && after.Contains(b))).ToList();
        var rowsOnlyWeights = block.Skip(attention + 1).OfType<LinearStep>().Select(s => s.Weight).ToList();
        return new LastLayerRows(attention, compacted, rowsOnlyWeights);
    }
}
