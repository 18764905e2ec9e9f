using System;
using System.Collections.Generic;
using System.Threading;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Server;

/// <summary>Why a generated sequence ended.</summary>
public enum FinishReason
{
    /// <summary>The model produced an end-of-text token or a stop token.</summary>
    Stop,
    /// <summary>max_tokens or the context length was reached.</summary>
    Length,
    /// <summary>The request was cancelled (client gone, deadline passed).</summary>
    Cancelled,
}

/// <summary>
/// One request to the serving engine, in tokens. The HTTP layer turns OpenAI requests into this; the
/// engine core knows nothing of HTTP.
/// </summary>
/// <param name="PromptTokens">Prompt token ids, BOS included.</param>
/// <param name="MaxTokens">Most tokens to generate per choice.</param>
/// <param name="Sampling">Temperature, top-k, top-p and seed.</param>
/// <param name="NumChoices">Parallel samples (OpenAI <c>n</c>); they share the prompt's KV blocks.</param>
/// <param name="Priority">Higher runs first; waiting requests age so none starves.</param>
/// <param name="Deadline">When to give up (cancelled with <see cref="FinishReason.Cancelled"/>), or null.</param>
/// <param name="StopTokenIds">Token ids that end a choice (besides the model's end-of-text tokens).</param>
/// <param name="NumTopLogprobs">How many most likely alternatives to report per token (0: only the chosen token's logprob); above 0 implies <paramref name="Logprobs"/>.</param>
/// <param name="Logprobs">
/// Whether events carry log-probabilities. They need each logits row on the host, so a GPU runner copies the
/// rows back for such a request's steps instead of sampling on the device; without them an event's
/// <see cref="GenerationEvent.Logprob"/> is NaN.
/// </param>
public sealed record GenerationRequest(
    int[] PromptTokens, int MaxTokens, SamplingOptions Sampling, int NumChoices = 1, int Priority = 0,
    DateTimeOffset? Deadline = null, int[]? StopTokenIds = null, int NumTopLogprobs = 0, bool Logprobs = false)
{
    /// <summary>True when the events carry log-probabilities (<see cref="Logprobs"/>, or alternatives asked for).</summary>
    public bool WantsLogprobs => Logprobs || NumTopLogprobs > 0;
}

/// <summary>A token id with its log-probability under the model (before temperature).</summary>
public readonly record struct TokenLogprob(int TokenId, float Logprob);

/// <summary>
/// One event of a generation stream: a new token of choice <see cref="ChoiceIndex"/>, or, when
/// <see cref="Finish"/> is set, the end of that choice (TokenId is -1 then). <see cref="Logprob"/> is NaN
/// unless the request wanted log-probabilities (<see cref="GenerationRequest.WantsLogprobs"/>).
/// </summary>
public sealed record GenerationEvent(int ChoiceIndex, int TokenId, float Logprob, IReadOnlyList<TokenLogprob> TopLogprobs, FinishReason? Finish);

/// <summary>A running request: its events in order, and a way to stop it.</summary>
public interface IGenerationStream : IDisposable
{
    /// <summary>Number of prompt tokens the engine found already cached (prefix caching).</summary>
    int NumCachedPromptTokens { get; }

    /// <summary>Events until every choice has finished; ends after the last choice's finish event.</summary>
    IAsyncEnumerable<GenerationEvent> ReadAllAsync(CancellationToken cancellationToken = default);

    /// <summary>Stops generation within one engine step and frees the request's KV blocks.</summary>
    void Cancel();
}

/// <summary>Counters and gauges of the serving engine, read by /metrics.</summary>
public sealed record EngineMetrics(
    int QueueDepth, int RunningSequences, int KvBlocksUsed, int KvBlocksFree, long PrefixCacheQueries,
    long PrefixCacheHits, long Preemptions, long PromptTokens, long GeneratedTokens);

/// <summary>
/// What the HTTP server and the in-process chat client need from the engine: submit token-level
/// requests with backpressure, and read metrics. Implemented over the scheduler and model runner.
/// </summary>
public interface IGenerationBackend
{
    /// <summary>Model name reported by /v1/models.</summary>
    string ModelName { get; }
    /// <summary>Context length in tokens (prompt + generated).</summary>
    int MaxContextTokens { get; }
    /// <summary>False while weights are loading (GET /health answers 503).</summary>
    bool IsReady { get; }

    /// <summary>Starts <paramref name="request"/>; false when the waiting queue is full (the server answers 429).</summary>
    bool TryStart(GenerationRequest request, out IGenerationStream? stream);

    /// <summary>Current counters.</summary>
    EngineMetrics Metrics { get; }
}
