using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Server;

/// <summary>Which OpenAI endpoint a request came to.</summary>
internal enum OpenAiEndpoint
{
    /// <summary>POST /v1/completions: a prompt, text choices, integer <c>logprobs</c>.</summary>
    Completions,
    /// <summary>POST /v1/chat/completions: messages, message choices, <c>logprobs</c> + <c>top_logprobs</c>.</summary>
    ChatCompletions,
}

/// <summary>
/// A completions or chat completions request after its JSON was checked field by field; nothing here
/// is tokenized yet. Sampling fields keep OpenAI's defaults (temperature 1, top_p 1).
/// </summary>
internal sealed class OpenAiRequest
{
    public required OpenAiEndpoint Endpoint { get; init; }
    /// <summary>The <c>model</c> field, or null when absent.</summary>
    public string? Model { get; init; }
    /// <summary>Completions: the prompt as text (null when given as token ids).</summary>
    public string? PromptText { get; init; }
    /// <summary>Completions: the prompt as token ids (null when given as text).</summary>
    public int[]? PromptTokenIds { get; init; }
    /// <summary>Chat: the messages, roles checked.</summary>
    public IReadOnlyList<ChatTurn>? Messages { get; init; }
    /// <summary><c>max_tokens</c> (chat: or <c>max_completion_tokens</c>), or null for the default.</summary>
    public int? MaxTokens { get; init; }
    public float Temperature { get; init; } = 1;
    public float TopP { get; init; } = 1;
    /// <summary>0 (or -1 in the request) disables the top-k cut.</summary>
    public int TopK { get; init; }
    /// <summary>The <c>seed</c>, or null for a random one.</summary>
    public long? Seed { get; init; }
    public IReadOnlyList<string> Stop { get; init; } = [];
    /// <summary>Choices (<c>n</c>).</summary>
    public int NumChoices { get; init; } = 1;
    /// <summary>Scheduling priority (an extension, as vLLM's): higher runs first; waiting requests age.</summary>
    public int Priority { get; init; }
    public bool Stream { get; init; }
    /// <summary><c>stream_options.include_usage</c>: a last chunk with usage and no choices.</summary>
    public bool IncludeUsage { get; init; }
    /// <summary>Report log-probabilities (completions: <c>logprobs</c> present; chat: <c>logprobs: true</c>).</summary>
    public bool Logprobs { get; init; }
    /// <summary>Alternatives per token (completions: the <c>logprobs</c> integer; chat: <c>top_logprobs</c>).</summary>
    public int NumTopLogprobs { get; init; }

    /// <summary>The field that holds the prompt, for error messages.</summary>
    public string PromptField => Endpoint == OpenAiEndpoint.Completions ? "prompt" : "messages";
}
