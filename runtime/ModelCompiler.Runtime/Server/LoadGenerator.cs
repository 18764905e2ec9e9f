using System;
using System.Buffers;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Runtime.Server;

/// <summary>What <c>bench serve</c> sends.</summary>
/// <param name="BaseAddress">The server, e.g. <c>http://127.0.0.1:8000/</c>.</param>
/// <param name="Concurrency">Requests in flight at once.</param>
/// <param name="NumRequests">Requests in all.</param>
/// <param name="NumPromptTokens">Prompt length in tokens (BOS included; sent as token ids, so exact).</param>
/// <param name="NumGenTokens">max_tokens of each request (the model may stop earlier at end of text).</param>
/// <param name="ApiKey">Bearer key, or null.</param>
/// <param name="Seed">Seed of the random prompts (each request's prompt differs from its first token on, so no prefix is shared).</param>
/// <param name="CancelFraction">Share of requests the client abandons part-way (closing the connection after a random number of chunks), as a soak test of cancellation.</param>
internal sealed record LoadOptions(Uri BaseAddress, int Concurrency, int NumRequests, int NumPromptTokens, int NumGenTokens, string? ApiKey = null, int Seed = 1, double CancelFraction = 0);

/// <summary>
/// The server's state once the load has drained, read from <c>/metrics</c>: after a soak every KV block
/// must be free again (cached prefix blocks count as free: they are evictable), and memory measured in
/// process should be flat between the first tenth of the run and its end.
/// </summary>
internal sealed record ServerStateAfterLoad(double KvBlocksUsed, double KvBlocksFree, double RunningSequences, double QueueDepth,
    double? ResidentMiBAfterFirstTenth, double? ResidentMiBAtEnd);

/// <summary>p50, p95 and p99 of a set of durations, in milliseconds (NaN when empty).</summary>
internal readonly record struct LatencyPercentiles(double P50, double P95, double P99)
{
    /// <summary>Linear-interpolated percentiles of <paramref name="valuesMs"/> (see <see cref="Diagnostics.Percentiles"/>).</summary>
    public static LatencyPercentiles Of(IReadOnlyList<double> valuesMs)
    {
        if (valuesMs.Count == 0) return new(double.NaN, double.NaN, double.NaN);
        var sorted = valuesMs.Order().ToArray();
        return new(Diagnostics.Percentiles.OfSorted(sorted, 50), Diagnostics.Percentiles.OfSorted(sorted, 95), Diagnostics.Percentiles.OfSorted(sorted, 99));
    }
}

