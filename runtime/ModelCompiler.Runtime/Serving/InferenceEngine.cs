using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Serving.Scheduling;

namespace ModelCompiler.Runtime.Serving;

/// <summary>The serving engine's few knobs; the budgets come from the model's <see cref="ModelConfig"/>.</summary>
public sealed record InferenceEngineOptions
{
    /// <summary>Most requests submitted but not yet admitted; beyond it <see cref="InferenceEngine.TryAdd"/> returns null (HTTP 429).</summary>
    public int MaxQueuedRequests { get; init; } = 256;
    /// <summary>A waiting request gains one priority level per this many engine steps, so none starves.</summary>
    public int AgingStepsPerPriorityLevel { get; init; } = 32;
    /// <summary>Tokens that end every choice besides a request's own stop tokens (llama2.c vocabularies: BOS and EOS).</summary>
    public IReadOnlyList<int> EndOfTextTokenIds { get; init; } = new[] { TextGenerator.Bos, TextGenerator.Eos };
    /// <summary>
    /// Tokens one step may compute (decodes cost one, prefill chunks their length); null: the model's
    /// <see cref="ModelConfig.MaxBatchTokens"/>, the most its buffers hold. A smaller budget bounds how long
    /// one step (and so every running stream's next token) can be held up by other requests' prompts, at the
    /// cost of more passes over the weights for long prompts. Between the model's MaxSequences (so every
    /// running sequence can decode each step) and its MaxBatchTokens.
    /// </summary>
    public int? MaxBatchTokens { get; init; }

    /// <summary>The step budget for <paramref name="config"/>: <see cref="MaxBatchTokens"/> checked against its range, or the model's.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The budget is outside [MinBatchTokens, config.MaxBatchTokens].</exception>
    public int BatchTokensFor(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (MaxBatchTokens is not int budget) return config.MaxBatchTokens;
        if (!AllowsBatchTokens(config, budget))
            throw new ArgumentOutOfRangeException(nameof(MaxBatchTokens), budget,
                $"the step token budget must be between {MinBatchTokens(config)} (the sequences a step runs) and {config.MaxBatchTokens} (the model's maxBatchTokens), got {budget}");
        return budget;
    }

    /// <summary>The smallest step budget allowed for <paramref name="config"/>: one token per running sequence.</summary>
    public static int MinBatchTokens(ModelConfig config) => Math.Min(config.MaxSequences, config.MaxBatchTokens);

    /// <summary>True when <paramref name="budget"/> lies in [<see cref="MinBatchTokens"/>, <paramref name="config"/>'s MaxBatchTokens].</summary>
    public static bool AllowsBatchTokens(ModelConfig config, int budget) => budget >= MinBatchTokens(config) && budget <= config.MaxBatchTokens;
}

/// <summary>
/// The serving engine: continuous batching of many requests over one <see cref="IModelRunner"/> (the CPU
/// <see cref="ModelRunner"/>, or the CUDA runner with its KV pool on the device). A step is
/// schedule (<see cref="Scheduler"/>) → run (<see cref="ServingModelRunner"/>) → post-process (sample, stop,
/// stream, free). Requests come in from any thread (<see cref="TryAdd"/>); a background thread
/// (<see cref="Start"/>) steps while there is work, or a caller drives <see cref="Step"/> itself.
/// </summary>
/// <remarks>
/// The engine uses the runner's own <see cref="IModelRunner.Blocks"/>, the one block manager of its KV pool:
/// while an engine runs over a runner, nothing else (a <see cref="TextGenerator"/>) may use that runner.
/// Prefix caching is always on. Everything except submission, cancellation and the counters belongs to
/// the step thread; a lock serialises <see cref="Step"/> calls.
/// </remarks>
public sealed class InferenceEngine : IGenerationBackend, IDisposable
{
    private readonly IModelRunner _runner;
    private readonly bool _ownsRunner;
    private int _runnerDisposed;
    private readonly ServingModelRunner _modelRunner;
    private readonly Scheduler _scheduler;
    private readonly InferenceEngineOptions _options;
    private readonly object _stepLock = new();
    private readonly object _submitLock = new();
    private readonly ConcurrentQueue<GenerationHandle> _incoming = new();
    private readonly ConcurrentQueue<GenerationHandle> _cancellations = new();
    private readonly AutoResetEvent _wake = new(false);
    // Step-thread state: live requests and the request of each sequence.
    private readonly List<GenerationHandle> _live = new();
    private readonly Dictionary<Sequence, GenerationHandle> _handleOfSequence = new();
    private readonly HashSet<GenerationHandle> _admitted = new();
    private Thread? _loop;
    private volatile bool _stopping;
    private long _nextSequenceId;
    private int _numQueuedRequests;
    // Counters, written by the step thread and read by any.
    private int _numRunningSequences, _numKvBlocksUsed, _numKvBlocksFree;
    private long _numPrefixCacheQueryTokens, _numPrefixCacheHitTokens, _numPreemptions, _numPromptTokens, _numGeneratedTokens;

