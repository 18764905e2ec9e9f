using Xunit;
using System.Text.Json;
using ModelCompiler.Runtime.Server;
using static ModelCompiler.Tests.Server.TestServer;

namespace ModelCompiler.Tests.Server;

/// <summary>Every endpoint over real HTTP on loopback, non-streaming.</summary>
public class EndpointTests
{
    [Fact]
    public async Task Models_lists_the_backend_model_and_retrieves_it_by_id()
    {
        await using var server = await StartAsync();
        var (status, body) = await server.GetJsonAsync("/v1/models");
        Assert.Equal(200, status);
        Assert.Equal("list", body.GetProperty("object").GetString());
        var model = Assert.Single(body.GetProperty("data").EnumerateArray());
        Assert.Equal("fake-model", model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());

        (status, body) = await server.GetJsonAsync("/v1/models/fake-model");
        Assert.Equal(200, status);
        Assert.Equal("fake-model", body.GetProperty("id").GetString());
        (status, body) = await server.GetJsonAsync("/v1/models/other");
        Assert.Equal(404, status);
        AssertError(body, "invalid_request_error", "model", "model_not_found");
    }

    [Fact]
    public async Task Health_is_200_when_ready_and_503_while_loading_and_generation_waits_too()
    {
        await using var server = await StartAsync();
        Assert.Equal(200, (await server.GetJsonAsync("/health")).Status);
        server.Backend.IsReady = false;
        var (status, body) = await server.GetJsonAsync("/health");
        Assert.Equal(503, status);
        Assert.Equal("loading", body.GetProperty("status").GetString());
        var (postStatus, error, response) = await server.PostAsync("/v1/completions", """{"prompt":"hi"}""");
        Assert.Equal(503, postStatus);
        AssertError(error, "server_error", null, "model_loading");
        Assert.True(response.Headers.Contains("Retry-After"));
    }

