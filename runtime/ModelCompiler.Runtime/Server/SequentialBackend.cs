using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Channels;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// Interim backend until the continuous-batching engine core is plugged in: one worker thread runs
/// requests one at a time, and a request's choices one after another, with <see cref="TextGenerator"/>.
/// No batching and no prefix caching; log-probabilities are not computed (reported as 0, without
/// alternatives). The queue is bounded: beyond <c>queueCapacity</c> waiting requests TryStart is false.
/// </summary>
internal sealed class SequentialBackend : IGenerationBackend, IDisposable
{
    private readonly ModelRunner _runner;
    private readonly TextGenerator _generator;
    private readonly Channel<Job> _queue = Channel.CreateUnbounded<Job>();
    private readonly Thread _worker;
    private readonly int _queueCapacity;
    private int _numWaiting, _numRunning;
    private long _promptTokens, _generatedTokens;

    public SequentialBackend(ModelRunner runner, int queueCapacity = 64)
    {
        _runner = runner;
        _generator = new TextGenerator(runner);
        _queueCapacity = queueCapacity;
        _worker = new Thread(Work) { IsBackground = true, Name = "SequentialBackend" };
        _worker.Start();
    }

    public string ModelName => _runner.Config.Name;
    public int MaxContextTokens => _runner.Config.MaxSeqLen;
    public bool IsReady => true;

    public EngineMetrics Metrics => new(Volatile.Read(ref _numWaiting), Volatile.Read(ref _numRunning), 0, _runner.Config.NumKvBlocks, 0, 0, 0,
        Interlocked.Read(ref _promptTokens), Interlocked.Read(ref _generatedTokens));

    public bool TryStart(GenerationRequest request, out IGenerationStream? stream)
    {
        if (Interlocked.Increment(ref _numWaiting) > _queueCapacity)
        {
            Interlocked.Decrement(ref _numWaiting);
            stream = null;
            return false;
        }
        var job = new Job(request);
        _queue.Writer.TryWrite(job);
        stream = job;
        return true;
    }

    public void Dispose() => _queue.Writer.TryComplete();

    private void Work()
    {
        while (_queue.Reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            while (_queue.Reader.TryRead(out var job))
            {
                Interlocked.Decrement(ref _numWaiting);
                Interlocked.Increment(ref _numRunning);
                try
                {
                    Run(job);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    Console.Error.WriteLine($"error: generation failed: {e.Message}");
                }
                finally
                {
                    job.FinishRemaining(FinishReason.Cancelled);
                    Interlocked.Decrement(ref _numRunning);
                }
            }
        }
    }

    private void Run(Job job)
    {
        var request = job.Request;
        for (int choice = 0; choice < request.NumChoices && !job.IsCancelled; choice++)
        {
            var sampling = request.Sampling with { Seed = request.Sampling.Seed + (ulong)choice };
            int last = -1;
            Interlocked.Add(ref _promptTokens, request.PromptTokens.Length);
            try
            {
                _generator.Generate(request.PromptTokens, request.MaxTokens, new Sampler(_runner.Config.VocabSize, sampling), token =>
                {
                    if (job.IsCancelled) throw new OperationCanceledException();
                    last = token;
                    Interlocked.Increment(ref _generatedTokens);
                    job.Emit(new GenerationEvent(choice, token, 0, [], null));
                });
            }
            catch (OperationCanceledException)
            {
                break;
            }
            bool endOfText = last is TextGenerator.Bos or TextGenerator.Eos;
            job.Finish(choice, endOfText ? FinishReason.Stop : FinishReason.Length);
        }
    }

    private sealed class Job(GenerationRequest request) : IGenerationStream
    {
        private readonly Channel<GenerationEvent> _events = Channel.CreateUnbounded<GenerationEvent>();
        private readonly bool[] _finished = new bool[request.NumChoices];
        private volatile bool _cancelled;

        public GenerationRequest Request => request;
        public bool IsCancelled => _cancelled;
        public int NumCachedPromptTokens => 0;

        public IAsyncEnumerable<GenerationEvent> ReadAllAsync(CancellationToken cancellationToken = default) => _events.Reader.ReadAllAsync(cancellationToken);

        public void Cancel() => _cancelled = true;

        public void Emit(GenerationEvent e) => _events.Writer.TryWrite(e);

        public void Finish(int choice, FinishReason reason)
        {
            if (_finished[choice]) return;
            _finished[choice] = true;
            Emit(new GenerationEvent(choice, -1, 0, [], reason));
        }

        public void FinishRemaining(FinishReason reason)
        {
            for (int i = 0; i < _finished.Length; i++) Finish(i, reason);
            _events.Writer.TryComplete();
        }

        public void Dispose() => Cancel();
    }
}
