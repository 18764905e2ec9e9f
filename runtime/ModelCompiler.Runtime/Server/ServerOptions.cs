namespace ModelCompiler.Runtime.Server;

/// <summary>How <c>serve</c> listens and what it accepts. The defaults suit a local, single-user server.</summary>
public sealed record ServerOptions
{
    /// <summary>The default port, as vLLM's.</summary>
    public const int DefaultPort = 8000;

    /// <summary>Address to bind: an IP address, <c>localhost</c>, or <c>0.0.0.0</c>/<c>::</c> for every interface. Default loopback only.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>TCP port; 0 picks a free one (see <see cref="OpenAiServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = DefaultPort;

    /// <summary>When set, every <c>/v1/</c> request needs <c>Authorization: Bearer &lt;key&gt;</c> (401 otherwise).</summary>
    public string? ApiKey { get; init; }

    /// <summary>When set, a request still running this long after it arrived is cancelled (finish_reason "length").</summary>
    public System.TimeSpan? RequestTimeout { get; init; }

    /// <summary>Largest request body accepted; larger ones get 413.</summary>
    public long MaxRequestBodySizeInBytes { get; init; } = 1 << 20;

    /// <summary>The <c>Retry-After</c> value, in seconds, of a 429 (queue full) or 503 (loading) answer.</summary>
    public int RetryAfterSeconds { get; init; } = 1;

    /// <summary>How chat messages become a prompt.</summary>
    public ChatTemplate ChatTemplate { get; init; } = ChatTemplate.Plain;
}
