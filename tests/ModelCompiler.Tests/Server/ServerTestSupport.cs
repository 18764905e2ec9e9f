using Xunit;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Tokenization;

namespace ModelCompiler.Tests.Server;

/// <summary>A server on a free loopback port over a <see cref="FakeBackend"/>, and an HttpClient for it.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    public const string ScriptText = "Once upon a time there was a cat. The end";

    private static readonly Lazy<Llama2cTokenizer> s_tokenizer = new(() => Llama2cTokenizer.Load(TestPaths.Model("tok512.bin"), 512));

    private TestServer(OpenAiServer server, FakeBackend backend)
    {
        Server = server;
        Backend = backend;
        Http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    public static Llama2cTokenizer Tokenizer => s_tokenizer.Value;
    public OpenAiServer Server { get; }
    public FakeBackend Backend { get; }
    public HttpClient Http { get; }

    /// <summary>The script as tokens: what the fake generates for every choice.</summary>
    public static int[] ScriptTokens => Encode(ScriptText, addBos: false);

    /// <summary>Tokenizes with the shared tokenizer (safe to call concurrently with the server).</summary>
    public static int[] Encode(string text, bool addBos = true) => Tokenizer.Encode(text, addBos);

    /// <summary>The text of <paramref name="tokens"/> generated after a prompt ending in a non-BOS token.</summary>
    public static string TextOf(IEnumerable<int> tokens)
    {
        var detokenizer = new StreamingDetokenizer(Tokenizer, prevToken: 0);
        var text = new StringBuilder();
        foreach (int token in tokens) text.Append(detokenizer.Push(token));
        return text.Append(detokenizer.Flush()).ToString();
    }

    public static async Task<TestServer> StartAsync(Action<FakeBackend>? configure = null, ServerOptions? options = null)
    {
        var backend = new FakeBackend { Script = ScriptTokens };
        configure?.Invoke(backend);
        var server = OpenAiServer.Create(backend, Tokenizer, (options ?? new ServerOptions()) with { Port = 0 });
        await server.StartAsync();
        return new TestServer(server, backend);
    }

    public async Task<(int Status, JsonElement Body, HttpResponseMessage Response)> PostAsync(string path, string json)
    {
        var response = await Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        string text = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain("   at ", text);   // never a stack trace
        return ((int)response.StatusCode, JsonDocument.Parse(text).RootElement.Clone(), response);
    }

    public async Task<(int Status, JsonElement Body)> GetJsonAsync(string path)
    {
        var response = await Http.GetAsync(path);
        string text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }

    /// <summary>Posts a streaming request; returns every SSE data payload in order ("[DONE]" included).</summary>
    public async Task<List<string>> StreamAsync(string path, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        string body = await response.Content.ReadAsStringAsync();
        var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        return events.Select(e =>
        {
            Assert.StartsWith("data: ", e);
            return e["data: ".Length..];
        }).ToList();
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }

    public static void AssertError(JsonElement body, string type, string? param, string? code = null)
    {
        var error = body.GetProperty("error");
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.Equal(type, error.GetProperty("type").GetString());
        if (param is null) Assert.Equal(JsonValueKind.Null, error.GetProperty("param").ValueKind);
        else Assert.Equal(param, error.GetProperty("param").GetString());
        if (code is not null) Assert.Equal(code, error.GetProperty("code").GetString());
    }
}