/// <summary>The result of a <c>bench serve</c> run.</summary>
internal sealed record LoadReport(
    LoadOptions Options, int NumSucceeded, int NumFailed, IReadOnlyDictionary<string, int> Errors, double DurationSeconds,
    long NumGeneratedTokens, LatencyPercentiles TimeToFirstTokenMs, LatencyPercentiles TimePerOutputTokenMs, LatencyPercentiles LatencyMs,
    int NumCancelled, ServerStateAfterLoad? After)
{
    public double RequestsPerSecond => NumSucceeded / DurationSeconds;
    public double GeneratedTokensPerSecond => NumGeneratedTokens / DurationSeconds;

    public string ToText()
    {
        var ci = CultureInfo.InvariantCulture;
        var text = new StringBuilder();
        text.AppendLine(string.Format(ci, "bench serve: {0} requests, concurrency {1}, {2} prompt tokens, up to {3} generated tokens, {4}",
            Options.NumRequests, Options.Concurrency, Options.NumPromptTokens, Options.NumGenTokens, Options.BaseAddress));
        text.AppendLine(string.Format(ci, "  succeeded {0}, cancelled by the client {1}, failed {2}{3}", NumSucceeded, NumCancelled, NumFailed,
            Errors.Count == 0 ? "" : " (" + string.Join(", ", Errors.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => $"{e.Key}: {e.Value}")) + ")"));
        text.AppendLine(string.Format(ci, "  duration {0:F2} s, {1:F2} requests/s, {2:F1} generated tokens/s ({3} tokens)",
            DurationSeconds, RequestsPerSecond, GeneratedTokensPerSecond, NumGeneratedTokens));
        text.AppendLine("                          p50        p95        p99");
        Row(text, "time to first token", TimeToFirstTokenMs);
        Row(text, "time per output token", TimePerOutputTokenMs);
        Row(text, "end-to-end latency", LatencyMs);
        if (After is { } a)
        {
            text.AppendLine(string.Format(ci, "  after the load: KV blocks used {0}, free {1}; running {2}, queued {3}", a.KvBlocksUsed, a.KvBlocksFree, a.RunningSequences, a.QueueDepth));
            if (a.ResidentMiBAfterFirstTenth is double first && a.ResidentMiBAtEnd is double end)
                text.AppendLine(string.Format(ci, "  resident memory (in process, after GC): {0:F1} MiB after the first tenth, {1:F1} MiB at the end", first, end));
        }
        return text.ToString();
    }

    public void WriteJson(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteString("url", Options.BaseAddress.ToString());
        json.WriteNumber("concurrency", Options.Concurrency);
        json.WriteNumber("requests", Options.NumRequests);
        json.WriteNumber("prompt_tokens", Options.NumPromptTokens);
        json.WriteNumber("gen_tokens", Options.NumGenTokens);
        json.WriteNumber("succeeded", NumSucceeded);
        json.WriteNumber("failed", NumFailed);
        json.WriteNumber("cancelled", NumCancelled);
        json.WriteStartObject("errors");
        foreach (var (kind, count) in Errors.OrderBy(e => e.Key, StringComparer.Ordinal)) json.WriteNumber(kind, count);
        json.WriteEndObject();
        json.WriteNumber("duration_s", DurationSeconds);
        json.WriteNumber("requests_per_s", RequestsPerSecond);
        json.WriteNumber("generated_tokens", NumGeneratedTokens);
        json.WriteNumber("generated_tokens_per_s", GeneratedTokensPerSecond);
        WritePercentiles(json, "ttft_ms", TimeToFirstTokenMs);
        WritePercentiles(json, "tpot_ms", TimePerOutputTokenMs);
        WritePercentiles(json, "latency_ms", LatencyMs);
        if (After is { } a)
        {
            json.WriteStartObject("after");
            json.WriteNumber("kv_blocks_used", a.KvBlocksUsed);
            json.WriteNumber("kv_blocks_free", a.KvBlocksFree);
            json.WriteNumber("running_sequences", a.RunningSequences);
            json.WriteNumber("queue_depth", a.QueueDepth);
            if (a.ResidentMiBAfterFirstTenth is double first) json.WriteNumber("resident_mib_after_first_tenth", first);
            if (a.ResidentMiBAtEnd is double end) json.WriteNumber("resident_mib_at_end", end);
            json.WriteEndObject();
        }
        json.WriteEndObject();
    }

    private static void Row(StringBuilder text, string name, LatencyPercentiles p) =>
        text.AppendLine(string.Format(CultureInfo.InvariantCulture, "  {0,-22}{1,8:F2} ms{2,8:F2} ms{3,8:F2} ms", name, p.P50, p.P95, p.P99));

    private static void WritePercentiles(Utf8JsonWriter json, string name, LatencyPercentiles p)
    {
        json.WriteStartObject(name);
        foreach (var (key, value) in (ReadOnlySpan<(string, double)>)[("p50", p.P50), ("p95", p.P95), ("p99", p.P99)])
        {
            if (double.IsFinite(value)) json.WriteNumber(key, value); else json.WriteNull(key);
        }
        json.WriteEndObject();
    }
}

/// <summary>
/// The load generator of <c>bench serve</c>: <see cref="LoadOptions.Concurrency"/> workers send streaming
/// <c>/v1/completions</c> requests (prompts as token ids, <c>stream_options.include_usage</c>) until
/// <see cref="LoadOptions.NumRequests"/> were sent, timing the first SSE chunk that carries a choice
/// (time to first token), the rest of the stream (time per output token) and the whole request.
/// </summary>
internal static class LoadGenerator
{
    // Token ids 3..258 are llama2.c's byte tokens: present in every vocabulary this runtime reads.
    private const int FirstSafeToken = 3, NumSafeTokens = 256;

