using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Channels;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Serving.Scheduling;

namespace ModelCompiler.Runtime.Serving;

/// <summary>
/// A request inside the <see cref="InferenceEngine"/>: its choices' sequences and the stream of their events.
/// The engine's step thread writes events; any thread reads them or cancels.
/// </summary>
public sealed class GenerationHandle : IGenerationStream
{
    private readonly InferenceEngine _engine;
    private readonly Channel<GenerationEvent> _events =
        Channel.CreateUnbounded<GenerationEvent>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = true });
    private int _cancelRequested;
    private int _numFinishedChoices;

    internal GenerationHandle(InferenceEngine engine, GenerationRequest request, Sequence[] choices)
    {
        _engine = engine;
        Request = request;
        Choices = choices;
    }

    /// <summary>The request as submitted.</summary>
    public GenerationRequest Request { get; }

    /// <summary>One sequence per choice; owned by the engine's step thread (read them only when the engine is idle).</summary>
    internal Sequence[] Choices { get; }

    /// <summary>Number of prompt tokens the engine found already cached (prefix caching); 0 until admitted.</summary>
    public int NumCachedPromptTokens => Math.Max(0, Volatile.Read(ref _numCachedPromptTokens));
    private int _numCachedPromptTokens = -1;

    /// <summary>True once every choice has finished (its last event is written).</summary>
    public bool IsCompleted => Volatile.Read(ref _completed) != 0;
    private int _completed;   // the channel's own Completion waits for the reader to drain it

    /// <summary>True once <see cref="Cancel"/> was called (the engine acts on it in its next step).</summary>
    public bool IsCancellationRequested => Volatile.Read(ref _cancelRequested) != 0;

    /// <summary>Events until every choice has finished; ends after the last choice's finish event. Cancelling <paramref name="cancellationToken"/> stops reading, not the request.</summary>
    public IAsyncEnumerable<GenerationEvent> ReadAllAsync(CancellationToken cancellationToken = default) =>
        _events.Reader.ReadAllAsync(cancellationToken);

    /// <summary>Stops generation within one engine step and frees the request's KV blocks; unfinished choices end with <see cref="FinishReason.Cancelled"/>.</summary>
    public void Cancel()
    {
        if (Interlocked.Exchange(ref _cancelRequested, 1) == 0) _engine.RequestCancellation(this);
    }

    /// <summary>Cancels the request if it is still running.</summary>
    public void Dispose()
    {
        if (!IsCompleted) Cancel();
    }

    internal void SetCachedPromptTokens(int count) => Volatile.Write(ref _numCachedPromptTokens, count);

    internal void WriteToken(int choiceIndex, SampledToken token) =>
        _events.Writer.TryWrite(new GenerationEvent(choiceIndex, token.TokenId, token.Logprob, token.TopLogprobs, null));

    // Writes the choice's finish event; completes the stream after the last choice's.
    internal void WriteFinish(int choiceIndex, FinishReason reason)
    {
        _events.Writer.TryWrite(new GenerationEvent(choiceIndex, -1, 0, Array.Empty<TokenLogprob>(), reason));
        if (++_numFinishedChoices == Choices.Length) Complete(null);
    }

    internal void Fail(Exception error) => Complete(error);

    private void Complete(Exception? error)
    {
        Volatile.Write(ref _completed, 1);
        _events.Writer.TryComplete(error);
    }
}
