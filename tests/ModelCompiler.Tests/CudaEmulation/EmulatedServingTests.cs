using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Serving;
using ModelCompiler.Tests.Engine;
using ModelCompiler.Tests.Serving;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// The serving engine over <see cref="CudaModelRunner"/> on the emulator (KV pool and block tables in device
/// memory, decode steps as replayed graphs, copy-on-write block copies on the device), driven by the same
/// block manager and scheduler, against the same engine over the CPU <see cref="ModelRunner"/>.
/// </summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedServingTests
{
    /// <summary>The model's own budgets, and a tiny pool with a small token budget that forces chunked prefill (steps without logits) and preemption.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Concurrent_requests_with_a_shared_prefix_and_parallel_samples_stream_the_cpu_engines_tokens_and_free_every_block(bool tight)
    {
        int[] story = StoryTokens();
        var greedy = new SamplingOptions(Temperature: 0f);
        var random = new Random(3);
        // Wave 1: a long story prompt, a greedy n=3 request whose prompt ends inside a block (so each child's
        // first token copies the shared partial block), and a prompt of random tokens. Wave 2, once wave 1's
        // prompt blocks are cached: the story prompt extended (a prefix-cache hit of two full blocks) and a
        // sampled n=2 request, whose choices diverge and so must write into blocks of their own.
        GenerationRequest[] wave1 =
        [
            new(story[..40], 24, greedy),
            new(story[..21], 12, greedy, NumChoices: 3),
            new([1, .. Enumerable.Range(0, 17).Select(_ => random.Next(3, 512))], 10, greedy),
        ];
        GenerationRequest[] wave2 =
        [
            new(story[..52], 16, greedy),
            new(story[8..27], 12, new SamplingOptions(Temperature: 0.8f, TopP: 0.9f, Seed: 7), NumChoices: 2),
        ];

        CompiledModel engine = new Stories260KTestEngine();
        if (tight) engine = new ResizedModel(engine, engine.Config with { NumKvBlocks = 8, MaxBatchTokens = 24, MaxSequences = 6 });
        using var cpu = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, cpu.Weights);

        var expected = Serve(cpu, wave1, wave2, out long cpuHits, out long cpuPreemptions);
        var emulated = Serve(cuda, wave1, wave2, out long cudaHits, out long cudaPreemptions);
        Assert.Equal(cpuPreemptions, cudaPreemptions);
        if (tight) Assert.True(cpuPreemptions > 0, "the tiny pool should preempt");

        Assert.True(cpuHits >= 32, $"the extended story prompt should hit two cached blocks (hit {cpuHits} tokens)");
        Assert.Equal(cpuHits, cudaHits);
        // Two greedy children and one sampled child copy a shared partial block; under preemption some are recomputed unshared instead.
        Assert.True(cuda.NumBlockCopies >= (tight ? 1 : 3), $"the parallel samples should copy their shared partial blocks on the device ({cuda.NumBlockCopies} copies)");
        Assert.True(cuda.NumCapturedGraphs > 0, "decode steps should replay captured graphs");
        Assert.Equal(expected.Count, emulated.Count);
        for (int r = 0; r < expected.Count; r++)
        {
            Assert.True(expected[r].Length > 0);
            Assert.Equal(expected[r], emulated[r]);
        }
        // The greedy n=3 choices agree with each other; the sampled pair does not need to.
        Assert.Equal(expected[1], expected[2]);
        Assert.Equal(expected[1], expected[3]);
        Assert.Equal(0, cuda.Blocks.NumUsedBlocks);
        Assert.Equal(cuda.Blocks.NumBlocks, cuda.Blocks.NumFreeBlocks);
    }

    /// <summary>
    /// Seeded sampled requests (temperatures, top-k, top-p, a 2-choice request, one asking for log-probabilities)
    /// stream the CPU engine's tokens: the device samples each row with the uniform its sequence's generator
    /// drew on the host; only the rows of the log-probability request and of the forking parent come back.
    /// </summary>
    [Fact]
    public void Sampled_requests_with_seeds_stream_the_cpu_engines_tokens_with_the_rows_sampled_on_the_device()
    {
        int[] story = StoryTokens();
        GenerationRequest[] wave1 =
        [
            new(story[..30], 20, new SamplingOptions(Temperature: 1f, TopK: 40, Seed: 101)),
            new(story[3..19], 20, new SamplingOptions(Temperature: 0.7f, TopP: 0.95f, Seed: 102)),
            new(story[..12], 16, new SamplingOptions(Temperature: 1.3f, Seed: 103), NumChoices: 2),
        ];
        GenerationRequest[] wave2 =
        [
            new(story[5..40], 20, new SamplingOptions(Temperature: 0.9f, TopK: 8, TopP: 0.8f, Seed: 104)),
            new(story[..25], 12, new SamplingOptions(Temperature: 1f, TopP: 0.9f, Seed: 105), Logprobs: true),
            new(story[..20], 12, new SamplingOptions(Temperature: 0f)),
        ];
        var engine = new Stories260KTestEngine();
        using var cpu = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, cpu.Weights);

        var expected = Serve(cpu, wave1, wave2, out _, out _);
        var emulated = Serve(cuda, wave1, wave2, out _, out _);
        Assert.Equal(expected.Count, emulated.Count);
        for (int r = 0; r < expected.Count; r++) Assert.Equal(expected[r], emulated[r]);
        Assert.NotEqual(expected[2], expected[3]);   // the two seeded choices differ
        // Every sampled token but the child's first (drawn on the host from its parent's row) came from the device;
        // streams leave out a final stop token, which was sampled too.
        int streamedSampled = expected.Take(6).Sum(tokens => tokens.Length);
        Assert.InRange(cuda.NumRowsSampledOnDevice, streamedSampled - 1, streamedSampled + 5);
        Assert.Equal(0, cuda.NumRowsSampledOnHost);
    }

    [Fact]
    public void A_forked_sequence_decodes_over_its_device_copy_of_the_shared_partial_block_like_the_cpu_engine()
    {
        int[] story = StoryTokens();
        var engine = new Stories260KTestEngine();
        using var cpu = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, cpu.Weights);
        int vocab = engine.Config.VocabSize;
        // Sequence 0 prefills 20 tokens (a full block and 4 slots of a second); sequence 1 forks it, and its
        // first append copies the shared partial block: on each runner, into its own pool.
        var blocks = cpu.Blocks;
        var batch = cpu.CreateBatch();
        blocks.Allocate(0, 20);
        batch.AddSequence(story.AsSpan(0, 20), 0, blocks.BlockTable(0));
        cpu.Forward(batch);
        cuda.Forward(batch);
        blocks.Fork(0, 1);
        BlockCopy copy = blocks.Append(1, 21) ?? throw new InvalidOperationException("the shared partial block should be copied");
        Assert.Null(blocks.Append(0, 21));
        cpu.CopyKvBlock(copy.SourceBlock, copy.DestinationBlock);
        cuda.CopyKvBlock(copy.SourceBlock, copy.DestinationBlock);
        Assert.Equal(1, cuda.NumBlockCopies);

        // Different next tokens, so a missing or misplaced copy shows in sequence 1's logits.
        batch.Clear();
        batch.AddSequence(story.AsSpan(20, 1), 20, blocks.BlockTable(0));
        batch.AddSequence(story.AsSpan(30, 1), 20, blocks.BlockTable(1));
        EmulatedStories260KTests.AssertClose(cuda.Forward(batch), cpu.Forward(batch).ToArray(), vocab, "decode after the fork");

        Assert.Throws<ArgumentOutOfRangeException>(() => cuda.CopyKvBlock(0, engine.Config.NumKvBlocks));   // the padding block is not the host's
        Assert.Throws<ArgumentOutOfRangeException>(() => cuda.CopyKvBlock(-1, 0));
    }

    /// <summary>Runs both waves on a fresh engine over <paramref name="runner"/>; returns every choice's streamed tokens, request by request.</summary>
    private static List<int[]> Serve(IModelRunner runner, GenerationRequest[] wave1, GenerationRequest[] wave2, out long prefixHits, out long preemptions)
    {
        using var engine = new InferenceEngine(runner);
        var handles = wave1.Select(r => engine.TryAdd(r)!).ToList();
        for (int i = 0; i < 3; i++)
        {
            engine.Step();
            ServingInvariants.Check(runner.Blocks, engine.Scheduler);
        }
        handles.AddRange(wave2.Select(r => engine.TryAdd(r)!));
        for (int i = 0; i < 1000 && engine.Step(); i++) ServingInvariants.Check(runner.Blocks, engine.Scheduler);

        Assert.All(handles, h => Assert.True(h.IsCompleted));
        Assert.Equal(0, runner.Blocks.NumUsedBlocks);
        Assert.Equal(runner.Blocks.NumBlocks, engine.NumKvBlocksFree);
        prefixHits = engine.NumPrefixCacheHitTokens;
        preemptions = engine.NumPreemptions;
        var outputs = new List<int[]>();
        foreach (var handle in handles)
        {
            var events = handle.ReadAllAsync().ToBlockingEnumerable().ToList();
            for (int choice = 0; choice < handle.Request.NumChoices; choice++)
            {
                Assert.NotEqual(FinishReason.Cancelled, events.Single(e => e.ChoiceIndex == choice && e.Finish is not null).Finish);
                outputs.Add(events.Where(e => e.ChoiceIndex == choice && e.Finish is null).Select(e => e.TokenId).ToArray());
            }
        }
        return outputs;
    }
}