    /// <summary>
    /// Creates an engine over <paramref name="runner"/>. The caller keeps owning the runner and disposes it
    /// after the engine, unless <paramref name="ownsRunner"/>: then <see cref="Dispose"/> disposes it once the
    /// loop has stopped (what <c>serve</c> does, so a GPU runner frees its device memory on shutdown).
    /// </summary>
    public InferenceEngine(IModelRunner runner, InferenceEngineOptions? options = null, bool ownsRunner = false)
    {
        ArgumentNullException.ThrowIfNull(runner);
        _runner = runner;
        _ownsRunner = ownsRunner;
        _options = options ?? new InferenceEngineOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(_options.MaxQueuedRequests);
        var c = runner.Config;
        _scheduler = new Scheduler(runner.Blocks, new SchedulerOptions(_options.BatchTokensFor(c), c.MaxSequences, c.MaxSeqLen, _options.AgingStepsPerPriorityLevel));
        _modelRunner = new ServingModelRunner(runner);
        _numKvBlocksFree = runner.Blocks.NumFreeBlocks;
        _numKvBlocksUsed = runner.Blocks.NumUsedBlocks;
    }

    /// <inheritdoc />
    public string ModelName => _runner.Config.Name;
    /// <inheritdoc />
    public int MaxContextTokens => _runner.Config.MaxSeqLen;
    /// <inheritdoc />
    public bool IsReady => !_stopping;

    /// <summary>The scheduler (for tests and diagnostics; touch it only from the step thread).</summary>
    public Scheduler Scheduler => _scheduler;

    /// <summary>Requests submitted and not yet admitted (waiting for their first step).</summary>
    public int NumQueuedRequests => Volatile.Read(ref _numQueuedRequests);
    /// <summary>Sequences running after the last step.</summary>
    public int NumRunningSequences => Volatile.Read(ref _numRunningSequences);
    /// <summary>KV blocks held by sequences after the last step.</summary>
    public int NumKvBlocksUsed => Volatile.Read(ref _numKvBlocksUsed);
    /// <summary>KV blocks free (cached ones included) after the last step.</summary>
    public int NumKvBlocksFree => Volatile.Read(ref _numKvBlocksFree);
    /// <summary>Prompt tokens looked up in the prefix cache (recomputations after preemption included).</summary>
    public long NumPrefixCacheQueryTokens => Volatile.Read(ref _numPrefixCacheQueryTokens);
    /// <summary>Of <see cref="NumPrefixCacheQueryTokens"/>, the tokens found cached.</summary>
    public long NumPrefixCacheHitTokens => Volatile.Read(ref _numPrefixCacheHitTokens);
    /// <summary>Preemptions so far.</summary>
    public long NumPreemptions => Volatile.Read(ref _numPreemptions);
    /// <summary>Prompt tokens of admitted requests (each request once, whatever its number of choices).</summary>
    public long NumPromptTokens => Volatile.Read(ref _numPromptTokens);
    /// <summary>Tokens generated and streamed, over all choices.</summary>
    public long NumGeneratedTokens => Volatile.Read(ref _numGeneratedTokens);

    /// <inheritdoc />
    public EngineMetrics Metrics => new(NumQueuedRequests, NumRunningSequences, NumKvBlocksUsed, NumKvBlocksFree,
        NumPrefixCacheQueryTokens, NumPrefixCacheHitTokens, NumPreemptions, NumPromptTokens, NumGeneratedTokens);

    /// <summary>The seed of choice <paramref name="choiceIndex"/> of a request seeded <paramref name="requestSeed"/>: choice 0 uses the request's seed, the others derived ones.</summary>
    public static ulong ChoiceSeed(ulong requestSeed, int choiceIndex) =>
        choiceIndex == 0 ? requestSeed : new SplitMix64(requestSeed ^ (0xD1B54A32D192ED03UL * (ulong)choiceIndex)).NextUInt64();

    /// <inheritdoc />
    public bool TryStart(GenerationRequest request, out IGenerationStream? stream)
    {
        stream = TryAdd(request);
        return stream is not null;
    }

