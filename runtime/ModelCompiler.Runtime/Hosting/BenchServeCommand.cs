using System;
using System.Buffers;
using System.CommandLine;
using System.Net.Http;
using System.Text;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using ModelCompiler.Runtime.Server;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// <c>bench serve --concurrency N --requests M --prompt-tokens P --gen-tokens G [--url U] [--json]</c>: load
/// against a running server, or (without <c>--url</c>) against this engine served in process on a free
/// loopback port. Reports request throughput, generated tokens/s, TTFT/TPOT/latency p50/p95/p99 and errors.
/// </summary>
internal static class BenchServeCommand
{
    public static Command Create(CompiledModel engine, ServeBackendFactory backends)
    {
        var config = engine.Config;
        var concurrency = new Option<int>("--concurrency") { Description = "Requests in flight at once.", DefaultValueFactory = _ => 1 };
        var requests = new Option<int>("--requests") { Description = "Requests in all.", DefaultValueFactory = _ => 16 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length in tokens.", DefaultValueFactory = _ => 128 };
        var genTokens = new Option<int>("--gen-tokens") { Description = "max_tokens per request.", DefaultValueFactory = _ => 128 };
        var url = new Option<string>("--url") { Description = "A running server (e.g. http://127.0.0.1:8000); default: serve this engine in process." };
        var apiKey = new Option<string>("--api-key") { Description = "Bearer key for --url." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var cancelFraction = new Option<double>("--cancel-fraction") { Description = "Share of requests the client abandons part-way (a soak test of cancellation), 0 to 1.", DefaultValueFactory = _ => 0 };
        var shared = new ServeCommand.ServerOptionSet(config);
        var command = new Command("serve", "Load-test the OpenAI-compatible server (streaming /v1/completions).")
        {
            concurrency, requests, promptTokens, genTokens, url, apiKey, json, cancelFraction,
        };
        shared.AddTo(command);
        backends.AddOptions(command);
        command.SetAction(async (result, cancellationToken) =>
        {
            var options = new LoadOptions(new Uri("http://127.0.0.1/"), result.GetValue(concurrency), result.GetValue(requests),
                result.GetValue(promptTokens), result.GetValue(genTokens), result.GetValue(apiKey), CancelFraction: result.GetValue(cancelFraction));
            if (options.Concurrency < 1 || options.NumRequests < 1 || options.NumPromptTokens < 1 || options.NumGenTokens < 1)
                return Fail("--concurrency, --requests, --prompt-tokens and --gen-tokens must be positive");
            if (!(options.CancelFraction >= 0 && options.CancelFraction <= 1))
                return Fail($"--cancel-fraction must be between 0 and 1, got {options.CancelFraction}");
            LoadReport report;
            try
            {
                string? target = result.GetValue(url);
                if (target is not null)
                {
                    // The engine's options configure the in-process server only: against --url they would be ignored
                    // silently, and the report would look as if they had applied.
                    var ownOptions = new Option[] { concurrency, requests, promptTokens, genTokens, url, apiKey, json, cancelFraction };
                    foreach (var child in result.CommandResult.Children)
                        if (child is System.CommandLine.Parsing.OptionResult { Implicit: false } given && Array.IndexOf(ownOptions, given.Option) < 0)
                            return Fail($"{given.Option.Name} configures the in-process server; with --url, give it to that server's serve command instead");
                    if (!Uri.TryCreate(target.EndsWith('/') ? target : target + "/", UriKind.Absolute, out var baseAddress))
                        return Fail($"--url is not an absolute URL: '{target}'");
                    report = await LoadGenerator.RunAsync(options with { BaseAddress = baseAddress }, null, cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    if (options.NumPromptTokens + options.NumGenTokens > config.MaxSeqLen)
                        return Fail($"--prompt-tokens + --gen-tokens is {options.NumPromptTokens + options.NumGenTokens}; the context holds {config.MaxSeqLen}");
                    report = await RunInProcessAsync(config, shared, backends, result, options, cancellationToken).ConfigureAwait(false);
                }
            }
            catch (ArgumentException e)
            {
                return Fail(e.Message);
            }
            catch (HttpRequestException e)
            {
                return Fail("cannot reach the server: " + e.Message);
            }
            if (result.GetValue(json))
            {
                var buffer = new ArrayBufferWriter<byte>();
                using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true })) report.WriteJson(writer);
                Console.Out.WriteLine(Encoding.UTF8.GetString(buffer.WrittenSpan));
            }
            else
            {
                Console.Out.Write(report.ToText());
            }
            return 0;
        });
        return command;
    }

    private static async Task<LoadReport> RunInProcessAsync(ModelConfig config, ServeCommand.ServerOptionSet shared, ServeBackendFactory backends,
        ParseResult result, LoadOptions options, CancellationToken cancellationToken)
    {
        var loader = backends.CreateLoader(result);
        var tokenizer = shared.LoadTokenizer(result, config);
        var backend = loader();
        try
        {
            var serverOptions = new ServerOptions { Port = 0, ChatTemplate = shared.Template(result) };
            await using var server = OpenAiServer.Create(backend, tokenizer, serverOptions);
            await server.StartAsync(cancellationToken).ConfigureAwait(false);
            Console.Error.WriteLine($"serving {config.Name} in process at {server.BaseAddress}");
            return await LoadGenerator.RunAsync(options with { BaseAddress = server.BaseAddress }, ResidentMiBAfterCollection, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            (backend as IDisposable)?.Dispose();
        }
    }

    private static double ResidentMiBAfterCollection()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Diagnostics.ProcessMemory.CurrentResidentBytes() / (1024.0 * 1024.0);
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine("error: " + message.Split('\n')[0].Trim());
        return ModelHost.UsageOrInputError;
    }
}
