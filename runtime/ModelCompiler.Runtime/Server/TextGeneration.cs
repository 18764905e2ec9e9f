using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Tokenization;

namespace ModelCompiler.Runtime.Server;

/// <summary>A request in tokens plus what is applied to its text: stop strings and log-probability reporting.</summary>
/// <param name="PromptTokens">Prompt token ids, BOS included.</param>
/// <param name="MaxTokens">Most tokens per choice.</param>
/// <param name="Sampling">Sampling options.</param>
/// <param name="NumChoices">Choices (<c>n</c>).</param>
/// <param name="Stop">Stop strings, applied to the text.</param>
/// <param name="Logprobs">Whether each token's log-probability is reported.</param>
/// <param name="NumTopLogprobs">Alternatives per token.</param>
/// <param name="Priority">Scheduling priority (higher first).</param>
/// <param name="Timeout">Cancel the request this long after it starts, or null.</param>
internal sealed record TextGenerationRequest(
    int[] PromptTokens, int MaxTokens, SamplingOptions Sampling, int NumChoices, IReadOnlyList<string> Stop,
    bool Logprobs, int NumTopLogprobs, int Priority = 0, TimeSpan? Timeout = null);

/// <summary>A token's text as llama2.c decodes it after its predecessor, its UTF-8 bytes and log-probability.</summary>
internal readonly record struct TokenText(string Text, byte[] Bytes, float Logprob);

/// <summary>A generated token with the alternatives the engine reported.</summary>
internal sealed record TokenDetail(TokenText Token, IReadOnlyList<TokenText> Top);

/// <summary>
/// New text of one choice, the tokens behind it when log-probabilities were asked for, and when the
/// choice ended, why. Text and tokens need not line up one to one: text that could begin a stop
/// string is held back.
/// </summary>
internal sealed record ChoiceDelta(int Index, string Text, IReadOnlyList<TokenDetail> Tokens, FinishReason? Finish);

/// <summary>
/// One running request seen as text: turns the backend's token events into per-choice text deltas
/// (UTF-8-safe detokenization, stop strings across token boundaries, log-probabilities), counts
/// tokens, and records latency metrics. Shared by the HTTP endpoints and the in-process chat client.
/// </summary>
internal sealed class TextGenerationRun : IDisposable
{
    private readonly IGenerationStream _stream;
    private readonly Llama2cTokenizer _tokenizer;
    private readonly TextGenerationRequest _request;
    private readonly ServerMetrics? _metrics;
    private readonly long _startTimestamp;
    private readonly Choice[] _choices;
    private long _firstTokenTimestamp;

    private TextGenerationRun(IGenerationStream stream, Llama2cTokenizer tokenizer, TextGenerationRequest request, ServerMetrics? metrics, long startTimestamp)
    {
        _stream = stream;
        _tokenizer = tokenizer;
        _request = request;
        _metrics = metrics;
        _startTimestamp = startTimestamp;
        _choices = new Choice[request.NumChoices];
        for (int i = 0; i < _choices.Length; i++) _choices[i] = new Choice(tokenizer, request.PromptTokens[^1], request.Stop);
    }

    /// <summary>Prompt tokens.</summary>
    public int NumPromptTokens => _request.PromptTokens.Length;

    /// <summary>Tokens generated so far over all choices (after a stop string: up to the token that completed it).</summary>
    public int NumCompletionTokens { get; private set; }

    /// <summary>Prompt tokens the engine found cached.</summary>
    public int NumCachedPromptTokens => _stream.NumCachedPromptTokens;

    /// <summary>True when every choice finished on its own (not cancelled by the caller).</summary>
    public bool Completed { get; private set; }

    /// <summary>Submits <paramref name="request"/>; false when the backend's queue is full.</summary>
    public static bool TryStart(IGenerationBackend backend, Llama2cTokenizer tokenizer, TextGenerationRequest request, ServerMetrics? metrics, out TextGenerationRun? run)
    {
        long start = Stopwatch.GetTimestamp();
        var tokenRequest = new GenerationRequest(request.PromptTokens, request.MaxTokens, request.Sampling, request.NumChoices,
            Priority: request.Priority,
            Deadline: request.Timeout is TimeSpan timeout ? DateTimeOffset.UtcNow + timeout : null,
            NumTopLogprobs: request.Logprobs ? request.NumTopLogprobs : 0, Logprobs: request.Logprobs);
        if (!backend.TryStart(tokenRequest, out var stream) || stream is null)
        {
            run = null;
            return false;
        }
        run = new TextGenerationRun(stream, tokenizer, request, metrics, start);
        return true;
    }