    /// <summary>
    /// Submits <paramref name="request"/> from any thread. Returns its handle, or null when
    /// <see cref="InferenceEngineOptions.MaxQueuedRequests"/> requests are already queued.
    /// </summary>
    /// <exception cref="ArgumentException">The request can never run here (empty or too long prompt, a token outside the vocabulary, bad counts).</exception>
    public GenerationHandle? TryAdd(GenerationRequest request)
    {
        Validate(request);
        lock (_submitLock)
        {
            if (_stopping) throw new ObjectDisposedException(nameof(InferenceEngine));
            if (_numQueuedRequests >= _options.MaxQueuedRequests) return null;
            Interlocked.Increment(ref _numQueuedRequests);
        }
        var stopTokens = _options.EndOfTextTokenIds.Concat(request.StopTokenIds ?? Array.Empty<int>()).ToArray();
        var choices = new Sequence[request.NumChoices];
        for (int i = 0; i < choices.Length; i++)
        {
            var sampling = request.Sampling with { Seed = ChoiceSeed(request.Sampling.Seed, i) };
            choices[i] = new Sequence(Interlocked.Increment(ref _nextSequenceId), request.PromptTokens, request.MaxTokens, sampling,
                request.Priority, stopTokens, choiceIndex: i, wantsLogprobs: request.WantsLogprobs);
        }
        for (int i = 1; i < choices.Length; i++) choices[0].PendingChildren.Add(choices[i]);
        var handle = new GenerationHandle(this, request, choices);
        _incoming.Enqueue(handle);
        _wake.Set();
        return handle;
    }

    /// <summary>Cancels <paramref name="handle"/>'s request (same as <see cref="GenerationHandle.Cancel"/>).</summary>
    public void Cancel(GenerationHandle handle) => handle.Cancel();

    /// <summary>
    /// One engine step: take new requests and cancellations, schedule, run the forward pass, sample, stream
    /// tokens, finish and free. Returns false when there was nothing to do.
    /// </summary>
    public bool Step()
    {
        lock (_stepLock)
        {
            try
            {
                TakeIncoming();
                TakeCancellations();
                if (!_scheduler.HasWork)
                {
                    PublishCounters();
                    return false;
                }
                var step = _scheduler.Schedule();
                NoteAdmissions(step);
                _modelRunner.Execute(step);
                _scheduler.CompleteStep(step);
                foreach (var scheduled in step.Scheduled)
                {
                    if (!scheduled.Samples) continue;
                    var sequence = scheduled.Sequence;
                    var handle = _handleOfSequence[sequence];
                    int numTop = handle.Request.NumTopLogprobs;
                    if (sequence.PendingChildren.Count > 0)
                        foreach (var child in _scheduler.ForkChildren(sequence))
                            Emit(handle, child, _modelRunner.Sample(child, sequence, numTop));
                    Emit(handle, sequence, _modelRunner.Sample(sequence, sequence, numTop));
                }
                PublishCounters();
                return true;
            }
            catch (Exception error)
            {
                // A bug or a kernel failure: fail every live request (their blocks freed) rather than hang them.
                FailAll(error);
                PublishCounters();
                throw;
            }
        }
    }

    /// <summary>Starts the background thread that steps while there is work and sleeps otherwise.</summary>
    public void Start()
    {
        lock (_submitLock)
        {
            if (_stopping) throw new ObjectDisposedException(nameof(InferenceEngine));
            if (_loop is not null) throw new InvalidOperationException("The engine loop is already running.");
            _loop = new Thread(RunLoop) { IsBackground = true, Name = "ModelCompiler inference engine" };
            _loop.Start();
        }
    }

    /// <summary>Stops the loop; requests still running end with <see cref="FinishReason.Cancelled"/>.</summary>
    public void Dispose()
    {
        lock (_submitLock) _stopping = true;
        _wake.Set();
        _loop?.Join();
        lock (_stepLock)
        {
            TakeIncoming();
            foreach (var handle in _live.ToArray()) CancelRequest(handle);
            PublishCounters();
        }
        _wake.Dispose();
        if (_ownsRunner && Interlocked.Exchange(ref _runnerDisposed, 1) == 0) _runner.Dispose();
    }

    internal void RequestCancellation(GenerationHandle handle)
    {
        _cancellations.Enqueue(handle);
        if (!_stopping) _wake.Set();
    }

    private void RunLoop()
    {
        while (!_stopping)
        {
            bool worked;
            try { worked = Step(); }
            catch (Exception) { worked = false; }   // Step has failed the live requests; keep serving new ones
            // The timeout bounds how late a deadline is noticed while idle.
            if (!worked) _wake.WaitOne(TimeSpan.FromMilliseconds(100));
        }
    }

