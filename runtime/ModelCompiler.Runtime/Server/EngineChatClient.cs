using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.AI;
using ModelCompiler.Runtime.Tokenization;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// The engine as a <see cref="IChatClient"/> (Microsoft.Extensions.AI), in process, without HTTP. Messages
/// become a prompt through the <see cref="ChatTemplate"/>; <see cref="ChatOptions"/> map to sampling:
/// <c>MaxOutputTokens</c> (default: the rest of the context), <c>Temperature</c> (default 1), <c>TopP</c>,
/// <c>TopK</c>, <c>Seed</c> and <c>StopSequences</c>. Cancelling the token stops the engine's work within
/// one step. Bad options throw <see cref="ArgumentException"/>; a full queue throws
/// <see cref="GenerationQueueFullException"/>.
/// </summary>
public sealed class EngineChatClient : IChatClient
{
    private readonly IGenerationBackend _backend;
    private readonly RequestPreparation _preparation;
    private readonly ChatClientMetadata _metadata;

    /// <summary>A client over <paramref name="backend"/>; <paramref name="template"/> defaults to <see cref="ChatTemplate.Plain"/>.</summary>
    public EngineChatClient(IGenerationBackend backend, Llama2cTokenizer tokenizer, ChatTemplate? template = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(tokenizer);
        _backend = backend;
        _preparation = new RequestPreparation(tokenizer, template ?? ChatTemplate.Plain, backend.MaxContextTokens);
        _metadata = new ChatClientMetadata("ModelCompiler", null, backend.ModelName);
    }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var run = Start(messages, options, out string responseId);
        var text = new StringBuilder();
        FinishReason finish = FinishReason.Stop;
        await foreach (var delta in run.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            text.Append(delta.Text);
            if (delta.Finish is FinishReason reason) finish = reason;
        }
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()) { MessageId = responseId })
        {
            ResponseId = responseId,
            ModelId = _backend.ModelName,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = MapFinish(finish),
            Usage = UsageOf(run),
        };
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var run = Start(messages, options, out string responseId);
        await foreach (var delta in run.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (delta.Text.Length == 0 && delta.Finish is null) continue;
            yield return new ChatResponseUpdate(ChatRole.Assistant, delta.Text)
            {
                ResponseId = responseId,
                MessageId = responseId,
                ModelId = _backend.ModelName,
                CreatedAt = DateTimeOffset.UtcNow,
                FinishReason = delta.Finish is FinishReason reason ? MapFinish(reason) : null,
            };
        }
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(UsageOf(run))])
        {
            ResponseId = responseId,
            MessageId = responseId,
            ModelId = _backend.ModelName,
        };
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>Nothing to release: the backend belongs to the caller.</summary>
    public void Dispose()
    {
    }

    private TextGenerationRun Start(IEnumerable<ChatMessage> messages, ChatOptions? options, out string responseId)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var request = ToRequest(messages, options);
        TextGenerationRequest textRequest;
        try
        {
            textRequest = _preparation.Prepare(request);
        }
        catch (OpenAiException e)
        {
            throw new ArgumentException(e.Message, e.Error.Param == "max_tokens" ? nameof(options) : nameof(messages));
        }
        if (!TextGenerationRun.TryStart(_backend, _preparation.Tokenizer, textRequest, null, out var run))
            throw new GenerationQueueFullException();
        responseId = "chatcmpl-" + Guid.NewGuid().ToString("N");
        return run!;
    }

    /// <summary>The OpenAI-shaped request these messages and options stand for (checked like the HTTP fields).</summary>
    internal static OpenAiRequest ToRequest(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        var turns = new List<ChatTurn>();
        foreach (var message in messages)
        {
            string role = message.Role.Value;
            if (!ChatTemplate.KnownRoles.Contains(role))
                throw new ArgumentException($"Message role '{role}' is not supported; use one of {string.Join(", ", ChatTemplate.KnownRoles)}.", nameof(messages));
            turns.Add(new ChatTurn(role, message.Text));
        }
        if (turns.Count == 0) throw new ArgumentException("At least one message is needed.", nameof(messages));
        if (options?.MaxOutputTokens is <= 0)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxOutputTokens, "MaxOutputTokens must be positive.");
        if (options?.StopSequences?.Any(string.IsNullOrEmpty) == true)
            throw new ArgumentException("Stop sequences must not be empty.", nameof(options));
        float temperature = options?.Temperature ?? 1, topP = options?.TopP ?? 1;
        int topK = options?.TopK ?? 0;
        if (!(temperature >= 0 && float.IsFinite(temperature))) throw new ArgumentOutOfRangeException(nameof(options), temperature, "Temperature must be a finite number >= 0.");
        if (!(topP > 0 && topP <= 1)) throw new ArgumentOutOfRangeException(nameof(options), topP, "TopP must be in (0, 1].");
        if (topK < 0) throw new ArgumentOutOfRangeException(nameof(options), topK, "TopK must be >= 0.");
        return new OpenAiRequest
        {
            Endpoint = OpenAiEndpoint.ChatCompletions,
            Messages = turns,
            MaxTokens = options?.MaxOutputTokens,
            Temperature = temperature,
            TopP = topP,
            TopK = topK,
            Seed = options?.Seed,
            Stop = options?.StopSequences?.ToArray() ?? [],
        };
    }

    private static ChatFinishReason MapFinish(FinishReason reason) => reason == FinishReason.Stop ? ChatFinishReason.Stop : ChatFinishReason.Length;

    private static UsageDetails UsageOf(TextGenerationRun run) => new()
    {
        InputTokenCount = run.NumPromptTokens,
        OutputTokenCount = run.NumCompletionTokens,
        TotalTokenCount = run.NumPromptTokens + run.NumCompletionTokens,
    };
}

/// <summary>The engine's waiting queue is full; retry later (the HTTP server answers 429 in this case).</summary>
public sealed class GenerationQueueFullException : InvalidOperationException
{
    /// <summary>Creates the exception with a standard message.</summary>
    public GenerationQueueFullException() : base("The engine's request queue is full; retry later.")
    {
    }
}