    /// <summary>
    /// The choices' deltas in order, ending after every choice's finish delta. Cancelling
    /// <paramref name="cancellationToken"/> cancels the engine stream at once (within one engine step).
    /// </summary>
    public async IAsyncEnumerable<ChoiceDelta> ReadAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var registration = cancellationToken.Register(static s => ((IGenerationStream)s!).Cancel(), _stream);
        int numOpen = _choices.Length;
        await foreach (var e in _stream.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            // A backend may end the stream with Cancelled finish events instead of throwing: the caller still sees a cancellation.
            cancellationToken.ThrowIfCancellationRequested();
            if ((uint)e.ChoiceIndex >= (uint)_choices.Length) continue;
            var choice = _choices[e.ChoiceIndex];
            if (choice.Finished) continue;
            ChoiceDelta delta;
            if (e.Finish is FinishReason reason)
            {
                delta = new ChoiceDelta(e.ChoiceIndex, choice.Finish(), [], reason);
            }
            else
            {
                if (_firstTokenTimestamp == 0)
                {
                    _firstTokenTimestamp = Stopwatch.GetTimestamp();
                    _metrics?.RecordTimeToFirstToken(Stopwatch.GetElapsedTime(_startTimestamp, _firstTokenTimestamp).TotalSeconds);
                }
                NumCompletionTokens++;
                var detail = _request.Logprobs ? Describe(choice.PreviousToken, e) : null;
                string text = choice.Push(e.TokenId);
                IReadOnlyList<TokenDetail> tokens = detail is null ? [] : [detail];
                delta = new ChoiceDelta(e.ChoiceIndex, text, tokens, choice.Finished ? FinishReason.Stop : null);
            }
            if (delta.Text.Length > 0 || delta.Tokens.Count > 0 || delta.Finish is not null) yield return delta;
            if (delta.Finish is not null && --numOpen == 0) break;
        }
        if (numOpen == 0)
        {
            Completed = true;
            // Choices ended by stop strings leave the engine generating: stop it (a no-op once it is done).
            _stream.Cancel();
            RecordLatencies();
        }
    }

    private void RecordLatencies()
    {
        if (_metrics is null) return;
        long end = Stopwatch.GetTimestamp();
        _metrics.RecordEndToEndLatency(Stopwatch.GetElapsedTime(_startTimestamp, end).TotalSeconds);
        // Decode time spread over each choice's tokens after its first (choices run side by side).
        double tokensAfterFirst = (double)NumCompletionTokens / _choices.Length - 1;
        if (_firstTokenTimestamp != 0 && tokensAfterFirst > 0)
            _metrics.RecordTimePerOutputToken(Stopwatch.GetElapsedTime(_firstTokenTimestamp, end).TotalSeconds / tokensAfterFirst);
    }

    private TokenDetail Describe(int previous, GenerationEvent e)
    {
        var top = new TokenText[e.TopLogprobs.Count];
        for (int i = 0; i < top.Length; i++) top[i] = TokenTextOf(previous, e.TopLogprobs[i].TokenId, e.TopLogprobs[i].Logprob);
        return new TokenDetail(TokenTextOf(previous, e.TokenId, e.Logprob), top);
    }

    private TokenText TokenTextOf(int previous, int token, float logprob)
    {
        byte[] bytes = (uint)token < (uint)_tokenizer.VocabSize && token is not (Llama2cTokenizer.Bos or Llama2cTokenizer.Eos)
            ? _tokenizer.DecodePieceBytes(previous, token).ToArray()
            : [];
        string text = token == Llama2cTokenizer.Eos ? "</s>" : Encoding.UTF8.GetString(bytes);
        return new TokenText(text, bytes, logprob);
    }

    /// <summary>Cancels the engine stream and releases it.</summary>
    public void Dispose()
    {
        if (!Completed) _stream.Cancel();
        _stream.Dispose();
    }

    private sealed class Choice(Llama2cTokenizer tokenizer, int lastPromptToken, IReadOnlyList<string> stop)
    {
        private readonly StreamingDetokenizer _detokenizer = new(tokenizer, lastPromptToken);
        private readonly StopStringMatcher _stop = new(stop);

        public int PreviousToken { get; private set; } = lastPromptToken;
        public bool Finished { get; private set; }

        public string Push(int token)
        {
            PreviousToken = token;
            string text = _stop.Push(_detokenizer.Push(token));
            if (_stop.Stopped) Finished = true;
            return text;
        }

        public string Finish()
        {
            Finished = true;
            string text = _stop.Push(_detokenizer.Flush());
            return text + _stop.Flush();
        }
    }
}
