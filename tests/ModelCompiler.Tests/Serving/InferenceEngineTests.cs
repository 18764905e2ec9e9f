using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Serving;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.Serving;

/// <summary>
/// The serving engine on the real Stories260K model: every request's tokens equal what
/// <see cref="TextGenerator"/> produces for it alone with the same seed, under continuous batching,
/// chunked prefill, prefix caching, preemption, parallel sampling and cancellation.
/// </summary>
public class InferenceEngineTests
{
    private static readonly SamplingOptions Sampled = new(Temperature: 0.8f, TopP: 0.9f);

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    public void Random_arrivals_with_chunked_prefill_preemption_and_cancellation_match_each_request_alone(int seed)
    {
        var random = new Random(seed);
        // A tiny pool (10 blocks of 16 for up to 6 sequences) and a 24-token budget force preemption and chunking.
        using var runner = Runner(numKvBlocks: 10, maxBatchTokens: 24, maxSequences: 6);
        using var engine = new InferenceEngine(runner);
        int[] story = StoryTokens();
        var handles = new List<GenerationHandle>();
        for (int step = 0; step < 2000 && (handles.Count < 16 || engine.Scheduler.HasWork); step++)
        {
            if (handles.Count < 16 && random.Next(3) == 0)
            {
                int length = random.Next(2, 60);
                int[] prompt = random.Next(3) > 0 ? story[..length] : [1, .. Enumerable.Range(0, length).Select(_ => random.Next(3, 512))];
                var request = new GenerationRequest(prompt, random.Next(4, 24), Sampled with { Seed = (ulong)random.Next() },
                    Priority: random.Next(3), NumChoices: random.Next(6) == 0 ? 2 : 1);
                handles.Add(engine.TryAdd(request)!);
            }
            if (random.Next(25) == 0 && handles.Count > 0) handles[random.Next(handles.Count)].Cancel();
            engine.Step();
            ServingInvariants.Check(runner.Blocks, engine.Scheduler);
        }

        Assert.All(handles, h => Assert.True(h.IsCompleted));
        Assert.Equal(0, runner.Blocks.NumUsedBlocks);
        Assert.Equal(runner.Blocks.NumBlocks, engine.NumKvBlocksFree);
        Assert.True(engine.NumPreemptions > 0, "the tiny pool should preempt");
        Assert.True(engine.NumPrefixCacheHitTokens > 0, "prompts sharing the story's prefix should hit the cache");

        using var alone = AloneGenerator();
        foreach (var handle in handles)
        {
            var events = Events(handle);
            for (int choice = 0; choice < handle.Request.NumChoices; choice++)
            {
                var tokens = events.Where(e => e.ChoiceIndex == choice && e.Finish is null).Select(e => e.TokenId).ToArray();
                var finish = events.Single(e => e.ChoiceIndex == choice && e.Finish is not null).Finish;
                var expected = alone.Generate(handle.Request, choice);
                if (finish == FinishReason.Cancelled) Assert.Equal(expected.Take(tokens.Length), tokens);
                else Assert.Equal(expected, tokens);
            }
        }
    }

