using ModelCompiler.Runtime.Server;
using Xunit;

namespace ModelCompiler.Tests.Server;

/// <summary>bench serve's load generator against the fake backend over real loopback HTTP.</summary>
public class LoadGeneratorTests
{
    [Fact]
    public async Task Abandoned_requests_are_counted_apart_and_the_server_cancels_them()
    {
        await using var test = await TestServer.StartAsync(b =>
        {
            b.TokenDelay = TimeSpan.FromMilliseconds(3);
            b.Metrics = new EngineMetrics(0, 0, 0, 64, 0, 0, 0, 0, 0); // drained: the generator reads these after the run
        });
        var options = new LoadOptions(test.Server.BaseAddress, Concurrency: 4, NumRequests: 24, NumPromptTokens: 8, NumGenTokens: 16, CancelFraction: 0.5);

        var report = await LoadGenerator.RunAsync(options);

        Assert.Equal(0, report.NumFailed);
        Assert.InRange(report.NumCancelled, 1, 23);            // 24 draws at one half: all or none would be a broken draw
        Assert.Equal(24, report.NumSucceeded + report.NumCancelled);
        // Each abandoned stream must reach the backend as a Cancel (the connection closes under the server).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (test.Backend.Streams.Count(s => s.CancelCalled) < report.NumCancelled && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.True(test.Backend.Streams.Count(s => s.CancelCalled) >= report.NumCancelled,
            $"{report.NumCancelled} requests were abandoned but the backend saw {test.Backend.Streams.Count(s => s.CancelCalled)} cancellations");
        Assert.NotNull(report.After);
        Assert.Equal(0, report.After!.KvBlocksUsed);
        Assert.Equal(64, report.After.KvBlocksFree);
    }

    [Fact]
    public async Task Without_cancellation_every_request_completes()
    {
        await using var test = await TestServer.StartAsync(b => b.Metrics = new EngineMetrics(0, 0, 0, 64, 0, 0, 0, 0, 0));
        var report = await LoadGenerator.RunAsync(new LoadOptions(test.Server.BaseAddress, 2, 6, 4, 8));
        Assert.Equal((6, 0, 0), (report.NumSucceeded, report.NumCancelled, report.NumFailed));
        Assert.True(report.NumGeneratedTokens > 0);
    }

    [Fact]
    public void A_request_body_depends_only_on_the_seed_and_the_index()
    {
        var options = new LoadOptions(new Uri("http://127.0.0.1/"), 1, 4, NumPromptTokens: 64, NumGenTokens: 8);
        int[] Prompt(LoadOptions o, int index)
        {
            using var body = System.Text.Json.JsonDocument.Parse(LoadGenerator.RequestBody("m", o, index));
            return body.RootElement.GetProperty("prompt").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        }

        int[] first = Prompt(options, 0);
        Assert.Equal(64, first.Length);
        Assert.Equal(1, first[0]);                                        // BOS
        Assert.All(first[1..], t => Assert.InRange(t, 3, 258));           // never BOS or EOS; inside every model's vocabulary
        Assert.Equal(first, Prompt(options with { Concurrency = 8 }, 0)); // the same request whatever the load shape
        Assert.NotEqual(first[1..3], Prompt(options, 1)[1..3]);           // no shared prefix between requests...
        Assert.NotEqual(first[1..], Prompt(options with { Seed = 2 }, 0)[1..]);  // ...or between seeds
        Assert.True(first[1..].Distinct().Count() > 40, "63 draws from 256 tokens repeat ~7 times on average");
    }

    [Fact]
    public void Gauges_are_read_from_unlabelled_prometheus_samples()
    {
        const string exposition = "# HELP modelcompiler_kv_blocks_used KV blocks.\n# TYPE modelcompiler_kv_blocks_used gauge\n" +
                                  "modelcompiler_kv_blocks_used 3\nmodelcompiler_requests_total{outcome=\"ok\"} 5\nmodelcompiler_queue_depth 0.5\n";
        var gauges = LoadGenerator.ParseGauges(exposition);
        Assert.Equal(3, gauges["modelcompiler_kv_blocks_used"]);
        Assert.Equal(0.5, gauges["modelcompiler_queue_depth"]);
        Assert.False(gauges.ContainsKey("modelcompiler_requests_total"));
    }
}
