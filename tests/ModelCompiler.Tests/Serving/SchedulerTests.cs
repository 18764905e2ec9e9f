using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Serving.Scheduling;
using Xunit;

namespace ModelCompiler.Tests.Serving;

/// <summary>
/// The scheduler and block manager without a model: a shadow KV pool records which token each slot
/// holds, so every step checks that each scheduled sequence reads exactly its own tokens through its
/// table (prefix-cache hits and copy-on-write included).
/// </summary>
public class SchedulerTests
{
    private const int StopToken = 2;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Random_workload_with_shared_prefixes_cancellations_forks_and_preemption_keeps_the_invariants(int seed)
    {
        const int blockSize = 4, numBlocks = 24;
        var random = new Random(seed);
        var blocks = new BlockManager(numBlocks, blockSize);
        var scheduler = new Scheduler(blocks, new SchedulerOptions(MaxBatchTokens: 16, MaxSequences: 6, MaxContextTokens: 64, AgingStepsPerPriorityLevel: 4));
        var pool = new int[numBlocks * blockSize];
        int[] sharedPrefix = Enumerable.Range(0, 40).Select(_ => random.Next(3, 100)).ToArray();
        var all = new List<Sequence>();
        long nextId = 1;
        int numForked = 0, numCopies = 0;

        for (int step = 0; step < 600; step++)
        {
            if (step < 450 && random.Next(3) == 0)
            {
                int length = random.Next(1, 30);
                var prompt = random.Next(2) == 0 ? sharedPrefix[..length] : Enumerable.Range(0, length).Select(_ => random.Next(3, 100)).ToArray();
                int maxTokens = random.Next(1, 20);
                var parent = new Sequence(nextId++, prompt, maxTokens, new SamplingOptions(), random.Next(3), [StopToken]);
                if (random.Next(5) == 0)
                    for (int c = 1; c <= random.Next(1, 3); c++)
                        parent.PendingChildren.Add(new Sequence(nextId++, prompt, maxTokens, new SamplingOptions(), parent.Priority, [StopToken], c));
                all.Add(parent);
                all.AddRange(parent.PendingChildren);
                scheduler.Add(parent);
            }
            if (random.Next(10) == 0)
            {
                var live = all.Where(s => !s.IsFinished).ToArray();
                if (live.Length > 0) scheduler.Abort(live[random.Next(live.Length)]);
                ServingInvariants.Check(blocks, scheduler);
            }
            if (!scheduler.HasWork) continue;

            var scheduled = scheduler.Schedule();
            Assert.True(scheduled.NumBatchTokens <= scheduler.Options.MaxBatchTokens);
            Assert.True(scheduled.Scheduled.Count <= scheduler.Options.MaxSequences);
            Assert.Equal(scheduled.Scheduled.Count, scheduled.Scheduled.Select(s => s.Sequence).Distinct().Count());
            numCopies += scheduled.BlockCopies.Count;
            RunShadowForward(pool, blocks, scheduled, blockSize);
            scheduler.CompleteStep(scheduled);
            foreach (var s in scheduled.Scheduled.Where(s => s.Samples))
            {
                var parent = s.Sequence;
                if (parent.PendingChildren.Count > 0)
                    foreach (var child in scheduler.ForkChildren(parent)) { numForked++; scheduler.AppendToken(child, FakeToken(child)); }
                scheduler.AppendToken(parent, FakeToken(parent));
            }
            ServingInvariants.Check(blocks, scheduler);
        }

        Assert.False(scheduler.HasWork);
        Assert.All(all, s => Assert.True(s.IsFinished, $"{s}"));
        Assert.Equal(0, blocks.NumSequences);
        Assert.Equal(numBlocks, blocks.NumFreeBlocks);
        Assert.True(scheduler.NumPreemptions > 0, "the pool is small enough to preempt");
        Assert.True(blocks.NumPrefixCacheHitTokens > 0, "shared prefixes hit the cache");
        Assert.True(numForked > 0 && numCopies > 0, $"forks {numForked}, copies {numCopies}");
        // A sequence that finished by length generated exactly its tokens (recomputation kept them).
        Assert.All(all.Where(s => s.FinishReason == FinishReason.Length), s => Assert.Equal(s.MaxTokens, s.NumGeneratedTokens));
    }

