using Xunit;
using Microsoft.Extensions.AI;
using ModelCompiler.Runtime.Server;
using static ModelCompiler.Tests.Server.TestServer;

namespace ModelCompiler.Tests.Server;

/// <summary>The in-process <see cref="IChatClient"/> over the fake backend.</summary>
public class ChatClientTests
{
    private static (EngineChatClient Client, FakeBackend Backend) Create(Action<FakeBackend>? configure = null)
    {
        var backend = new FakeBackend { Script = ScriptTokens };
        configure?.Invoke(backend);
        return (new EngineChatClient(backend, Tokenizer), backend);
    }

    [Fact]
    public async Task GetResponse_maps_the_options_and_returns_text_finish_and_usage()
    {
        var (client, backend) = Create();
        var options = new ChatOptions { MaxOutputTokens = 40, Temperature = 0.3f, TopP = 0.8f, TopK = 5, Seed = 99 };
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.System, "Be kind."), new ChatMessage(ChatRole.User, "Hi")], options);

        var request = backend.LastRequest!;
        Assert.Equal(Encode("<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\n"), request.PromptTokens);
        Assert.Equal(40, request.MaxTokens);
        Assert.Equal(0.3f, request.Sampling.Temperature);
        Assert.Equal(0.8f, request.Sampling.TopP);
        Assert.Equal(5, request.Sampling.TopK);
        Assert.Equal(99UL, request.Sampling.Seed);

        Assert.Equal(TextOf(ScriptTokens), response.Text);
        Assert.Equal(ChatRole.Assistant, Assert.Single(response.Messages).Role);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal(request.PromptTokens.Length, response.Usage!.InputTokenCount);
        Assert.Equal(ScriptTokens.Length, response.Usage.OutputTokenCount);
        Assert.Equal("fake-model", response.ModelId);
        Assert.Equal("fake-model", client.GetService<ChatClientMetadata>()!.DefaultModelId);
    }

    [Fact]
    public async Task Stop_sequences_and_max_output_tokens_end_the_response()
    {
        var (client, _) = Create();
        string full = TextOf(ScriptTokens);
        var stopped = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], new ChatOptions { StopSequences = ["e th"] });
        Assert.Equal(full[..full.IndexOf("e th", StringComparison.Ordinal)], stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);

        var cut = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], new ChatOptions { MaxOutputTokens = 2 });
        Assert.Equal(ChatFinishReason.Length, cut.FinishReason);
        Assert.Equal(TextOf(ScriptTokens[..2]), cut.Text);
    }

    [Fact]
    public async Task Streaming_updates_add_up_to_the_text_and_end_with_finish_and_usage()
    {
        var (client, _) = Create();
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Hi")])) updates.Add(update);
        Assert.Equal(TextOf(ScriptTokens), string.Concat(updates.Select(u => u.Text)));
        Assert.Contains(updates, u => u.FinishReason == ChatFinishReason.Stop);
        var usage = updates.SelectMany(u => u.Contents).OfType<UsageContent>().Single();
        Assert.Equal(ScriptTokens.Length, usage.Details.OutputTokenCount);
        Assert.Equal(TextOf(ScriptTokens), updates.ToChatResponse().Text);
    }

    [Fact]
    public async Task Cancellation_stops_the_engine_stream()
    {
        var (client, backend) = Create(b => b.TokenDelay = TimeSpan.FromMilliseconds(50));
        using var cancellation = new CancellationTokenSource();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Hi")], cancellationToken: cancellation.Token))
                cancellation.Cancel();
        });
        Assert.True(backend.Streams.Single().CancelCalled);
    }

    [Fact]
    public async Task Bad_options_throw_and_a_full_queue_says_so()
    {
        var (client, _) = Create();
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], new ChatOptions { TopP = 0 }));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.Tool, "x")]));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")], new ChatOptions { MaxOutputTokens = 100000 }));

        var (busy, _) = Create(b => b.QueueCapacity = 0);
        await Assert.ThrowsAsync<GenerationQueueFullException>(() => busy.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi")]));
    }
}
