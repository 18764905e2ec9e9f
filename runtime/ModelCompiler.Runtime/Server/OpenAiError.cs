using System;
using System.Text.Json;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// An error as the OpenAI API reports it: an HTTP status and the body
/// <c>{"error":{"message":…,"type":…,"param":…,"code":…}}</c>. The message is for people and never
/// carries a stack trace; <see cref="Param"/> names the offending request field when there is one.
/// </summary>
/// <param name="StatusCode">HTTP status code.</param>
/// <param name="Message">What went wrong, in one sentence.</param>
/// <param name="Type">Error class: <c>invalid_request_error</c>, <c>authentication_error</c>, <c>rate_limit_error</c>, <c>server_error</c>…</param>
/// <param name="Param">The request field at fault (<c>max_tokens</c>, <c>messages[1].role</c>), or null.</param>
/// <param name="Code">A machine-readable code (<c>context_length_exceeded</c>, <c>queue_full</c>), or null.</param>
public sealed record OpenAiError(int StatusCode, string Message, string Type, string? Param = null, string? Code = null)
{
    /// <summary>400 for a request field: wrong type, out of range, missing.</summary>
    public static OpenAiError InvalidRequest(string message, string? param, string? code = null) =>
        new(400, message, "invalid_request_error", param, code);

    /// <summary>Writes the OpenAI error body.</summary>
    public void WriteTo(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteStartObject("error");
        json.WriteString("message", Message);
        json.WriteString("type", Type);
        if (Param is null) json.WriteNull("param"); else json.WriteString("param", Param);
        if (Code is null) json.WriteNull("code"); else json.WriteString("code", Code);
        json.WriteEndObject();
        json.WriteEndObject();
    }
}

/// <summary>Carries an <see cref="OpenAiError"/> out of request parsing; the server turns it into the response.</summary>
public sealed class OpenAiException : Exception
{
    /// <summary>Wraps <paramref name="error"/>.</summary>
    public OpenAiException(OpenAiError error) : base(error.Message) => Error = error;

    /// <summary>The error to send.</summary>
    public OpenAiError Error { get; }
}
