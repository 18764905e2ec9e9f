using ModelCompiler.Runtime;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Serving.Scheduling;
using Xunit;

namespace ModelCompiler.Tests.Serving;

/// <summary>
/// A compiled model with different runtime budgets (a tiny KV pool, a small token budget); the forward pass
/// and the CUDA plan are the inner model's (budgets at most the compiled ones: the plan's arena and scratch
/// are sized for the compiled token budget).
/// </summary>
internal sealed class ResizedModel(CompiledModel inner, ModelConfig config) : CompiledModel
{
    public override ModelCompiler.Runtime.Cuda.CudaLaunchPlan? CudaPlan => inner.CudaPlan;
    public override ModelConfig Config => config;
    public override IReadOnlyList<WeightSpec> WeightSpecs => inner.WeightSpecs;
    public override int ArenaSizeInFloats => inner.ArenaSizeInFloats;
    public override void Forward(ForwardBatch batch, ModelWeights weights, PagedKvCache kvCache, Span<float> arena, Span<float> logits) =>
        inner.Forward(batch, weights, kvCache, arena, logits);
}

internal static class ServingInvariants
{
    /// <summary>
    /// Exactly the running sequences hold tables; each table covers its computed tokens and holds no block
    /// twice; every block's reference count equals its number of holders (so a cached free block is in no
    /// table, and nothing leaked or was freed twice); free + used = total.
    /// </summary>
    public static void Check(BlockManager blocks, Scheduler scheduler)
    {
        var holders = new int[blocks.NumBlocks];
        foreach (var sequence in scheduler.Running)
        {
            Assert.Equal(SequenceStatus.Running, sequence.Status);
            var table = blocks.BlockTable(sequence.Id).ToArray();
            Assert.Equal(table.Length, table.Distinct().Count());
            Assert.True(sequence.NumComputedTokens <= sequence.NumTokens, $"{sequence}");
            Assert.True(table.Length >= blocks.BlocksFor(sequence.NumComputedTokens), $"{sequence}: table of {table.Length} blocks");
            foreach (int block in table) holders[block]++;
        }
        foreach (var sequence in scheduler.Waiting)
        {
            Assert.Equal(SequenceStatus.Waiting, sequence.Status);
            Assert.False(blocks.Contains(sequence.Id), $"waiting {sequence} holds a table");
        }
        Assert.Equal(scheduler.Running.Count, blocks.NumSequences);
        int used = 0;
        for (int block = 0; block < blocks.NumBlocks; block++)
        {
            Assert.Equal(holders[block], blocks.ReferenceCount(block));
            if (holders[block] > 0) used++;
        }
        Assert.Equal(used, blocks.NumUsedBlocks);
        Assert.Equal(blocks.NumBlocks, used + blocks.NumFreeBlocks);
        int reserved = scheduler.Running.Sum(s => s.PendingChildren.Count);
        Assert.True(scheduler.Running.Count + reserved <= scheduler.Options.MaxSequences);
    }
}
