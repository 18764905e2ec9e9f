using Xunit;
using System.Runtime.CompilerServices;
using ModelCompiler.Runtime.Server;

namespace ModelCompiler.Tests.Server;

/// <summary>
/// A deterministic <see cref="IGenerationBackend"/> for server tests: every choice produces
/// <see cref="Script"/> (cut at max_tokens: finish "length", else "stop"), one token per
/// <see cref="TokenDelay"/>; at most <see cref="QueueCapacity"/> streams are open at once (TryStart false beyond).
/// </summary>
internal sealed class FakeBackend : IGenerationBackend
{
    private int _numOpen;

    public string ModelName { get; set; } = "fake-model";
    public int MaxContextTokens { get; set; } = 128;
    public bool IsReady { get; set; } = true;
    public int QueueCapacity { get; set; } = int.MaxValue;
    public TimeSpan TokenDelay { get; set; }
    public int[] Script { get; set; } = [];
    public Exception? ThrowOnStart { get; set; }
    public EngineMetrics Metrics { get; set; } = new(3, 2, 10, 54, 40, 30, 1, 100, 200);
    public List<FakeStream> Streams { get; } = [];
    public GenerationRequest? LastRequest { get; private set; }

    public bool TryStart(GenerationRequest request, out IGenerationStream? stream)
    {
        if (ThrowOnStart is not null) throw ThrowOnStart;
        if (Interlocked.Increment(ref _numOpen) > QueueCapacity)
        {
            Interlocked.Decrement(ref _numOpen);
            stream = null;
            return false;
        }
        LastRequest = request;
        var fake = new FakeStream(this, request);
        lock (Streams) Streams.Add(fake);
        stream = fake;
        return true;
    }

    internal void Closed() => Interlocked.Decrement(ref _numOpen);

    /// <summary>Log-probability the fake reports for the token at <paramref name="position"/>.</summary>
    public static float LogprobAt(int position) => -0.25f * (position + 1);

    internal sealed class FakeStream(FakeBackend backend, GenerationRequest request) : IGenerationStream
    {
        private readonly TaskCompletionSource _cancelled = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _disposed;

        public GenerationRequest Request => request;
        public int NumCachedPromptTokens => 4;
        public bool CancelCalled => _cancelled.Task.IsCompleted;
        public Task CancelTask => _cancelled.Task;

        public void Cancel() => _cancelled.TrySetResult();

        public async IAsyncEnumerable<GenerationEvent> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            int length = Math.Min(backend.Script.Length, request.MaxTokens);
            for (int position = 0; position < length; position++)
            {
                for (int choice = 0; choice < request.NumChoices; choice++)
                {
                    if (backend.TokenDelay > TimeSpan.Zero)
                        await Task.WhenAny(Task.Delay(backend.TokenDelay, CancellationToken.None), _cancelled.Task);
                    if (CancelCalled)
                    {
                        for (int c = 0; c < request.NumChoices; c++) yield return new GenerationEvent(c, -1, 0, [], FinishReason.Cancelled);
                        yield break;
                    }
                    int token = backend.Script[position];
                    var top = Enumerable.Range(0, request.NumTopLogprobs)
                        .Select(k => new TokenLogprob(token + k, LogprobAt(position) - k)).ToArray();
                    yield return new GenerationEvent(choice, token, LogprobAt(position), top, null);
                }
            }
            var finish = backend.Script.Length > request.MaxTokens ? FinishReason.Length : FinishReason.Stop;
            for (int choice = 0; choice < request.NumChoices; choice++) yield return new GenerationEvent(choice, -1, 0, [], finish);
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) backend.Closed();
        }
    }
}