    [Fact]
    public void A_long_prompt_is_prefilled_in_chunks_while_running_sequences_keep_decoding()
    {
        var blocks = new BlockManager(64, 4);
        var scheduler = new Scheduler(blocks, new SchedulerOptions(MaxBatchTokens: 8, MaxSequences: 4, MaxContextTokens: 128));
        var shortOne = new Sequence(1, [5, 6, 7], 50, new SamplingOptions());
        scheduler.Add(shortOne);
        Run(scheduler, 1);
        var longOne = new Sequence(2, Enumerable.Range(10, 30).ToArray(), 5, new SamplingOptions());
        scheduler.Add(longOne);
        for (int step = 0; step < 4; step++)
        {
            var scheduled = scheduler.Schedule();
            Assert.Equal(1, scheduled.Scheduled.Single(s => s.Sequence == shortOne).NumNewTokens);   // the decode is never stalled
            Assert.Equal(7, scheduled.Scheduled.Single(s => s.Sequence == longOne).NumNewTokens);
            Complete(scheduler, scheduled);
        }
        Assert.Equal(28, longOne.NumComputedTokens);
        Assert.Equal(0, longOne.NumGeneratedTokens);
    }

    [Fact]
    public void Waiting_requests_age_so_a_low_priority_one_overtakes_a_stream_of_high_priority_ones()
    {
        var blocks = new BlockManager(64, 4);
        var scheduler = new Scheduler(blocks, new SchedulerOptions(MaxBatchTokens: 64, MaxSequences: 1, MaxContextTokens: 128, AgingStepsPerPriorityLevel: 2));
        var low = new Sequence(1, [3, 4], 1, new SamplingOptions(), priority: 0);
        scheduler.Add(low);
        long id = 2;
        for (int step = 0; step < 40 && !low.IsFinished; step++)
        {
            scheduler.Add(new Sequence(id++, [5, 6], 1, new SamplingOptions(), priority: 5));
            Run(scheduler, 1);
        }
        Assert.True(low.IsFinished, "the low-priority request starved");
    }

    [Fact]
    public void A_cancelled_running_sequence_frees_its_blocks_at_once()
    {
        var blocks = new BlockManager(16, 4);
        var scheduler = new Scheduler(blocks, new SchedulerOptions(MaxBatchTokens: 64, MaxSequences: 4, MaxContextTokens: 128));
        var sequence = new Sequence(1, Enumerable.Range(3, 10).ToArray(), 10, new SamplingOptions());
        scheduler.Add(sequence);
        Run(scheduler, 2);
        Assert.Equal(3, blocks.NumUsedBlocks);
        scheduler.Abort(sequence);
        Assert.Equal(SequenceStatus.Cancelled, sequence.Status);
        Assert.Equal(0, blocks.NumUsedBlocks);
        Assert.False(scheduler.HasWork);
    }

    private static int FakeToken(Sequence sequence) =>
        (int)((sequence.Id * 7919 + sequence.NumTokens * 31) % 23) is var t && t == 0 ? StopToken : 3 + t;

    private static void Run(Scheduler scheduler, int numSteps)
    {
        for (int i = 0; i < numSteps; i++) Complete(scheduler, scheduler.Schedule());
    }

    private static void Complete(Scheduler scheduler, SchedulerStep step)
    {
        scheduler.CompleteStep(step);
        foreach (var s in step.Scheduled.Where(s => s.Samples)) scheduler.AppendToken(s.Sequence, 3 + (int)(s.Sequence.NumTokens % 50));
    }

    // Copies first, then writes each scheduled token into its slot; then every scheduled sequence must
    // read back exactly its tokens at positions [0, computed) through its table.
    private static void RunShadowForward(int[] pool, BlockManager blocks, SchedulerStep step, int blockSize)
    {
        foreach (var copy in step.BlockCopies)
            Array.Copy(pool, copy.SourceBlock * blockSize, pool, copy.DestinationBlock * blockSize, blockSize);
        foreach (var s in step.Scheduled)
        {
            var table = blocks.BlockTable(s.Sequence.Id);
            for (int p = s.StartPosition; p < s.StartPosition + s.NumNewTokens; p++)
                pool[table[p / blockSize] * blockSize + p % blockSize] = s.Sequence.Tokens[p];
        }
        foreach (var s in step.Scheduled)
        {
            var table = blocks.BlockTable(s.Sequence.Id);
            for (int p = 0; p < s.StartPosition + s.NumNewTokens; p++)
                Assert.True(pool[table[p / blockSize] * blockSize + p % blockSize] == s.Sequence.Tokens[p], $"{s.Sequence} reads a wrong token at position {p}");
        }
    }
}
