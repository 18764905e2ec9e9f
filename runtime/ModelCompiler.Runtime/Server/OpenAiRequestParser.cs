using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// Reads an OpenAI request body with <see cref="JsonDocument"/> (no reflection, so Native AOT safe) and
/// checks every known field's type and range. A bad field throws an <see cref="OpenAiException"/> (400)
/// that names it; unknown fields are ignored, as OpenAI clients send extras.
/// </summary>
internal static class OpenAiRequestParser
{
    /// <summary>Most choices per request.</summary>
    public const int MaxChoices = 16;
    /// <summary>Most alternatives per token (OpenAI allows 20 for chat, 5 for completions).</summary>
    public const int MaxTopLogprobs = 20;
    /// <summary>Most stop strings.</summary>
    public const int MaxStopStrings = 16;

    private static readonly JsonDocumentOptions s_options = new() { MaxDepth = 64 };

    public static OpenAiRequest Parse(ReadOnlyMemory<byte> body, OpenAiEndpoint endpoint)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body, s_options);
        }
        catch (JsonException e)
        {
            throw Error($"The request body is not valid JSON: {e.Message}", null, "invalid_json");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Error("The request body must be a JSON object.", null, "invalid_json");
            return endpoint == OpenAiEndpoint.Completions ? ParseCompletions(root) : ParseChat(root);
        }
    }

    private static OpenAiRequest ParseCompletions(JsonElement root)
    {
        var (text, ids) = ReadPrompt(root);
        int? logprobs = OptionalInt(root, "logprobs", 0, MaxTopLogprobs);
        if (OptionalBool(root, "echo") == true) throw Error("'echo' is not supported.", "echo", "unsupported_parameter");
        if (root.TryGetProperty("suffix", out var suffix) && suffix.ValueKind != JsonValueKind.Null)
            throw Error("'suffix' is not supported.", "suffix", "unsupported_parameter");
        var common = ReadCommon(root);
        return new OpenAiRequest
        {
            Endpoint = OpenAiEndpoint.Completions,
            PromptText = text,
            PromptTokenIds = ids,
            Logprobs = logprobs is not null,
            NumTopLogprobs = logprobs ?? 0,
            Model = common.Model, MaxTokens = OptionalInt(root, "max_tokens", 1, int.MaxValue),
            Temperature = common.Temperature, TopP = common.TopP, TopK = common.TopK, Seed = common.Seed,
            Stop = common.Stop, NumChoices = common.NumChoices, Stream = common.Stream, IncludeUsage = common.IncludeUsage,
            Priority = common.Priority,
        };
    }

    private static OpenAiRequest ParseChat(JsonElement root)
    {
        var messages = ReadMessages(root);
        bool logprobs = OptionalBool(root, "logprobs") ?? false;
        int? top = OptionalInt(root, "top_logprobs", 0, MaxTopLogprobs);
        if (top is > 0 && !logprobs) throw Error("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs");
        int? maxTokens = OptionalInt(root, "max_completion_tokens", 1, int.MaxValue) ?? OptionalInt(root, "max_tokens", 1, int.MaxValue);
        var common = ReadCommon(root);
        return new OpenAiRequest
        {
            Endpoint = OpenAiEndpoint.ChatCompletions,
            Messages = messages,
            Logprobs = logprobs,
            NumTopLogprobs = top ?? 0,
            Model = common.Model, MaxTokens = maxTokens,
            Temperature = common.Temperature, TopP = common.TopP, TopK = common.TopK, Seed = common.Seed,
            Stop = common.Stop, NumChoices = common.NumChoices, Stream = common.Stream, IncludeUsage = common.IncludeUsage,
            Priority = common.Priority,
        };
    }

    private sealed record Common(string? Model, float Temperature, float TopP, int TopK, long? Seed, IReadOnlyList<string> Stop, int NumChoices, bool Stream, bool IncludeUsage, int Priority);

    /// <summary>Bounds of the <c>priority</c> extension field.</summary>
    public const int MaxPriority = 1000;

    private static Common ReadCommon(JsonElement root)
    {
        string? model = OptionalString(root, "model");
        float temperature = OptionalFloat(root, "temperature", 0, 2, "between 0 and 2") ?? 1;
        float topP = OptionalFloat(root, "top_p", 0, 1, "in (0, 1]") ?? 1;
        if (topP <= 0) throw Error("'top_p' must be in (0, 1]; got 0.", "top_p");
        int topK = OptionalInt(root, "top_k", -1, int.MaxValue) ?? 0;
        long? seed = OptionalLong(root, "seed");
        int n = OptionalInt(root, "n", 1, MaxChoices) ?? 1;
        bool stream = OptionalBool(root, "stream") ?? false;
        bool includeUsage = false;
        if (root.TryGetProperty("stream_options", out var options) && options.ValueKind != JsonValueKind.Null)
        {
            if (options.ValueKind != JsonValueKind.Object) throw TypeError("stream_options", "an object");
            includeUsage = OptionalBool(options, "include_usage", "stream_options.include_usage") ?? false;
        }
        foreach (var penalty in (ReadOnlySpan<string>)["presence_penalty", "frequency_penalty"])
        {
            float value = OptionalFloat(root, penalty, -2, 2, "between -2 and 2") ?? 0;
            if (value != 0) throw Error($"'{penalty}' is not supported (only 0).", penalty, "unsupported_parameter");
        }
        int priority = OptionalInt(root, "priority", -MaxPriority, MaxPriority) ?? 0;
        return new Common(model, temperature, topP, Math.Max(topK, 0), seed, ReadStop(root), n, stream, includeUsage, priority);
    }

    private static (string? Text, int[]? Ids) ReadPrompt(JsonElement root)
    {
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            throw Error("'prompt' is required.", "prompt", "missing_required_parameter");
        if (prompt.ValueKind == JsonValueKind.String) return (prompt.GetString()!, null);
        if (prompt.ValueKind != JsonValueKind.Array) throw TypeError("prompt", "a string, an array of token ids, or an array of one string");
        int length = prompt.GetArrayLength();
        if (length == 0) throw Error("'prompt' must not be empty.", "prompt");
        var first = prompt[0];
        if (first.ValueKind is JsonValueKind.String or JsonValueKind.Array)
        {
            if (length > 1) throw Error("Only one prompt per request is supported; send one request per prompt.", "prompt", "unsupported_parameter");
            return first.ValueKind == JsonValueKind.String ? (first.GetString()!, null) : (null, ReadTokenIds(first, "prompt[0]"));
        }
        return (null, ReadTokenIds(prompt, "prompt"));
    }

    private static int[] ReadTokenIds(JsonElement array, string field)
    {
        var ids = new int[array.GetArrayLength()];
        if (ids.Length == 0) throw Error($"'{field}' must not be empty.", field);
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out ids[i]) || ids[i] < 0)
                throw TypeError($"{field}[{i}]", "a token id (an integer >= 0)");
            i++;
        }
        return ids;
    }

    private static List<ChatTurn> ReadMessages(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind == JsonValueKind.Null)
            throw Error("'messages' is required.", "messages", "missing_required_parameter");
        if (messages.ValueKind != JsonValueKind.Array) throw TypeError("messages", "an array");
        if (messages.GetArrayLength() == 0) throw Error("'messages' must contain at least one message.", "messages");
        var turns = new List<ChatTurn>();
        int i = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string field = $"messages[{i++}]";
            if (message.ValueKind != JsonValueKind.Object) throw TypeError(field, "an object");
            string? role = OptionalString(message, "role", field + ".role") ?? throw Error($"'{field}.role' is required.", field + ".role", "missing_required_parameter");
            if (!((IList<string>)ChatTemplate.KnownRoles).Contains(role))
                throw Error($"'{field}.role' must be one of {string.Join(", ", ChatTemplate.KnownRoles)}; got '{role}'.", field + ".role");
            turns.Add(new ChatTurn(role, ReadContent(message, field + ".content")));
        }
        return turns;
    }

    private static string ReadContent(JsonElement message, string field)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null) return "";
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        if (content.ValueKind != JsonValueKind.Array) throw TypeError(field, "a string or an array of text parts");
        var text = new StringBuilder();
        int i = 0;
        foreach (var part in content.EnumerateArray())
        {
            string partField = $"{field}[{i++}]";
            if (part.ValueKind != JsonValueKind.Object) throw TypeError(partField, "an object");
            string? type = OptionalString(part, "type", partField + ".type");
            if (type != "text") throw Error($"'{partField}.type' must be 'text' (this model reads text only); got '{type}'.", partField + ".type");
            text.Append(OptionalString(part, "text", partField + ".text") ?? throw Error($"'{partField}.text' is required.", partField + ".text", "missing_required_parameter"));
        }
        return text.ToString();
    }

    private static IReadOnlyList<string> ReadStop(JsonElement root)
    {
        if (!root.TryGetProperty("stop", out var stop) || stop.ValueKind == JsonValueKind.Null) return [];
        if (stop.ValueKind == JsonValueKind.String)
        {
            string single = stop.GetString()!;
            return single.Length == 0 ? throw Error("'stop' strings must not be empty.", "stop") : [single];
        }
        if (stop.ValueKind != JsonValueKind.Array) throw TypeError("stop", "a string or an array of strings");
        if (stop.GetArrayLength() > MaxStopStrings) throw Error($"'stop' holds at most {MaxStopStrings} strings.", "stop");
        var stops = new List<string>();
        int i = 0;
        foreach (var item in stop.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String) throw TypeError($"stop[{i}]", "a string");
            string value = item.GetString()!;
            if (value.Length == 0) throw Error($"'stop[{i}]' must not be empty.", $"stop[{i}]");
            stops.Add(value);
            i++;
        }
        return stops;
    }

    private static string? OptionalString(JsonElement obj, string name, string? field = null)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind == JsonValueKind.String ? value.GetString() : throw TypeError(field ?? name, "a string");
    }

    private static bool? OptionalBool(JsonElement obj, string name, string? field = null)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw TypeError(field ?? name, "a boolean"),
        };
    }

    private static int? OptionalInt(JsonElement obj, string name, int min, int max)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long number)) throw TypeError(name, "an integer");
        if (number < min || number > max)
        {
            string range = max == int.MaxValue ? $"at least {min}" : $"between {min} and {max}";
            throw Error($"'{name}' must be {range}; got {number.ToString(CultureInfo.InvariantCulture)}.", name);
        }
        return (int)number;
    }

    private static long? OptionalLong(JsonElement obj, string name)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out long number)) return number;
        if (value.ValueKind == JsonValueKind.Number && value.TryGetUInt64(out ulong big)) return unchecked((long)big);
        throw TypeError(name, "an integer");
    }

    private static float? OptionalFloat(JsonElement obj, string name, float min, float max, string range)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number) throw TypeError(name, "a number");
        double number = value.GetDouble();
        if (!(number >= min && number <= max))
            throw Error($"'{name}' must be {range}; got {number.ToString(CultureInfo.InvariantCulture)}.", name);
        return (float)number;
    }

    private static OpenAiException TypeError(string field, string expected) =>
        Error($"'{field}' must be {expected}.", field, "invalid_type");

    private static OpenAiException Error(string message, string? param, string? code = null) =>
        new(OpenAiError.InvalidRequest(message, param, code));
}