    private void Validate(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var c = _runner.Config;
        if (request.PromptTokens is null || request.PromptTokens.Length == 0) throw new ArgumentException("The prompt needs at least one token.", nameof(request));
        if (request.PromptTokens.Length >= c.MaxSeqLen)
            throw new ArgumentException($"The prompt has {request.PromptTokens.Length} tokens; the context holds {c.MaxSeqLen} (prompt and at least one generated token).", nameof(request));
        foreach (int token in request.PromptTokens)
            if ((uint)token >= (uint)c.VocabSize) throw new ArgumentException($"Prompt token {token} is outside the vocabulary of {c.VocabSize}.", nameof(request));
        if (request.MaxTokens <= 0) throw new ArgumentException($"MaxTokens must be positive; got {request.MaxTokens}.", nameof(request));
        if (request.NumChoices < 1 || request.NumChoices > c.MaxSequences)
            throw new ArgumentException($"NumChoices must be in [1, {c.MaxSequences}]; got {request.NumChoices}.", nameof(request));
        if (request.NumTopLogprobs < 0) throw new ArgumentException($"NumTopLogprobs must be >= 0; got {request.NumTopLogprobs}.", nameof(request));
        ArgumentNullException.ThrowIfNull(request.Sampling);
        // A sequence must fit the pool alone, or preemption could never make room for it.
        int longest = Math.Min(c.MaxSeqLen, request.PromptTokens.Length + request.MaxTokens);
        if (_runner.Blocks.BlocksFor(longest) > _runner.Blocks.NumBlocks)
            throw new ArgumentException($"A sequence of {longest} tokens needs more than the {_runner.Blocks.NumBlocks} KV blocks of the pool.", nameof(request));
    }

    private void TakeIncoming()
    {
        while (_incoming.TryDequeue(out var handle))
        {
            _live.Add(handle);
            foreach (var choice in handle.Choices) _handleOfSequence.Add(choice, handle);
            _scheduler.Add(handle.Choices[0]);
        }
    }

    private void TakeCancellations()
    {
        while (_cancellations.TryDequeue(out var handle))
            if (_live.Contains(handle)) CancelRequest(handle);
        if (_live.Count == 0) return;
        var now = DateTimeOffset.UtcNow;
        foreach (var handle in _live.ToArray())
            if (handle.Request.Deadline is { } deadline && deadline <= now) CancelRequest(handle);
    }

    // Ends every unfinished choice with Cancelled and frees its blocks, within this step.
    private void CancelRequest(GenerationHandle handle)
    {
        var unfinished = handle.Choices.Where(choice => !choice.IsFinished).ToArray();
        foreach (var choice in unfinished) _scheduler.Abort(choice);
        foreach (var choice in unfinished) handle.WriteFinish(choice.ChoiceIndex, FinishReason.Cancelled);
        Retire(handle);
    }

    private void NoteAdmissions(SchedulerStep step)
    {
        foreach (var scheduled in step.Scheduled)
        {
            var handle = _handleOfSequence[scheduled.Sequence];
            if (!_admitted.Add(handle)) continue;
            Interlocked.Decrement(ref _numQueuedRequests);
            handle.SetCachedPromptTokens(scheduled.Sequence.NumCachedPromptTokens);
            Interlocked.Add(ref _numPromptTokens, handle.Request.PromptTokens.Length);
        }
    }

    private void Emit(GenerationHandle handle, Sequence sequence, SampledToken token)
    {
        var finish = _scheduler.AppendToken(sequence, token.TokenId);
        if (finish != FinishReason.Stop)
        {
            handle.WriteToken(sequence.ChoiceIndex, token);
            Interlocked.Increment(ref _numGeneratedTokens);
        }
        if (finish is { } reason)
        {
            handle.WriteFinish(sequence.ChoiceIndex, reason);
            if (handle.Choices.All(choice => choice.IsFinished)) Retire(handle);
        }
    }

    private void Retire(GenerationHandle handle)
    {
        _live.Remove(handle);
        foreach (var choice in handle.Choices) _handleOfSequence.Remove(choice);
        if (!_admitted.Remove(handle)) Interlocked.Decrement(ref _numQueuedRequests);
    }

    private void FailAll(Exception error)
    {
        foreach (var handle in _live.ToArray())
        {
            foreach (var choice in handle.Choices) _scheduler.Abort(choice);
            handle.Fail(error);
            Retire(handle);
        }
    }

    private void PublishCounters()
    {
        var blocks = _runner.Blocks;
        Volatile.Write(ref _numRunningSequences, _scheduler.Running.Count);
        Volatile.Write(ref _numKvBlocksUsed, blocks.NumUsedBlocks);
        Volatile.Write(ref _numKvBlocksFree, blocks.NumFreeBlocks);
        Volatile.Write(ref _numPrefixCacheQueryTokens, blocks.NumPrefixCacheQueryTokens);
        Volatile.Write(ref _numPrefixCacheHitTokens, blocks.NumPrefixCacheHitTokens);
        Volatile.Write(ref _numPreemptions, _scheduler.NumPreemptions);
    }
}
