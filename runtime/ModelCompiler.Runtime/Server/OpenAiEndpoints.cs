using System;
using System.Buffers;
using System.Globalization;
using System.IO;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// The request handlers of <see cref="OpenAiServer"/>. Every answer, error or not, is written here, so
/// that each is counted once in <c>modelcompiler_requests_total</c> with its outcome.
/// </summary>
internal sealed class OpenAiEndpoints(
    IGenerationBackend backend, RequestPreparation preparation, ServerOptions options, ServerMetrics metrics, CancellationToken stopping)
{
    /// <summary>JSON as OpenAI writes it: quotes and apostrophes unescaped (the bodies are never embedded in HTML).</summary>
    internal static readonly JsonWriterOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static readonly byte[] s_done = "data: [DONE]\n\n"u8.ToArray();
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    private readonly byte[]? _apiKey = options.ApiKey is null ? null : Encoding.UTF8.GetBytes(options.ApiKey);

    /// <summary>Outermost middleware: an exception nobody handled becomes a 500 without details (they go to stderr).</summary>
    public async Task CatchAllAsync(HttpContext context, RequestDelegate next)
    {
        try
        {
            await next(context).ConfigureAwait(false);
        }
        catch (Exception e) when (context.RequestAborted.IsCancellationRequested && e is OperationCanceledException or IOException)
        {
            // The client left; there is no one to answer.
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"error: {context.Request.Method} {context.Request.Path}: {e.GetType().Name}: {e.Message}");
            metrics.RecordRequest(RequestOutcomes.Error);
            if (context.Response.HasStarted) context.Abort();
            else await WriteErrorAsync(context, new OpenAiError(500, "The server failed to process the request.", "server_error")).ConfigureAwait(false);
        }
    }

    /// <summary>With an API key configured, <c>/v1/</c> requests need <c>Authorization: Bearer &lt;key&gt;</c>.</summary>
    public Task AuthorizeAsync(HttpContext context, RequestDelegate next)
    {
        if (_apiKey is null || !context.Request.Path.StartsWithSegments("/v1")) return next(context);
        string header = context.Request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        bool ok = header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)
            && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[scheme.Length..].Trim()), _apiKey);
        if (ok) return next(context);
        context.Response.Headers.WWWAuthenticate = "Bearer";
        string message = header.Length == 0 ? "Missing API key: send 'Authorization: Bearer <key>'." : "Incorrect API key.";
        return FailAsync(context, new OpenAiError(401, message, "authentication_error", null, "invalid_api_key"));
    }

    public Task HealthAsync(HttpContext context)
    {
        bool ready = backend.IsReady;
        return WriteJsonAsync(context, ready ? 200 : 503, json =>
        {
            json.WriteStartObject();
            json.WriteString("status", ready ? "ok" : "loading");
            json.WriteString("model", backend.ModelName);
            json.WriteEndObject();
        });
    }

    public async Task MetricsAsync(HttpContext context, PrometheusExporter exporter)
    {
        context.Response.StatusCode = 200;
        context.Response.ContentType = PrometheusExporter.ContentType;
        await context.Response.WriteAsync(exporter.Scrape(), context.RequestAborted).ConfigureAwait(false);
    }

    public Task ModelsAsync(HttpContext context)
    {
        if (!HttpMethods.IsGet(context.Request.Method)) return MethodNotAllowedAsync(context, "GET");
        var id = context.Request.RouteValues["id"] as string;
        if (id is not null && id != backend.ModelName) return FailAsync(context, ModelNotFound(id));
        return WriteJsonAsync(context, 200, json =>
        {
            if (id is not null)
            {
                WriteModel(json);
                return;
            }
            json.WriteStartObject();
            json.WriteString("object", "list");
            json.WriteStartArray("data");
            WriteModel(json);
            json.WriteEndArray();
            json.WriteEndObject();
        });
    }

    public Task NotFoundAsync(HttpContext context) =>
        FailAsync(context, new OpenAiError(404, $"No route {context.Request.Method} {context.Request.Path}.", "invalid_request_error", null, "not_found"));

    /// <summary>POST /v1/completions and /v1/chat/completions.</summary>
    public async Task GenerateAsync(HttpContext context, OpenAiEndpoint endpoint)
    {
        if (!HttpMethods.IsPost(context.Request.Method))
        {
            await MethodNotAllowedAsync(context, "POST").ConfigureAwait(false);
            return;
        }
        if (!backend.IsReady)
        {
            context.Response.Headers.RetryAfter = options.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
            await FailAsync(context, new OpenAiError(503, "The model is still loading; retry shortly.", "server_error", null, "model_loading")).ConfigureAwait(false);
            return;
        }
        using var cancellation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, stopping);
        var cancellationToken = cancellation.Token;
        TextGenerationRun? run = null;
        string outcome = RequestOutcomes.Cancelled;
        try
        {
            var body = await ReadBodyAsync(context, cancellationToken).ConfigureAwait(false);
            var request = OpenAiRequestParser.Parse(body, endpoint);
            if (request.Model is string model && model != backend.ModelName) throw new OpenAiException(ModelNotFound(model));
            var textRequest = preparation.Prepare(request);
            if (!TextGenerationRun.TryStart(backend, preparation.Tokenizer, textRequest, metrics, out run))
            {
                context.Response.Headers.RetryAfter = options.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
                throw new OpenAiException(new OpenAiError(429, "The server is at capacity: the request queue is full. Retry after a moment.",
                    "rate_limit_error", null, "queue_full"));
            }
            var responses = new OpenAiResponses(endpoint, OpenAiResponses.NewId(endpoint), _created, backend.ModelName);
            if (request.Stream) await StreamAsync(context, request, run!, responses, cancellationToken).ConfigureAwait(false);
            else await RespondAsync(context, request, run!, responses, cancellationToken).ConfigureAwait(false);
            outcome = run!.Completed ? RequestOutcomes.Success : RequestOutcomes.Cancelled;
        }
        catch (OpenAiException e)
        {
            outcome = OutcomeOf(e.Error.StatusCode);
            await WriteErrorAsync(context, e.Error).ConfigureAwait(false);
        }
        catch (BadHttpRequestException e)
        {
            var error = e.StatusCode == StatusCodes.Status413PayloadTooLarge
                ? TooLarge()
                : new OpenAiError(e.StatusCode, "The request could not be read: " + e.Message, "invalid_request_error");
            outcome = OutcomeOf(error.StatusCode);
            if (!context.Response.HasStarted) await WriteErrorAsync(context, error).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException && cancellationToken.IsCancellationRequested)
        {
            outcome = RequestOutcomes.Cancelled;   // the client went away (or the server is stopping)
        }
        finally
        {
            run?.Dispose();
            metrics.RecordRequest(outcome);
        }
    }

    private async Task RespondAsync(HttpContext context, OpenAiRequest request, TextGenerationRun run, OpenAiResponses responses, CancellationToken cancellationToken)
    {
        var choices = new ChoiceResult[request.NumChoices];
        for (int i = 0; i < choices.Length; i++) choices[i] = new ChoiceResult(i, request.Logprobs);
        await foreach (var delta in run.ReadAsync(cancellationToken).ConfigureAwait(false)) choices[delta.Index].Add(delta);
        var usage = new Usage(run.NumPromptTokens, run.NumCompletionTokens, run.NumCachedPromptTokens);
        await WriteJsonAsync(context, 200, json => responses.WriteResponse(json, choices, usage), cancellationToken).ConfigureAwait(false);
    }

    private static async Task StreamAsync(HttpContext context, OpenAiRequest request, TextGenerationRun run, OpenAiResponses responses, CancellationToken cancellationToken)
    {
        var response = context.Response;
        response.StatusCode = 200;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await response.StartAsync(cancellationToken).ConfigureAwait(false);

        var buffer = new ArrayBufferWriter<byte>();
        bool isChat = request.Endpoint == OpenAiEndpoint.ChatCompletions;
        var textOffsets = new int[request.NumChoices];
        if (isChat)
        {
            // OpenAI's first chunk of each choice carries the role and empty content.
            for (int i = 0; i < request.NumChoices; i++)
                Event(buffer, json => responses.WriteChunk(json, i, "", true, [], false, 0, null, request.IncludeUsage));
            await FlushAsync(response, buffer, cancellationToken).ConfigureAwait(false);
        }
        await foreach (var delta in run.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            Event(buffer, json => responses.WriteChunk(json, delta.Index, delta.Text, false, delta.Tokens, request.Logprobs,
                textOffsets[delta.Index], delta.Finish, request.IncludeUsage));
            textOffsets[delta.Index] += delta.Text.Length;
            await FlushAsync(response, buffer, cancellationToken).ConfigureAwait(false);
        }
        if (request.IncludeUsage)
        {
            var usage = new Usage(run.NumPromptTokens, run.NumCompletionTokens, run.NumCachedPromptTokens);
            Event(buffer, json => responses.WriteUsageChunk(json, usage));
        }
        buffer.Write(s_done);
        await FlushAsync(response, buffer, cancellationToken).ConfigureAwait(false);
    }

    // One Server-Sent Event: "data: {json}\n\n".
    private static void Event(ArrayBufferWriter<byte> buffer, Action<Utf8JsonWriter> write)
    {
        buffer.Write("data: "u8);
        using (var json = new Utf8JsonWriter(buffer, JsonOptions)) write(json);
        buffer.Write("\n\n"u8);
    }

    private static async Task FlushAsync(HttpResponse response, ArrayBufferWriter<byte> buffer, CancellationToken cancellationToken)
    {
        await response.Body.WriteAsync(buffer.WrittenMemory, cancellationToken).ConfigureAwait(false);
        await response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
        buffer.ResetWrittenCount();
    }

    /// <summary>
    /// How much of an oversized body the server reads and discards before answering 413. Closing a connection
    /// with unread request bytes makes the kernel send a reset, which can destroy the 413 response before the client
    /// reads it (seen as "the response ended prematurely" for chunked uploads); like nginx's lingering close,
    /// draining a bounded amount first lets the answer arrive. Larger bodies are cut off by Kestrel's own 413.
    /// </summary>
    internal const long OversizedBodyDrainBytes = 1 << 20;

    private async Task<ReadOnlyMemory<byte>> ReadBodyAsync(HttpContext context, CancellationToken cancellationToken)
    {
        long limit = options.MaxRequestBodySizeInBytes;
        if (context.Request.ContentLength > limit + OversizedBodyDrainBytes) throw new OpenAiException(TooLarge());
        using var body = new MemoryStream();
        byte[] chunk = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            bool tooLarge = context.Request.ContentLength > limit;
            int read;
            while ((read = await context.Request.Body.ReadAsync(chunk, cancellationToken).ConfigureAwait(false)) > 0)
            {
                if (tooLarge || body.Length + read > limit)
                {
                    tooLarge = true;   // keep reading to the end, discarding (Kestrel stops it past the drain allowance)
                    continue;
                }
                body.Write(chunk, 0, read);
            }
            if (tooLarge) throw new OpenAiException(TooLarge());
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
        return body.GetBuffer().AsMemory(0, (int)body.Length);
    }

    private OpenAiError TooLarge() => new(413,
        $"The request body is larger than {options.MaxRequestBodySizeInBytes.ToString(CultureInfo.InvariantCulture)} bytes.",
        "invalid_request_error", null, "request_too_large");

    private static OpenAiError ModelNotFound(string model) =>
        new(404, $"The model '{model}' does not exist; GET /v1/models lists the one this server runs.", "invalid_request_error", "model", "model_not_found");

    private Task MethodNotAllowedAsync(HttpContext context, string allowed)
    {
        context.Response.Headers.Allow = allowed;
        return FailAsync(context, new OpenAiError(405, $"{context.Request.Path} accepts {allowed} only.", "invalid_request_error", null, "method_not_allowed"));
    }

    private void WriteModel(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteString("id", backend.ModelName);
        json.WriteString("object", "model");
        json.WriteNumber("created", _created);
        json.WriteString("owned_by", "modelcompiler");
        json.WriteNumber("max_model_len", backend.MaxContextTokens);
        json.WriteEndObject();
    }

    // An error answer outside GenerateAsync: counted here.
    private Task FailAsync(HttpContext context, OpenAiError error)
    {
        metrics.RecordRequest(OutcomeOf(error.StatusCode));
        return WriteErrorAsync(context, error);
    }

    private static Task WriteErrorAsync(HttpContext context, OpenAiError error) =>
        WriteJsonAsync(context, error.StatusCode, error.WriteTo);

    private static async Task WriteJsonAsync(HttpContext context, int statusCode, Action<Utf8JsonWriter> write, CancellationToken cancellationToken = default)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, JsonOptions)) write(json);
        context.Response.StatusCode = statusCode;
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = buffer.WrittenCount;
        await context.Response.Body.WriteAsync(buffer.WrittenMemory, cancellationToken).ConfigureAwait(false);
    }

    private static string OutcomeOf(int statusCode) => statusCode switch
    {
        400 => RequestOutcomes.BadRequest,
        401 => RequestOutcomes.Unauthorized,
        404 => RequestOutcomes.NotFound,
        413 => RequestOutcomes.TooLarge,
        429 => RequestOutcomes.Rejected,
        503 => RequestOutcomes.Unavailable,
        _ => RequestOutcomes.Error,
    };
}