    [Fact]
    public void A_second_request_with_the_same_long_prompt_reuses_the_cached_blocks_and_produces_the_same_output()
    {
        using var runner = Runner();
        using var engine = new InferenceEngine(runner);
        int[] prompt = StoryTokens()[..65];
        var request = new GenerationRequest(prompt, 20, Sampled with { Seed = 5 }, NumTopLogprobs: 3);
        var first = engine.TryAdd(request)!;
        RunToCompletion(engine);
        long hitsBefore = engine.NumPrefixCacheHitTokens;
        var second = engine.TryAdd(request)!;
        RunToCompletion(engine);

        Assert.Equal(0, first.NumCachedPromptTokens);
        Assert.Equal(64, second.NumCachedPromptTokens);    // four full blocks; the last token is computed again
        Assert.Equal(64, engine.NumPrefixCacheHitTokens - hitsBefore);
        var a = Events(first);
        var b = Events(second);
        Assert.Equal(a.Select(e => e.TokenId), b.Select(e => e.TokenId));
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Logprob, b[i].Logprob, 1e-5);
            Assert.Equal(a[i].TopLogprobs.Select(t => t.TokenId), b[i].TopLogprobs.Select(t => t.TokenId));
        }
        using var alone = AloneGenerator();
        Assert.Equal(alone.Generate(request, 0), b.Where(e => e.Finish is null).Select(e => e.TokenId));
        Assert.Equal(0, runner.Blocks.NumUsedBlocks);
    }

    [Fact]
    public void Parallel_samples_share_the_prompt_blocks_copy_the_partial_one_and_each_equals_a_single_request_with_its_seed()
    {
        using var runner = Runner();
        using var engine = new InferenceEngine(runner);
        int[] prompt = StoryTokens()[..21];   // one full block and a partial one
        var request = new GenerationRequest(prompt, 16, new SamplingOptions(Temperature: 1f, Seed: 99), NumChoices: 3);
        var handle = engine.TryAdd(request)!;

        engine.Step();   // prefill; the children fork the parent's table
        var choices = handle.Choices;
        var tables = choices.Select(c => runner.Blocks.BlockTable(c.Id).ToArray()).ToArray();
        Assert.All(tables, t => Assert.Equal(tables[0], t));
        Assert.Equal(3, runner.Blocks.ReferenceCount(tables[0][0]));
        engine.Step();   // each writes position 21 into the shared partial block: two copies, the last holder keeps it
        var after = choices.Where(c => !c.IsFinished).Select(c => runner.Blocks.BlockTable(c.Id).ToArray()).ToArray();
        Assert.All(after, t => Assert.Equal(tables[0][0], t[0]));
        Assert.Equal(after.Length, after.Select(t => t[1]).Distinct().Count());

        RunToCompletion(engine);
        var events = Events(handle);
        using var alone = AloneGenerator();
        var outputs = Enumerable.Range(0, 3).Select(c => events.Where(e => e.ChoiceIndex == c && e.Finish is null).Select(e => e.TokenId).ToArray()).ToArray();
        for (int c = 0; c < 3; c++) Assert.Equal(alone.Generate(request, c), outputs[c]);
        Assert.NotEqual(outputs[0], outputs[1]);
        Assert.Equal(0, runner.Blocks.NumUsedBlocks);
    }

    [Fact]
    public void Cancellation_and_a_passed_deadline_free_the_blocks_within_one_step()
    {
        using var runner = Runner();
        using var engine = new InferenceEngine(runner);
        var keep = engine.TryAdd(new GenerationRequest(StoryTokens()[..30], 50, Sampled))!;
        var cancel = engine.TryAdd(new GenerationRequest(StoryTokens()[..40], 50, Sampled))!;
        engine.Step();
        engine.Step();
        int usedBefore = runner.Blocks.NumUsedBlocks;
        cancel.Cancel();
        engine.Step();
        Assert.True(cancel.IsCompleted);
        Assert.False(runner.Blocks.Contains(cancel.Choices[0].Id));
        Assert.Equal(FinishReason.Cancelled, Events(cancel).Last().Finish);
        Assert.True(runner.Blocks.NumUsedBlocks < usedBefore);

        var late = engine.TryAdd(new GenerationRequest(StoryTokens()[..10], 50, Sampled, Deadline: DateTimeOffset.UtcNow.AddDays(-1)))!;
        engine.Step();
        Assert.True(late.IsCompleted);
        Assert.Equal(FinishReason.Cancelled, Events(late).Single().Finish);
        keep.Cancel();
        engine.Step();
        Assert.Equal(0, runner.Blocks.NumUsedBlocks);
        Assert.Equal(0, engine.NumRunningSequences);
        Assert.Equal(0, engine.NumQueuedRequests);
    }

    [Fact]
    public void A_full_queue_refuses_new_requests_until_one_is_admitted()
    {
        using var runner = Runner();
        using var engine = new InferenceEngine(runner, new InferenceEngineOptions { MaxQueuedRequests = 2 });
        var request = new GenerationRequest(StoryTokens()[..8], 3, Sampled);
        Assert.NotNull(engine.TryAdd(request));
        Assert.True(engine.TryStart(request, out _));
        Assert.False(engine.TryStart(request, out var refused));
        Assert.Null(refused);
        Assert.Equal(2, engine.Metrics.QueueDepth);
        engine.Step();
        Assert.Equal(0, engine.NumQueuedRequests);
        Assert.NotNull(engine.TryAdd(request));
        Assert.Throws<ArgumentException>(() => engine.TryAdd(request with { MaxTokens = 0 }));
        Assert.Throws<ArgumentException>(() => engine.TryAdd(request with { PromptTokens = [] }));
        Assert.Throws<ArgumentException>(() => engine.TryAdd(request with { PromptTokens = [1, 512] }));
    }

    [Fact]
    public void A_smaller_step_budget_chunks_prompts_under_it_and_changes_no_token()
    {
        using var runner = Runner();   // the description's budget: 512 tokens, 16 sequences
        using var engine = new InferenceEngine(runner, new InferenceEngineOptions { MaxBatchTokens = 20 });
        Assert.Equal(20, engine.Scheduler.Options.MaxBatchTokens);
        int[] story = StoryTokens();
        // Prompts shifted by a token each, so that no prompt block is shared through the prefix cache.
        var requests = Enumerable.Range(0, 3).Select(i => new GenerationRequest([1, .. story[(1 + i)..(45 + i)]], 6, Sampled with { Seed = (ulong)i })).ToArray();
        var handles = requests.Select(r => engine.TryAdd(r)!).ToArray();
        RunToCompletion(engine);

        // 135 prompt tokens at most 20 a step need at least 7 steps before the last first token, then 5 more decodes;
        // under the full budget it would be one prefill step and 5 decodes.
        Assert.True(engine.Scheduler.NumSteps >= 12, $"{engine.Scheduler.NumSteps} steps: the prompts were not chunked under the budget");
        using var alone = AloneGenerator();
        for (int i = 0; i < requests.Length; i++)
            Assert.Equal(alone.Generate(requests[i], 0), Events(handles[i]).Where(e => e.Finish is null).Select(e => e.TokenId).ToArray());
        Assert.Equal(0, runner.Blocks.NumUsedBlocks);
    }

    [Theory]
    [InlineData(15)]    // fewer than the 16 sequences a step runs: some running sequence could not decode
    [InlineData(513)]   // more than the buffers hold
    public void A_step_budget_outside_what_the_model_can_run_is_refused(int budget)
    {
        using var runner = Runner();
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new InferenceEngine(runner, new InferenceEngineOptions { MaxBatchTokens = budget }));
        Assert.Contains("between 16", error.Message);
        Assert.Contains("and 512", error.Message);
    }

    [Fact]
    public async Task The_background_loop_serves_concurrent_requests_and_streams_their_tokens()
    {
        using var runner = Runner();
        var engine = new InferenceEngine(runner);
        engine.Start();
        int[] story = StoryTokens();
        var requests = Enumerable.Range(0, 6).Select(i => new GenerationRequest(story[..(10 + 7 * i)], 12, Sampled with { Seed = (ulong)i })).ToArray();
        var outputs = await Task.WhenAll(requests.Select(r => Task.Run(async () =>
        {
            var stream = engine.TryAdd(r)!;
            var tokens = new List<int>();
            await foreach (var e in stream.ReadAllAsync())
                if (e.Finish is null) tokens.Add(e.TokenId);
            return tokens.ToArray();
        })));
        engine.Dispose();
        using var alone = AloneGenerator();
        for (int i = 0; i < requests.Length; i++) Assert.Equal(alone.Generate(requests[i], 0), outputs[i]);
        Assert.Equal(0, runner.Blocks.NumUsedBlocks);
        Assert.Equal(outputs.Sum(o => o.Length), engine.NumGeneratedTokens);
    }

    private static ModelRunner Runner(int? numKvBlocks = null, int? maxBatchTokens = null, int? maxSequences = null)
    {
        var inner = new Stories260KTestEngine();
        var config = inner.Config with
        {
            NumKvBlocks = numKvBlocks ?? inner.Config.NumKvBlocks,
            MaxBatchTokens = maxBatchTokens ?? inner.Config.MaxBatchTokens,
            MaxSequences = maxSequences ?? inner.Config.MaxSequences,
        };
        return new ModelRunner(new ResizedModel(inner, config), OpenStories());
    }

    private static void RunToCompletion(InferenceEngine engine)
    {
        for (int i = 0; i < 10_000 && engine.Step(); i++) { }
    }

    private static List<GenerationEvent> Events(GenerationHandle handle) => handle.ReadAllAsync().ToBlockingEnumerable().ToList();

    private static AloneReference AloneGenerator() => new();

    /// <summary>Each request alone, through the plain single-sequence <see cref="TextGenerator"/> on a runner of its own.</summary>
    private sealed class AloneReference : IDisposable
    {
        private readonly ModelRunner _runner = new(new Stories260KTestEngine(), OpenStories());
        private readonly TextGenerator _generator;

        public AloneReference() => _generator = new TextGenerator(_runner);

        /// <summary>The tokens choice <paramref name="choice"/> would stream: the end-of-text token that stops it is not reported.</summary>
        public int[] Generate(GenerationRequest request, int choice)
        {
            var tokens = new List<int>();
            var sampling = request.Sampling with { Seed = InferenceEngine.ChoiceSeed(request.Sampling.Seed, choice) };
            _generator.Generate(request.PromptTokens, request.MaxTokens, new Sampler(_runner.Config.VocabSize, sampling), tokens.Add);
            if (tokens.Count > 0 && tokens[^1] is TextGenerator.Bos or TextGenerator.Eos) tokens.RemoveAt(tokens.Count - 1);
            return tokens.ToArray();
        }

        public void Dispose() => _runner.Dispose();
    }
}
