using Xunit;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using ModelCompiler.Runtime.Server;
using static ModelCompiler.Tests.Server.TestServer;

namespace ModelCompiler.Tests.Server;

/// <summary>400 naming the field, 401, 413 and 429, over real HTTP.</summary>
public class ErrorTests
{
    [Theory]
    [InlineData("/v1/completions", """{"prompt": "x",""", null, "invalid_json")]
    [InlineData("/v1/completions", """[1, 2]""", null, "invalid_json")]
    [InlineData("/v1/completions", """{"max_tokens": 5}""", "prompt", "missing_required_parameter")]
    [InlineData("/v1/completions", """{"prompt": 5}""", "prompt", "invalid_type")]
    [InlineData("/v1/completions", """{"prompt": "x", "temperature": "hot"}""", "temperature", "invalid_type")]
    [InlineData("/v1/completions", """{"prompt": "x", "max_tokens": 2.5}""", "max_tokens", "invalid_type")]
    [InlineData("/v1/completions", """{"prompt": "x", "stream": "yes"}""", "stream", "invalid_type")]
    [InlineData("/v1/completions", """{"prompt": "x", "stop": [1]}""", "stop[0]", "invalid_type")]
    [InlineData("/v1/completions", """{"prompt": "x", "max_tokens": 0}""", "max_tokens", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "max_tokens": -3}""", "max_tokens", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "max_tokens": 1000}""", "max_tokens", "context_length_exceeded")]
    [InlineData("/v1/completions", """{"prompt": "x", "temperature": 2.5}""", "temperature", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "top_p": 0}""", "top_p", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "top_p": 1.5}""", "top_p", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "top_k": -2}""", "top_k", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "n": 0}""", "n", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "n": 17}""", "n", null)]
    [InlineData("/v1/completions", """{"prompt": "x", "logprobs": 21}""", "logprobs", null)]
    [InlineData("/v1/completions", """{"prompt": [1, 99999]}""", "prompt[1]", null)]
    [InlineData("/v1/chat/completions", """{"messages": []}""", "messages", null)]
    [InlineData("/v1/chat/completions", """{"messages": "hi"}""", "messages", "invalid_type")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "wizard", "content": "hi"}]}""", "messages[0].role", null)]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}""", "messages[1].role", "missing_required_parameter")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": 3}]}""", "messages[0].content", "invalid_type")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}""", "top_logprobs", null)]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}""", "max_completion_tokens", null)]
    public async Task Bad_requests_are_400_with_an_OpenAI_error_naming_the_field(string path, string json, string? param, string? code)
    {
        await using var server = await StartAsync();
        var (status, body, _) = await server.PostAsync(path, json);
        Assert.Equal(400, status);
        AssertError(body, "invalid_request_error", param, code);
        Assert.Empty(server.Backend.Streams);
    }

    [Fact]
    public async Task A_prompt_longer_than_the_context_is_400_context_length_exceeded()
    {
        await using var server = await StartAsync(b => b.MaxContextTokens = 16);
        var (status, body, _) = await server.PostAsync("/v1/completions", $$"""{"prompt":"{{string.Join(" ", Enumerable.Repeat("elephant", 40))}}"}""");
        Assert.Equal(400, status);
        AssertError(body, "invalid_request_error", "prompt", "context_length_exceeded");
        (status, body, _) = await server.PostAsync("/v1/chat/completions", $$"""{"messages":[{"role":"user","content":"{{new string('q', 200)}}"}]}""");
        Assert.Equal(400, status);
        AssertError(body, "invalid_request_error", "messages", "context_length_exceeded");
    }

    [Fact]
    public async Task An_unknown_model_is_404()
    {
        await using var server = await StartAsync();
        var (status, body, _) = await server.PostAsync("/v1/completions", """{"model":"gpt-4","prompt":"x"}""");
        Assert.Equal(404, status);
        AssertError(body, "invalid_request_error", "model", "model_not_found");
    }

    [Fact]
    public async Task Bodies_over_the_limit_are_413_with_or_without_a_content_length()
    {
        await using var server = await StartAsync(options: new ServerOptions { MaxRequestBodySizeInBytes = 4096 });
        string big = $$"""{"prompt":"{{new string('a', 8000)}}"}""";
        var (status, body, _) = await server.PostAsync("/v1/completions", big);
        Assert.Equal(413, status);
        AssertError(body, "invalid_request_error", null, "request_too_large");

        // Chunked: no Content-Length, so the limit is found while reading.
        var content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(big)));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = content };
        request.Headers.TransferEncodingChunked = true;
        using var response = await server.Http.SendAsync(request);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Contains("request_too_large", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task With_an_api_key_v1_needs_the_bearer_token_and_health_does_not()
    {
        await using var server = await StartAsync(options: new ServerOptions { ApiKey = "sekrit" });
        var (status, body, response) = await server.PostAsync("/v1/completions", """{"prompt":"x"}""");
        Assert.Equal(401, status);
        AssertError(body, "authentication_error", null, "invalid_api_key");
        Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);

        server.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        Assert.Equal(401, (await server.GetJsonAsync("/v1/models")).Status);

        server.Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sekrit");
        Assert.Equal(200, (await server.PostAsync("/v1/completions", """{"prompt":"x"}""")).Status);
        Assert.Equal(200, (await server.GetJsonAsync("/v1/models")).Status);

        server.Http.DefaultRequestHeaders.Authorization = null;
        Assert.Equal(200, (await server.GetJsonAsync("/health")).Status);
    }

    [Fact]
    public async Task A_full_queue_is_429_with_Retry_After_and_a_rate_limit_error()
    {
        await using var server = await StartAsync(b =>
        {
            b.QueueCapacity = 1;
            b.TokenDelay = TimeSpan.FromMilliseconds(200);
        }, new ServerOptions { RetryAfterSeconds = 3 });
        var first = server.StreamAsync("/v1/completions", """{"prompt":"x","stream":true,"max_tokens":5}""");
        while (server.Backend.Streams.Count == 0) await Task.Delay(10);

        var (status, body, response) = await server.PostAsync("/v1/completions", """{"prompt":"y"}""");
        Assert.Equal(429, status);
        AssertError(body, "rate_limit_error", null, "queue_full");
        Assert.Equal(TimeSpan.FromSeconds(3), response.Headers.RetryAfter?.Delta);

        Assert.Equal("[DONE]", (await first)[^1]);   // the running request is unaffected
        // The slot frees when the server has released the first stream (just after the client saw [DONE]).
        int again = 0;
        for (int i = 0; i < 100 && again != 200; i++)
        {
            again = (await server.PostAsync("/v1/completions", """{"prompt":"y"}""")).Status;
            if (again != 200) await Task.Delay(20);
        }
        Assert.Equal(200, again);
    }
}
