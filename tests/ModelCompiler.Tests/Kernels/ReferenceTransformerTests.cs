using ModelCompiler.Runtime;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Reference;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// End to end: the kernels composed into a forward pass (<see cref="KernelForwardPass"/>) against the double
/// reference, three sequences batched together with chunked prefill and decode steps over paged,
/// shuffled block tables from the real <see cref="BlockManager"/>. Agreement validates both sides.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class ReferenceTransformerTests
{
    private const double LogitsTolerance = 1e-4;
    private const int TokensPerSequence = 20;

    [Theory]
    [InlineData(36, 6, 2, 50, 67, RopeStyle.Interleaved, false)]
    [InlineData(36, 6, 2, 50, 67, RopeStyle.Half, true)]
    [InlineData(68, 2, 1, 33, 101, RopeStyle.Half, false)]
    [InlineData(48, 4, 4, 64, 64, RopeStyle.Interleaved, true)]
    public void Kernel_forward_pass_matches_the_reference_over_twenty_positions_of_three_batched_sequences(int dim, int numHeads, int numKvHeads, int hidden, int vocab, RopeStyle style, bool tied)
    {
        using var model = TinyModel.Create(seed: dim + vocab, dim, numHeads, numKvHeads, hidden, vocab, numLayers: 3, style, tied);
        var c = model.Config;
        var random = new Random(11);
        var manager = new BlockManager(c.NumKvBlocks, c.KvBlockSize);
        ShuffleFreeList(manager, random);
        var cache = new PagedKvCache(c.NumLayers, c.NumKvBlocks, c.KvBlockSize, c.KvDim);
        var batch = new ForwardBatch(c.MaxBatchTokens, c.MaxSequences, c.MaxBlocksPerSequence, c.KvBlockSize);
        var logits = new float[c.MaxBatchTokens * c.VocabSize];

        const int numSequences = 3;
        int[] firstStep = [0, 0, 2];   // the third sequence arrives while the others are decoding
        var tokens = Enumerable.Range(0, numSequences).Select(_ => Enumerable.Range(0, TokensPerSequence).Select(_ => random.Next(vocab)).ToArray()).ToArray();
        var references = Enumerable.Range(0, numSequences).Select(_ => new ReferenceTransformer(c, model.Checkpoint)).ToArray();
        var numDone = new int[numSequences];
        double maxError = 0;

        for (int step = 0; numDone.Any(n => n < TokensPerSequence); step++)
        {
            batch.Clear();
            var sequenceOfBatchSlot = new List<int>();
            for (int s = 0; s < numSequences; s++)
            {
                if (step < firstStep[s] || numDone[s] == TokensPerSequence) continue;
                // A prompt chunk of up to 7 tokens first, then mostly single decode tokens and some short chunks.
                int chunk = Math.Min(TokensPerSequence - numDone[s], numDone[s] == 0 ? random.Next(1, 8) : random.Next(3) == 0 ? random.Next(2, 5) : 1);
                int newTotal = numDone[s] + chunk;
                if (numDone[s] == 0) { Assert.True(manager.CanAllocate(newTotal)); manager.Allocate(s, newTotal); }
                else { Assert.True(manager.CanAppend(s, newTotal)); manager.Append(s, newTotal); }
                batch.AddSequence(tokens[s].AsSpan(numDone[s], chunk), numDone[s], manager.BlockTable(s), allLogits: true);
                sequenceOfBatchSlot.Add(s);
                numDone[s] = newTotal;
            }

            KernelForwardPass.Forward(model, batch, cache, logits);

            for (int row = 0; row < batch.NumLogits; row++)
            {
                int t = batch.LogitsTokenIndices[row];
                int s = sequenceOfBatchSlot[batch.SequenceOfToken[t]];
                int position = batch.Positions[t];
                var expected = references[s].Forward(tokens[s][position], position);
                for (int i = 0; i < vocab; i++)
                {
                    double error = Math.Abs(logits[row * vocab + i] - expected[i]);
                    maxError = Math.Max(maxError, error);
                    Assert.True(error <= LogitsTolerance, $"Step {step}, sequence {s}, position {position}, logit {i}: kernels {logits[row * vocab + i]}, reference {expected[i]}.");
                }
            }
        }

        for (int s = 0; s < numSequences; s++) manager.Free(s);
        Assert.Equal(c.NumKvBlocks, manager.NumFreeBlocks);
        // Agreement is only meaningful if the logits are not all tiny.
        references[0].Reset();
        Assert.True(references[0].Forward(tokens[0][0], 0).Select(Math.Abs).Max() > 0.1f);
        Assert.True(maxError < LogitsTolerance);
        // Visible with --logger "console;verbosity=detailed"; a drift toward the tolerance shows up here first.
        Console.WriteLine($"max |kernel - reference| logit error: {maxError:E2}");
    }

    [Fact]
    public void Reference_needs_positions_in_order_and_starts_again_after_Reset()
    {
        using var model = TinyModel.Create(seed: 3, dim: 16, numHeads: 2, numKvHeads: 1, hiddenDim: 24, vocabSize: 10, numLayers: 1, RopeStyle.Interleaved, tiedEmbedding: false);
        var reference = new ReferenceTransformer(model.Config, model.Checkpoint);
        var first = reference.Forward(4, 0);
        reference.Forward(5, 1);
        Assert.Throws<InvalidOperationException>(() => reference.Forward(6, 3));
        reference.Reset();
        Assert.Equal(first, reference.Forward(4, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => reference.Forward(10, 1));
    }

    [Fact]
    public void Reference_reports_a_missing_or_misshapen_tensor_by_name()
    {
        using var model = TinyModel.Create(seed: 3, dim: 16, numHeads: 2, numKvHeads: 1, hiddenDim: 24, vocabSize: 10, numLayers: 1, RopeStyle.Interleaved, tiedEmbedding: true);
        var untied = model.Config with { TiedEmbedding = false };
        var missing = Assert.Throws<ModelLoadException>(() => new ReferenceTransformer(untied, model.Checkpoint));
        Assert.Contains("output.weight", missing.Message);

        var wider = model.Config with { HiddenDim = 25 };
        var misshapen = Assert.Throws<ModelLoadException>(() => new ReferenceTransformer(wider, model.Checkpoint));
        Assert.Contains("layers.0.feed_forward.w1.weight", misshapen.Message);
    }

    /// <summary>Permutes the free list through the public API, so tables are neither contiguous nor in id order.</summary>
    private static void ShuffleFreeList(BlockManager manager, Random random)
    {
        var ids = Enumerable.Range(0, manager.NumBlocks).Select(i => 1000L + i).ToArray();
        foreach (long id in ids) manager.Allocate(id, manager.BlockSize);
        random.Shuffle(ids);
        foreach (long id in ids) manager.Free(id);
    }
}
