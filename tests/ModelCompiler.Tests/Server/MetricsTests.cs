using Xunit;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text.RegularExpressions;
using ModelCompiler.Runtime.Server;
using static ModelCompiler.Tests.Server.TestServer;

namespace ModelCompiler.Tests.Server;

/// <summary>/metrics in the Prometheus text format, checked by an independent little parser.</summary>
public partial class MetricsTests
{
    private sealed record Family(string Name, string Type, List<(string Name, Dictionary<string, string> Labels, double Value)> Samples);

    [GeneratedRegex("""^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$""")]
    private static partial Regex SampleLine();

    [GeneratedRegex("""([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?""")]
    private static partial Regex LabelPair();

    /// <summary>Parses exposition text, asserting the format rules as it goes.</summary>
    private static Dictionary<string, Family> Parse(string text)
    {
        Assert.EndsWith("\n", text);
        var families = new Dictionary<string, Family>();
        Family? current = null;
        string? help = null;
        foreach (var line in text.TrimEnd('\n').Split('\n'))
        {
            if (line.StartsWith("# HELP ", StringComparison.Ordinal))
            {
                help = line.Split(' ')[2];
                continue;
            }
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                Assert.Equal(help, parts[2]);   // HELP comes right before TYPE, for the same name
                Assert.Contains(parts[3], new[] { "counter", "gauge", "histogram" });
                Assert.False(families.ContainsKey(parts[2]), $"{parts[2]} declared twice");
                families[parts[2]] = current = new Family(parts[2], parts[3], []);
                continue;
            }
            var match = SampleLine().Match(line);
            Assert.True(match.Success, $"not a sample line: '{line}'");
            Assert.NotNull(current);
            string name = match.Groups[1].Value;
            string[] allowed = current!.Type == "histogram" ? [current.Name + "_bucket", current.Name + "_sum", current.Name + "_count"] : [current.Name];
            Assert.Contains(name, allowed);
            if (current.Type == "counter") Assert.EndsWith("_total", name);
            var labels = LabelPair().Matches(match.Groups[3].Value).ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
            string value = match.Groups[4].Value;
            double parsed = value == "+Inf" ? double.PositiveInfinity : double.Parse(value, CultureInfo.InvariantCulture);
            current.Samples.Add((name, labels, parsed));
        }
        foreach (var family in families.Values.Where(f => f.Type == "histogram")) CheckHistogram(family);
        return families;
    }

    private static void CheckHistogram(Family family)
    {
        var buckets = family.Samples.Where(s => s.Name.EndsWith("_bucket")).ToList();
        Assert.NotEmpty(buckets);
        Assert.Equal("+Inf", buckets[^1].Labels["le"]);
        var bounds = buckets.Select(b => b.Labels["le"] == "+Inf" ? double.PositiveInfinity : double.Parse(b.Labels["le"], CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(bounds.Order(), bounds);
        for (int i = 1; i < buckets.Count; i++) Assert.True(buckets[i].Value >= buckets[i - 1].Value, $"{family.Name} buckets are not cumulative");
        double count = Assert.Single(family.Samples, s => s.Name == family.Name + "_count").Value;
        Assert.Equal(count, buckets[^1].Value);
        Assert.Single(family.Samples, s => s.Name == family.Name + "_sum");
    }

    [Fact]
    public async Task Metrics_expose_outcomes_latency_histograms_and_the_engine_gauges()
    {
        await using var server = await StartAsync();
        Assert.Equal(200, (await server.PostAsync("/v1/completions", """{"prompt":"Hi","max_tokens":5}""")).Status);
        await server.StreamAsync("/v1/completions", """{"prompt":"Hi","max_tokens":5,"stream":true}""");
        Assert.Equal(400, (await server.PostAsync("/v1/completions", """{"prompt":"Hi","n":0}""")).Status);

        var response = await server.Http.GetAsync("/metrics");
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains(response.Content.Headers.ContentType!.Parameters, p => p.Name == "version" && p.Value == "0.0.4");
        var families = Parse(await response.Content.ReadAsStringAsync());

        var requests = families["modelcompiler_requests_total"].Samples;
        Assert.Equal(2, requests.Single(s => s.Labels["outcome"] == "success").Value);
        Assert.Equal(1, requests.Single(s => s.Labels["outcome"] == "bad_request").Value);
        foreach (var histogram in new[] { "modelcompiler_time_to_first_token_seconds", "modelcompiler_time_per_output_token_seconds", "modelcompiler_e2e_request_latency_seconds" })
        {
            Assert.Equal("histogram", families[histogram].Type);
            Assert.Equal(2, families[histogram].Samples.Single(s => s.Name == histogram + "_count").Value);
        }
        double Value(string name) => families[name].Samples.Single().Value;
        var engine = server.Backend.Metrics;
        Assert.Equal(engine.QueueDepth, Value("modelcompiler_queue_depth"));
        Assert.Equal(engine.RunningSequences, Value("modelcompiler_running_sequences"));
        Assert.Equal(engine.KvBlocksUsed, Value("modelcompiler_kv_blocks_used"));
        Assert.Equal(engine.KvBlocksFree, Value("modelcompiler_kv_blocks_free"));
        Assert.Equal(0.75, Value("modelcompiler_prefix_cache_hit_rate"));
        Assert.Equal(engine.Preemptions, Value("modelcompiler_preemptions_total"));
        Assert.Equal(engine.PromptTokens, Value("modelcompiler_prompt_tokens_total"));
        Assert.Equal(engine.GeneratedTokens, Value("modelcompiler_generation_tokens_total"));
        Assert.Equal("gauge", families["modelcompiler_queue_depth"].Type);
    }

    [Fact]
    public void The_exporter_escapes_labels_and_writes_special_values()
    {
        using var meter = new Meter("test.exporter");
        using var exporter = new PrometheusExporter(meter);
        var counter = meter.CreateCounter<long>("weird.name-x", description: "Line one\nline two \\ end");
        counter.Add(2, new KeyValuePair<string, object?>("path", "a\"b\\c\nd"));
        counter.Add(3, new KeyValuePair<string, object?>("path", "a\"b\\c\nd"));
        meter.CreateObservableGauge("g", () => double.PositiveInfinity);
        var histogram = meter.CreateHistogram<double>("h", "s", "H.", tags: null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 2] });
        histogram.Record(0.5);
        histogram.Record(1.5);
        histogram.Record(9);
        string text = exporter.Scrape();
        Assert.Contains("# HELP weird_name_x_total Line one\\nline two \\\\ end\n", text);
        Assert.Contains("weird_name_x_total{path=\"a\\\"b\\\\c\\nd\"} 5\n", text);
        Assert.Contains("g +Inf\n", text);
        Assert.Contains("h_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 11\nh_count 3\n", text);
        Parse(text);
    }
}
