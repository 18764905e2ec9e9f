using System;
using System.Collections.Generic;
using System.Globalization;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Tokenization;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// Turns a checked request into tokens: renders chat messages with the template, tokenizes (BOS
/// first), and checks prompt and <c>max_tokens</c> against the context. Shared by the HTTP endpoints
/// and the in-process chat client.
/// </summary>
internal sealed class RequestPreparation(Llama2cTokenizer tokenizer, ChatTemplate template, int maxContextTokens, TimeSpan? requestTimeout = null)
{
    /// <summary>OpenAI's default <c>max_tokens</c> for completions (chat defaults to the rest of the context).</summary>
    public const int DefaultCompletionMaxTokens = 16;

    public Llama2cTokenizer Tokenizer => tokenizer;

    /// <summary>The request in tokens, or an <see cref="OpenAiException"/> (400) naming the field at fault.</summary>
    public TextGenerationRequest Prepare(OpenAiRequest request)
    {
        int[] prompt = request.Endpoint == OpenAiEndpoint.ChatCompletions
            ? Encode(template.Render(request.Messages!))
            : request.PromptTokenIds is int[] ids ? CheckIds(ids) : Encode(request.PromptText!);
        int maxTokens = CheckLengths(prompt.Length, request.MaxTokens, request.PromptField,
            request.Endpoint == OpenAiEndpoint.Completions ? DefaultCompletionMaxTokens : int.MaxValue);
        ulong seed = request.Seed is long s ? unchecked((ulong)s) : (ulong)Random.Shared.NextInt64();
        var sampling = new SamplingOptions(request.Temperature, request.TopK, request.TopP, seed);
        return new TextGenerationRequest(prompt, maxTokens, sampling, request.NumChoices, request.Stop, request.Logprobs, request.NumTopLogprobs,
            request.Priority, requestTimeout);
    }

    /// <summary>
    /// Checks a prompt of <paramref name="numPromptTokens"/> and the requested generation length against
    /// the context; returns the tokens to generate (the default, capped by the room left, when none was asked for).
    /// </summary>
    public int CheckLengths(int numPromptTokens, int? maxTokens, string promptField, int defaultMaxTokens)
    {
        var ci = CultureInfo.InvariantCulture;
        int room = maxContextTokens - numPromptTokens;
        if (room <= 0)
            throw new OpenAiException(OpenAiError.InvalidRequest(string.Format(ci,
                "This model's maximum context length is {0} tokens, but the prompt has {1} tokens; shorten '{2}'.",
                maxContextTokens, numPromptTokens, promptField), promptField, "context_length_exceeded"));
        if (maxTokens is int asked && asked > room)
            throw new OpenAiException(OpenAiError.InvalidRequest(string.Format(ci,
                "'max_tokens' is {0}, but the prompt ({1} tokens) leaves room for {2} in the {3}-token context.",
                asked, numPromptTokens, room, maxContextTokens), "max_tokens", "context_length_exceeded"));
        return maxTokens ?? Math.Min(defaultMaxTokens, room);
    }

    /// <summary>Tokenizes with BOS (<see cref="Llama2cTokenizer.Encode"/> is safe to call concurrently).</summary>
    public int[] Encode(string text) => tokenizer.Encode(text, addBos: true);

    private int[] CheckIds(int[] ids)
    {
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] >= tokenizer.VocabSize)
                throw new OpenAiException(OpenAiError.InvalidRequest(
                    $"'prompt[{i}]' is token {ids[i]}, outside the vocabulary of {tokenizer.VocabSize}.", $"prompt[{i}]"));
        }
        return ids;
    }
}
