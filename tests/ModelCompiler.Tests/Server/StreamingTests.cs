using Xunit;
using System.Text;
using System.Text.Json;
using static ModelCompiler.Tests.Server.TestServer;

namespace ModelCompiler.Tests.Server;

/// <summary>Server-Sent Events: chunk shapes, [DONE], usage, stop strings and client disconnects.</summary>
public class StreamingTests
{
    private static List<JsonElement> Chunks(List<string> events)
    {
        Assert.Equal("[DONE]", events[^1]);
        Assert.Single(events, e => e == "[DONE]");
        return events[..^1].Select(e => JsonDocument.Parse(e).RootElement.Clone()).ToList();
    }

    [Fact]
    public async Task Streamed_completion_text_adds_up_and_usage_comes_last_only_when_asked()
    {
        await using var server = await StartAsync();
        var chunks = Chunks(await server.StreamAsync("/v1/completions", """{"prompt":"Hi","max_tokens":50,"stream":true}"""));
        Assert.All(chunks, c => Assert.Equal("text_completion", c.GetProperty("object").GetString()));
        Assert.All(chunks, c => Assert.False(c.TryGetProperty("usage", out _)));
        Assert.Equal(TextOf(ScriptTokens), string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString())));
        Assert.Equal("stop", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.All(chunks[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind));
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());

        chunks = Chunks(await server.StreamAsync("/v1/completions",
            """{"prompt":"Hi","max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}"""));
        var last = chunks[^1];
        Assert.Equal(0, last.GetProperty("choices").GetArrayLength());
        Assert.Equal(4, last.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.All(chunks[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("usage").ValueKind));
        Assert.Equal("length", chunks[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Streamed_chat_starts_with_the_role_then_content_deltas_then_the_finish()
    {
        await using var server = await StartAsync();
        var chunks = Chunks(await server.StreamAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"Hi"}],"stream":true,"n":2,"stream_options":{"include_usage":true}}"""));
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        var withChoices = chunks.Where(c => c.GetProperty("choices").GetArrayLength() == 1).Select(c => c.GetProperty("choices")[0]).ToList();
        foreach (int index in new[] { 0, 1 })
        {
            var mine = withChoices.Where(c => c.GetProperty("index").GetInt32() == index).ToList();
            Assert.Equal("assistant", mine[0].GetProperty("delta").GetProperty("role").GetString());
            Assert.All(mine.Skip(1), c => Assert.False(c.GetProperty("delta").TryGetProperty("role", out _)));
            string text = string.Concat(mine.Select(c => c.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : ""));
            Assert.Equal(TextOf(ScriptTokens), text);
            Assert.Equal("stop", mine[^1].GetProperty("finish_reason").GetString());
        }
        Assert.Equal(2 * ScriptTokens.Length, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task A_streamed_stop_string_never_shows_even_in_part()
    {
        await using var server = await StartAsync();
        string full = TextOf(ScriptTokens);
        var chunks = Chunks(await server.StreamAsync("/v1/completions", """{"prompt":"Hi","max_tokens":50,"stream":true,"stop":"cat."}"""));
        var texts = chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()!).ToList();
        Assert.Equal(full[..full.IndexOf("cat.", StringComparison.Ordinal)], string.Concat(texts));
        Assert.Equal("stop", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task A_client_that_disconnects_mid_stream_cancels_the_engine_stream()
    {
        await using var server = await StartAsync(b => b.TokenDelay = TimeSpan.FromMilliseconds(100));
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("""{"prompt":"Hi","max_tokens":50,"stream":true}""", Encoding.UTF8, "application/json"),
        })
        using (var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead))
        {
            var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await reader.ReadLineAsync());
        }   // disposing the response closes the connection
        var stream = server.Backend.Streams.Single();
        var cancelled = await Task.WhenAny(stream.CancelTask, Task.Delay(TimeSpan.FromSeconds(10)));
        Assert.Same(stream.CancelTask, cancelled);
    }

    [Fact]
    public async Task A_client_that_gives_up_on_a_non_streaming_request_cancels_it_too()
    {
        await using var server = await StartAsync(b => b.TokenDelay = TimeSpan.FromMilliseconds(100));
        using var giveUp = new CancellationTokenSource();
        var post = server.Http.PostAsync("/v1/completions", new StringContent("""{"prompt":"Hi","max_tokens":50}""", Encoding.UTF8, "application/json"), giveUp.Token);
        // Give up only once the request reached the engine (a fixed delay is flaky on a loaded machine).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (server.Backend.Streams.Count == 0 && DateTime.UtcNow < deadline) await Task.Delay(10);
        giveUp.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => post);
        var stream = server.Backend.Streams.Single();
        Assert.Same(stream.CancelTask, await Task.WhenAny(stream.CancelTask, Task.Delay(TimeSpan.FromSeconds(10))));
    }
}