    /// <param name="options">What to send.</param>
    /// <param name="residentMiB">In-process runs: samples this process's memory (after a GC) after the first tenth of the requests and at the end.</param>
    /// <param name="cancellationToken">Stops the run.</param>
    public static async Task<LoadReport> RunAsync(LoadOptions options, Func<double>? residentMiB = null, CancellationToken cancellationToken = default)
    {
        if (options.Concurrency < 1 || options.NumRequests < 1 || options.NumPromptTokens < 1 || options.NumGenTokens < 1)
            throw new ArgumentException("--concurrency, --requests, --prompt-tokens and --gen-tokens must be positive.");
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = options.Concurrency, PooledConnectionLifetime = TimeSpan.FromMinutes(10) })
        {
            BaseAddress = options.BaseAddress,
            Timeout = TimeSpan.FromMinutes(10),
        };
        if (options.ApiKey is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", options.ApiKey);
        string model = await ModelNameAsync(http, cancellationToken).ConfigureAwait(false);

        var results = new List<RequestResult>();
        int next = -1;
        int firstTenth = Math.Max(1, options.NumRequests / 10);
        double? residentAfterFirstTenth = null;
        var clock = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, options.Concurrency).Select(_ => Task.Run(async () =>
        {
            int index;
            while ((index = Interlocked.Increment(ref next)) < options.NumRequests)
            {
                var result = await SendAsync(http, model, options, index, cancellationToken).ConfigureAwait(false);
                bool sample;
                lock (results)
                {
                    results.Add(result);
                    sample = results.Count == firstTenth;
                }
                if (sample && residentMiB is not null) residentAfterFirstTenth = residentMiB();
            }
        }, cancellationToken)).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        double duration = clock.Elapsed.TotalSeconds;

        var ok = results.Where(r => r.Error is null && !r.Cancelled).ToList();
        int numCancelled = results.Count(r => r.Error is null && r.Cancelled);
        var errors = results.Where(r => r.Error is not null).GroupBy(r => r.Error!).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var after = await StateAfterLoadAsync(http, cancellationToken).ConfigureAwait(false);
        if (after is not null && residentMiB is not null)
            after = after with { ResidentMiBAfterFirstTenth = residentAfterFirstTenth, ResidentMiBAtEnd = residentMiB() };
        return new LoadReport(options, ok.Count, results.Count - ok.Count - numCancelled, errors, duration, ok.Sum(r => (long)r.NumTokens),
            LatencyPercentiles.Of(ok.Select(r => r.TimeToFirstTokenMs).ToList()),
            LatencyPercentiles.Of(ok.Where(r => r.NumTokens > 1).Select(r => (r.LatencyMs - r.TimeToFirstTokenMs) / (r.NumTokens - 1)).ToList()),
            LatencyPercentiles.Of(ok.Select(r => r.LatencyMs).ToList()), numCancelled, after);
    }

    private readonly record struct RequestResult(string? Error, double TimeToFirstTokenMs, double LatencyMs, int NumTokens, bool Cancelled = false);

    /// <summary>
    /// Waits (at most 10 s) until the server reports nothing running or queued — abandoned requests are
    /// cancelled within an engine step — then reads its KV gauges; null when /metrics is unavailable.
    /// </summary>
    private static async Task<ServerStateAfterLoad?> StateAfterLoadAsync(HttpClient http, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            Dictionary<string, double> metrics;
            try
            {
                using var response = await http.GetAsync("metrics", cancellationToken).ConfigureAwait(false);
                if (!response.IsSuccessStatusCode) return null;
                metrics = ParseGauges(await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false));
            }
            catch (HttpRequestException)
            {
                return null;
            }
            double Get(string name) => metrics.TryGetValue(name, out double v) ? v : double.NaN;
            var state = new ServerStateAfterLoad(Get("modelcompiler_kv_blocks_used"), Get("modelcompiler_kv_blocks_free"),
                Get("modelcompiler_running_sequences"), Get("modelcompiler_queue_depth"), null, null);
            if ((state.RunningSequences == 0 && state.QueueDepth == 0) || deadline.Elapsed > TimeSpan.FromSeconds(10)) return state;
            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Unlabelled samples of a Prometheus text exposition: <c>name value</c> lines.</summary>
    internal static Dictionary<string, double> ParseGauges(string exposition)
    {
        var values = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in exposition.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#' || line.Contains('{')) continue;
            int space = line.IndexOf(' ');
            if (space > 0 && double.TryParse(line.AsSpan(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
                values[line[..space]] = value;
        }
        return values;
    }

    private static async Task<string> ModelNameAsync(HttpClient http, CancellationToken cancellationToken)
    {
        using var response = await http.GetAsync("v1/models", cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode) throw new HttpRequestException($"GET /v1/models answered {(int)response.StatusCode}");
        using var document = JsonDocument.Parse(await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false));
        return document.RootElement.GetProperty("data")[0].GetProperty("id").GetString() ?? "";
    }

    private const ulong PromptStream = 0, AbandonStream = 1;

    /// <summary>
    /// The generator of request <paramref name="index"/>'s draws of one kind: a <see cref="SplitMix64"/> so that
    /// a seed gives the same prompts and cancellations in every process (HashCode-seeded
    /// <see cref="Random"/> did not: HashCode is randomised per process, so runs were not comparable).
    /// </summary>
    internal static SplitMix64 RequestRandom(int seed, int index, ulong stream) =>
        new(((ulong)(uint)seed << 32 | (uint)index) * 0x9E3779B97F4A7C15UL ^ stream << 62);

    /// <summary>A draw in [0, <paramref name="bound"/>) (multiply-shift; the bias is below 2⁻³² for our bounds).</summary>
    private static int Below(ref SplitMix64 random, int bound) => (int)((random.NextUInt64() >> 32) * (ulong)bound >> 32);

    /// <summary>The JSON body of request <paramref name="index"/>: its prompt depends only on the seed and the index.</summary>
    internal static byte[] RequestBody(string model, LoadOptions options, int index)
    {
        var random = RequestRandom(options.Seed, index, PromptStream);
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("model", model);
            json.WriteStartArray("prompt");
            json.WriteNumberValue(1);   // BOS
            for (int i = 1; i < options.NumPromptTokens; i++) json.WriteNumberValue(FirstSafeToken + Below(ref random, NumSafeTokens));
            json.WriteEndArray();
            json.WriteNumber("max_tokens", options.NumGenTokens);
            json.WriteNumber("temperature", 1);
            json.WriteNumber("seed", index);
            json.WriteBoolean("stream", true);
            json.WriteStartObject("stream_options");
            json.WriteBoolean("include_usage", true);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    private static async Task<RequestResult> SendAsync(HttpClient http, string model, LoadOptions options, int index, CancellationToken cancellationToken)
    {
        var content = new ByteArrayContent(RequestBody(model, options, index));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        long start = Stopwatch.GetTimestamp();
        double firstMs = double.NaN;
        int tokens = 0, chunks = 0;
        // Whether and when the client walks away is drawn per request, so a run is reproducible.
        var abandon = RequestRandom(options.Seed, index, AbandonStream);
        int abandonAfterChunks = abandon.NextDouble() < options.CancelFraction ? 1 + Below(ref abandon, Math.Max(1, options.NumGenTokens / 2)) : int.MaxValue;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = content };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode) return new RequestResult($"http_{(int)response.StatusCode}", 0, 0, 0);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false));
            bool done = false;
            while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is string line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                string data = line[6..];
                if (data == "[DONE]")
                {
                    done = true;
                    break;
                }
                using var chunk = JsonDocument.Parse(data);
                var root = chunk.RootElement;
                if (root.TryGetProperty("choices", out var choices) && choices.GetArrayLength() > 0)
                {
                    chunks++;
                    if (double.IsNaN(firstMs)) firstMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                    // Leaving the using blocks without reading on closes the connection: the server sees
                    // the client go away and must cancel the request and free its blocks.
                    if (chunks >= abandonAfterChunks) return new RequestResult(null, firstMs, Stopwatch.GetElapsedTime(start).TotalMilliseconds, chunks, Cancelled: true);
                }
                if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                    tokens = usage.GetProperty("completion_tokens").GetInt32();
            }
            if (!done) return new RequestResult("stream_incomplete", 0, 0, 0);
            double latencyMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            return new RequestResult(null, double.IsNaN(firstMs) ? latencyMs : firstMs, latencyMs, tokens > 0 ? tokens : chunks);
        }
        catch (Exception e) when (e is HttpRequestException or IOException or JsonException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return new RequestResult(e is TaskCanceledException ? "timeout" : "connection", 0, 0, 0);
        }
    }
}
