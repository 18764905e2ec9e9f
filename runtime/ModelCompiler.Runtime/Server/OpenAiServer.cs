using System;
using System.Linq;
using System.Net;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ModelCompiler.Runtime.Tokenization;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// The OpenAI-compatible HTTP server over an <see cref="IGenerationBackend"/> (ASP.NET Core minimal API on
/// Kestrel, Native AOT safe: plain <see cref="RequestDelegate"/> endpoints, JSON by hand).
/// <list type="bullet">
/// <item><c>POST /v1/completions</c>, <c>POST /v1/chat/completions</c>: streaming (SSE) and not.</item>
/// <item><c>GET /v1/models</c>, <c>GET /v1/models/{id}</c>.</item>
/// <item><c>GET /health</c>: 200, or 503 while the backend is not ready.</item>
/// <item><c>GET /metrics</c>: Prometheus text format.</item>
/// </list>
/// Errors are OpenAI-style JSON bodies without stack traces: 400 (field named), 401, 404, 405, 413, 429
/// (with <c>Retry-After</c>), 503, 500.
/// </summary>
public sealed class OpenAiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ServerMetrics _metrics;
    private readonly PrometheusExporter _exporter;
    private bool _disposed;

    private OpenAiServer(WebApplication app, ServerMetrics metrics, PrometheusExporter exporter)
    {
        _app = app;
        _metrics = metrics;
        _exporter = exporter;
    }

    /// <summary>The address the server listens on (the real port when <see cref="ServerOptions.Port"/> was 0); set by <see cref="StartAsync"/>.</summary>
    public Uri BaseAddress { get; private set; } = new("http://127.0.0.1/");

    /// <summary>The server's metrics (its meter is <see cref="ServerMetrics.MeterName"/>).</summary>
    public ServerMetrics Metrics => _metrics;

    /// <summary>Builds the server; nothing listens before <see cref="StartAsync"/>.</summary>
    /// <exception cref="ArgumentException">The host is not an IP address or <c>localhost</c>, or the port is out of range.</exception>
    public static OpenAiServer Create(IGenerationBackend backend, Llama2cTokenizer tokenizer, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var address = ParseHost(options.Host);
        if (options.Port is < 0 or > 65535) throw new ArgumentException($"--port must be in 0..65535, got {options.Port}.", nameof(options));

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(5));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // Kestrel's hard cap sits above ours so an oversized body can be drained (OpenAiEndpoints.ReadBodyAsync)
            // before the 413 goes out; beyond it Kestrel itself refuses with 413 and closes.
            kestrel.Limits.MaxRequestBodySize = options.MaxRequestBodySizeInBytes + OpenAiEndpoints.OversizedBodyDrainBytes;
            kestrel.Listen(address, options.Port);
        });
        var app = builder.Build();

        var metrics = new ServerMetrics(backend);
        var exporter = new PrometheusExporter(metrics.Meter);
        var preparation = new RequestPreparation(tokenizer, options.ChatTemplate, backend.MaxContextTokens, options.RequestTimeout);
        var endpoints = new OpenAiEndpoints(backend, preparation, options, metrics, app.Lifetime.ApplicationStopping);

        app.Use(endpoints.CatchAllAsync);
        app.Use(endpoints.AuthorizeAsync);
        app.Map("/v1/completions", ctx => endpoints.GenerateAsync(ctx, OpenAiEndpoint.Completions));
        app.Map("/v1/chat/completions", ctx => endpoints.GenerateAsync(ctx, OpenAiEndpoint.ChatCompletions));
        app.Map("/v1/models", endpoints.ModelsAsync);
        app.Map("/v1/models/{**id}", endpoints.ModelsAsync);
        app.Map("/health", endpoints.HealthAsync);
        app.Map("/metrics", ctx => endpoints.MetricsAsync(ctx, exporter));
        app.MapFallback(endpoints.NotFoundAsync);
        return new OpenAiServer(app, metrics, exporter);
    }

    /// <summary>Starts listening; afterwards <see cref="BaseAddress"/> holds the real address.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        await _app.StartAsync(cancellationToken).ConfigureAwait(false);
        var addresses = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>();
        string? first = addresses?.Addresses.FirstOrDefault();
        if (first is not null) BaseAddress = new Uri(first.Replace("[::]", "127.0.0.1").Replace("0.0.0.0", "127.0.0.1") + "/");
    }

    /// <summary>Completes when the server is asked to stop (Ctrl+C, SIGTERM) or <paramref name="cancellationToken"/> is cancelled.</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    /// <summary>Stops listening (in-flight streams are cancelled), then releases the metrics.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            await _app.StopAsync().ConfigureAwait(false);
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            _exporter.Dispose();
            _metrics.Dispose();
        }
    }

    private static IPAddress ParseHost(string host)
    {
        if (host is "localhost") return IPAddress.Loopback;
        if (host is "*" or "") return IPAddress.Any;
        if (IPAddress.TryParse(host.Trim('[', ']'), out var address)) return address;
        throw new ArgumentException($"--host must be an IP address or 'localhost', got '{host}'.", nameof(host));
    }
}