    [Fact]
    public async Task Completion_returns_the_generated_text_usage_and_maps_the_sampling_fields()
    {
        await using var server = await StartAsync();
        var (status, body, _) = await server.PostAsync("/v1/completions",
            """{"model":"fake-model","prompt":"Hello there","max_tokens":100,"temperature":0.5,"top_p":0.9,"top_k":7,"seed":42}""");
        Assert.Equal(200, status);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", body.GetProperty("id").GetString());
        var choice = Assert.Single(body.GetProperty("choices").EnumerateArray());
        Assert.Equal(TextOf(ScriptTokens), choice.GetProperty("text").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);

        int[] prompt = Encode("Hello there");
        var usage = body.GetProperty("usage");
        Assert.Equal(prompt.Length, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(ScriptTokens.Length, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(prompt.Length + ScriptTokens.Length, usage.GetProperty("total_tokens").GetInt32());
        Assert.Equal(4, usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());

        var request = server.Backend.LastRequest!;
        Assert.Equal(prompt, request.PromptTokens);
        Assert.Equal(100, request.MaxTokens);
        Assert.Equal(0.5f, request.Sampling.Temperature);
        Assert.Equal(0.9f, request.Sampling.TopP);
        Assert.Equal(7, request.Sampling.TopK);
        Assert.Equal(42UL, request.Sampling.Seed);
        Assert.Equal(1, request.NumChoices);
    }

    [Fact]
    public async Task Completion_defaults_to_16_tokens_and_max_tokens_cuts_with_finish_reason_length()
    {
        await using var server = await StartAsync();
        var (_, body, _) = await server.PostAsync("/v1/completions", """{"prompt":"Hello"}""");
        Assert.Equal(16, server.Backend.LastRequest!.MaxTokens);
        (_, body, _) = await server.PostAsync("/v1/completions", """{"prompt":[1, 300, 301],"max_tokens":3}""");
        Assert.Equal([1, 300, 301], server.Backend.LastRequest!.PromptTokens);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(TextOf(ScriptTokens[..3]), choice.GetProperty("text").GetString());
        Assert.Equal(3, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task Chat_completion_renders_the_template_and_answers_an_assistant_message()
    {
        await using var server = await StartAsync();
        var (status, body, _) = await server.PostAsync("/v1/chat/completions",
            """{"model":"fake-model","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}]}""");
        Assert.Equal(200, status);
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());
        var choice = Assert.Single(body.GetProperty("choices").EnumerateArray());
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal(TextOf(ScriptTokens), choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());

        int[] prompt = Encode("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n");
        Assert.Equal(prompt, server.Backend.LastRequest!.PromptTokens);
        Assert.Equal(server.Backend.MaxContextTokens - prompt.Length, server.Backend.LastRequest.MaxTokens);
        Assert.Equal(prompt.Length, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task Concurrent_requests_are_tokenized_independently()
    {
        await using var server = await StartAsync();
        var prompts = Enumerable.Range(0, 24).Select(i => string.Concat(Enumerable.Repeat($"story number {i} ", i % 5 + 1))).ToArray();
        var answers = await Task.WhenAll(prompts.Select(p => server.PostAsync("/v1/completions", $$"""{"prompt":"{{p}}","max_tokens":2}""")));
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(Encode(prompts[i]).Length, answers[i].Body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task N_choices_come_back_indexed_with_their_tokens_counted_in_usage()
    {
        await using var server = await StartAsync();
        var (_, body, _) = await server.PostAsync("/v1/completions", """{"prompt":"Hi","n":3,"max_tokens":50}""");
        Assert.Equal(3, server.Backend.LastRequest!.NumChoices);
        var choices = body.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        Assert.All(choices, c => Assert.Equal(TextOf(ScriptTokens), c.GetProperty("text").GetString()));
        Assert.Equal(3 * ScriptTokens.Length, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task A_stop_string_spanning_tokens_ends_the_choice_before_it_and_cancels_the_engine()
    {
        await using var server = await StartAsync();
        string full = TextOf(ScriptTokens);
        // "e th" spans " time" and " there" in this tokenizer; the text ends just before it.
        var (_, body, _) = await server.PostAsync("/v1/completions", """{"prompt":"Hi","max_tokens":50,"stop":["zzz","e th"]}""");
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(full[..full.IndexOf("e th", StringComparison.Ordinal)], choice.GetProperty("text").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.True(server.Backend.Streams[^1].CancelCalled);
        Assert.True(body.GetProperty("usage").GetProperty("completion_tokens").GetInt32() < ScriptTokens.Length);
    }

    [Fact]
    public async Task Completion_logprobs_have_parallel_arrays_with_the_asked_number_of_alternatives()
    {
        await using var server = await StartAsync();
        var (_, body, _) = await server.PostAsync("/v1/completions", """{"prompt":"Hi","max_tokens":5,"logprobs":2}""");
        Assert.Equal(2, server.Backend.LastRequest!.NumTopLogprobs);
        var choice = body.GetProperty("choices")[0];
        var logprobs = choice.GetProperty("logprobs");
        var tokens = logprobs.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()).ToList();
        Assert.Equal(5, tokens.Count);
        Assert.Equal(choice.GetProperty("text").GetString(), string.Concat(tokens));
        var values = logprobs.GetProperty("token_logprobs").EnumerateArray().Select(v => v.GetSingle()).ToList();
        Assert.Equal(Enumerable.Range(0, 5).Select(FakeBackend.LogprobAt), values);
        Assert.All(logprobs.GetProperty("top_logprobs").EnumerateArray(), top => Assert.Equal(2, top.EnumerateObject().Count()));
        var offsets = logprobs.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()).ToList();
        Assert.Equal(0, offsets[0]);
        Assert.Equal(tokens[0]!.Length, offsets[1]);
    }

    [Fact]
    public async Task Chat_logprobs_list_each_token_with_bytes_and_top_logprobs()
    {
        await using var server = await StartAsync();
        var (_, body, _) = await server.PostAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"logprobs":true,"top_logprobs":3}""");
        var content = body.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("content").EnumerateArray().ToList();
        Assert.Equal(4, content.Count);
        foreach (var entry in content)
        {
            string token = entry.GetProperty("token").GetString()!;
            var bytes = entry.GetProperty("bytes").EnumerateArray().Select(b => (byte)b.GetInt32()).ToArray();
            Assert.Equal(token, System.Text.Encoding.UTF8.GetString(bytes));
            Assert.Equal(3, entry.GetProperty("top_logprobs").GetArrayLength());
            Assert.True(entry.GetProperty("logprob").GetSingle() < 0);
        }
    }

    [Fact]
    public async Task Unknown_routes_are_404_and_wrong_methods_405_with_OpenAI_error_bodies()
    {
        await using var server = await StartAsync();
        var (status, body) = await server.GetJsonAsync("/v1/nothing");
        Assert.Equal(404, status);
        AssertError(body, "invalid_request_error", null, "not_found");
        (status, body) = await server.GetJsonAsync("/v1/completions");
        Assert.Equal(405, status);
        AssertError(body, "invalid_request_error", null, "method_not_allowed");
    }

    [Fact]
    public async Task A_backend_failure_is_a_500_without_details()
    {
        await using var server = await StartAsync(b => b.ThrowOnStart = new InvalidOperationException("secret internals"));
        var (status, body, _) = await server.PostAsync("/v1/completions", """{"prompt":"Hi"}""");
        Assert.Equal(500, status);
        AssertError(body, "server_error", null);
        Assert.DoesNotContain("secret", body.GetRawText());
    }

    [Fact]
    public async Task Priority_and_the_server_request_timeout_reach_the_engine_request()
    {
        await using var server = await StartAsync(options: new ServerOptions { RequestTimeout = TimeSpan.FromSeconds(30) });
        var before = DateTimeOffset.UtcNow;
        var (status, _, _) = await server.PostAsync("/v1/completions", """{"prompt":"hi","max_tokens":2,"priority":7}""");
        Assert.Equal(200, status);
        var request = server.Backend.LastRequest!;
        Assert.Equal(7, request.Priority);
        Assert.NotNull(request.Deadline);
        Assert.InRange(request.Deadline!.Value, before + TimeSpan.FromSeconds(29), DateTimeOffset.UtcNow + TimeSpan.FromSeconds(31));
    }

    [Fact]
    public async Task A_priority_out_of_range_is_a_400_naming_the_field()
    {
        await using var server = await StartAsync();
        var (status, body, _) = await server.PostAsync("/v1/completions", """{"prompt":"hi","priority":100000}""");
        Assert.Equal(400, status);
        Assert.Equal("priority", body.GetProperty("error").GetProperty("param").GetString());
    }
}
