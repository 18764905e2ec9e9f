using System;
using System.Collections.Generic;
using System.Text.Json;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// Writes OpenAI response bodies and stream chunks with <see cref="Utf8JsonWriter"/>: completions
/// (<c>text_completion</c>) and chat completions (<c>chat.completion</c>, <c>chat.completion.chunk</c>),
/// with their two log-probability shapes and the <c>usage</c> object.
/// </summary>
internal sealed class OpenAiResponses(OpenAiEndpoint endpoint, string id, long created, string model)
{
    private bool IsChat => endpoint == OpenAiEndpoint.ChatCompletions;

    /// <summary>A new response id: <c>cmpl-…</c> or <c>chatcmpl-…</c>.</summary>
    public static string NewId(OpenAiEndpoint endpoint) =>
        (endpoint == OpenAiEndpoint.ChatCompletions ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");

    /// <summary>The OpenAI <c>finish_reason</c>. A cancellation the server did not ask for (a deadline) reads as <c>length</c>.</summary>
    public static string FinishReasonName(FinishReason reason) => reason == FinishReason.Stop ? "stop" : "length";

    /// <summary>The whole (non-streaming) response.</summary>
    public void WriteResponse(Utf8JsonWriter json, IReadOnlyList<ChoiceResult> choices, Usage usage)
    {
        WriteHeader(json, IsChat ? "chat.completion" : "text_completion");
        json.WriteStartArray("choices");
        foreach (var choice in choices)
        {
            json.WriteStartObject();
            json.WriteNumber("index", choice.Index);
            if (IsChat)
            {
                json.WriteStartObject("message");
                json.WriteString("role", "assistant");
                json.WriteString("content", choice.Text.ToString());
                json.WriteNull("refusal");
                json.WriteEndObject();
            }
            else
            {
                json.WriteString("text", choice.Text.ToString());
            }
            WriteLogprobs(json, choice.Tokens, choice.LogprobsWanted, 0);
            WriteFinish(json, choice.Finish);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        WriteUsage(json, usage);
        json.WriteEndObject();
    }

    /// <summary>
    /// A stream chunk for one choice. Chat chunks carry a <c>delta</c> (with the role in the first);
    /// <paramref name="textOffset"/> is where this text starts in the choice (completions' <c>text_offset</c>).
    /// </summary>
    public void WriteChunk(Utf8JsonWriter json, int index, string text, bool withRole, IReadOnlyList<TokenDetail> tokens,
        bool logprobsWanted, int textOffset, FinishReason? finish, bool includeUsageNull)
    {
        WriteHeader(json, IsChat ? "chat.completion.chunk" : "text_completion");
        json.WriteStartArray("choices");
        json.WriteStartObject();
        json.WriteNumber("index", index);
        if (IsChat)
        {
            json.WriteStartObject("delta");
            if (withRole) json.WriteString("role", "assistant");
            if (text.Length > 0 || withRole) json.WriteString("content", text);
            json.WriteEndObject();
        }
        else
        {
            json.WriteString("text", text);
        }
        WriteLogprobs(json, tokens, logprobsWanted && tokens.Count > 0, textOffset);
        WriteFinish(json, finish);
        json.WriteEndObject();
        json.WriteEndArray();
        if (includeUsageNull) json.WriteNull("usage");
        json.WriteEndObject();
    }

    /// <summary>The last chunk when <c>stream_options.include_usage</c> is set: no choices, the usage.</summary>
    public void WriteUsageChunk(Utf8JsonWriter json, Usage usage)
    {
        WriteHeader(json, IsChat ? "chat.completion.chunk" : "text_completion");
        json.WriteStartArray("choices");
        json.WriteEndArray();
        WriteUsage(json, usage);
        json.WriteEndObject();
    }

    private void WriteHeader(Utf8JsonWriter json, string objectName)
    {
        json.WriteStartObject();
        json.WriteString("id", id);
        json.WriteString("object", objectName);
        json.WriteNumber("created", created);
        json.WriteString("model", model);
        json.WriteString("system_fingerprint", "modelcompiler");
    }

    private static void WriteFinish(Utf8JsonWriter json, FinishReason? finish)
    {
        if (finish is FinishReason reason) json.WriteString("finish_reason", FinishReasonName(reason));
        else json.WriteNull("finish_reason");
    }

    private static void WriteUsage(Utf8JsonWriter json, Usage usage)
    {
        json.WriteStartObject("usage");
        json.WriteNumber("prompt_tokens", usage.PromptTokens);
        json.WriteNumber("completion_tokens", usage.CompletionTokens);
        json.WriteNumber("total_tokens", usage.PromptTokens + usage.CompletionTokens);
        json.WriteStartObject("prompt_tokens_details");
        json.WriteNumber("cached_tokens", usage.CachedPromptTokens);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    private void WriteLogprobs(Utf8JsonWriter json, IReadOnlyList<TokenDetail> tokens, bool wanted, int textOffset)
    {
        if (!wanted)
        {
            json.WriteNull("logprobs");
            return;
        }
        json.WriteStartObject("logprobs");
        if (IsChat)
        {
            // {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}
            json.WriteStartArray("content");
            foreach (var token in tokens)
            {
                json.WriteStartObject();
                WriteChatToken(json, token.Token);
                json.WriteStartArray("top_logprobs");
                foreach (var alternative in token.Top)
                {
                    json.WriteStartObject();
                    WriteChatToken(json, alternative);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteNull("refusal");
        }
        else
        {
            // {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token: logprob}], "text_offset": [...]}
            json.WriteStartArray("tokens");
            foreach (var token in tokens) json.WriteStringValue(token.Token.Text);
            json.WriteEndArray();
            json.WriteStartArray("token_logprobs");
            foreach (var token in tokens) json.WriteNumberValue(Finite(token.Token.Logprob));
            json.WriteEndArray();
            json.WriteStartArray("top_logprobs");
            foreach (var token in tokens)
            {
                json.WriteStartObject();
                foreach (var alternative in token.Top) json.WriteNumber(alternative.Text, Finite(alternative.Logprob));
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteStartArray("text_offset");
            int offset = textOffset;
            foreach (var token in tokens)
            {
                json.WriteNumberValue(offset);
                offset += token.Token.Text.Length;
            }
            json.WriteEndArray();
        }
        json.WriteEndObject();
    }

    // JSON has no infinities; OpenAI reports -9999 for a token the model gives no chance.
    private static float Finite(float logprob) => float.IsFinite(logprob) ? logprob : -9999f;

    private static void WriteChatToken(Utf8JsonWriter json, TokenText token)
    {
        json.WriteString("token", token.Text);
        json.WriteNumber("logprob", Finite(token.Logprob));
        json.WriteStartArray("bytes");
        foreach (byte b in token.Bytes) json.WriteNumberValue(b);
        json.WriteEndArray();
    }
}

/// <summary>Token counts of a response.</summary>
internal readonly record struct Usage(int PromptTokens, int CompletionTokens, int CachedPromptTokens);

/// <summary>One choice of a non-streaming response, accumulated from its deltas.</summary>
internal sealed class ChoiceResult(int index, bool logprobsWanted)
{
    public int Index => index;
    public bool LogprobsWanted => logprobsWanted;
    public System.Text.StringBuilder Text { get; } = new();
    public List<TokenDetail> Tokens { get; } = [];
    public FinishReason? Finish { get; set; }

    public void Add(ChoiceDelta delta)
    {
        Text.Append(delta.Text);
        Tokens.AddRange(delta.Tokens);
        if (delta.Finish is not null) Finish = delta.Finish;
    }
}
