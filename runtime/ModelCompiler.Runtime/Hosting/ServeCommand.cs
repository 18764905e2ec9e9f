using System;
using System.CommandLine;
using System.Threading;
using System.Threading.Tasks;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Server;
using ModelCompiler.Runtime.Serving;
using ModelCompiler.Runtime.Tokenization;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// Where <c>serve</c> and in-process <c>bench serve</c> get their engine: <see cref="AddOptions"/> adds the
/// backend's command-line options (the weight options shared with generate and bench);
/// <see cref="CreateLoader"/> checks them against a parse result and returns the loader that builds the
/// backend. Bad options throw <see cref="ArgumentException"/> (one line, exit code 2) before anything
/// listens; the loader runs in the background while <c>/health</c> answers 503, and may throw
/// <see cref="ModelLoadException"/>.
/// </summary>
/// <param name="AddOptions">Adds the backend's options to a command.</param>
/// <param name="CreateLoader">Checks the options; returns the loader.</param>
internal sealed record ServeBackendFactory(Action<Command> AddOptions, Func<ParseResult, Func<IGenerationBackend>> CreateLoader)
{
    /// <summary>
    /// The serving engine over the shared weight options (<c>--weights</c> | <c>--random-weights</c>,
    /// <c>--dtype</c>, <c>--threads</c>), <c>--device auto|cpu|cuda</c> (as for generate and bench) and
    /// <c>--max-batch-tokens</c> (the scheduler's step budget, see <see cref="InferenceEngineOptions.MaxBatchTokens"/>): weights
    /// bound to the compiled model, the runner for the device (the CPU <see cref="ModelRunner"/>, or
    /// <see cref="Cuda.CudaModelRunner"/> with the KV pool on the GPU), and an <see cref="InferenceEngine"/>
    /// (continuous batching, prefix caching) that owns the runner, stepping on its own thread.
    /// </summary>
    public static ServeBackendFactory ForEngine(CompiledModel engine)
    {
        var config = engine.Config;
        var weights = new WeightOptions(config);
        var device = new DeviceOptions();
        int leastBatchTokens = InferenceEngineOptions.MinBatchTokens(config);
        var maxBatchTokens = new Option<int?>("--max-batch-tokens")
        {
            Description = $"Tokens one engine step computes at most: running decodes plus prompt chunks ({leastBatchTokens} to {config.MaxBatchTokens}; " +
                $"default {config.MaxBatchTokens}, the description's maxBatchTokens). Smaller keeps other requests' prompts from holding up running streams for long.",
        };
        void AddOptions(Command command)
        {
            weights.AddTo(command);
            device.AddTo(command);
            command.Options.Add(maxBatchTokens);
        }
        return new ServeBackendFactory(AddOptions, result =>
        {
            if (!weights.TryGetSelection(result, out var selection, out string error)) throw new ArgumentException(error);
            // Resolved (and a GPU probed) before anything listens, so `--device cuda` without one fails with exit code 2.
            if (!device.TryResolve(result, engine, out var choice, out error)) throw new ArgumentException(error);
            int? budget = result.GetValue(maxBatchTokens);
            if (budget is int b && !InferenceEngineOptions.AllowsBatchTokens(config, b))
                throw new ArgumentException($"--max-batch-tokens must be between {leastBatchTokens} and {config.MaxBatchTokens} (the description's maxBatchTokens), got {b}");
            var engineOptions = new InferenceEngineOptions { MaxBatchTokens = budget };
            return () =>
            {
                var runner = GenerateCommand.OpenRunner(engine, selection, choice);
                var inference = new InferenceEngine(runner, engineOptions, ownsRunner: true);
                inference.Start();
                return inference;
            };
        });
    }
}

/// <summary>The <c>serve</c> command: the OpenAI-compatible HTTP server (see <see cref="OpenAiServer"/>).</summary>
internal static class ServeCommand
{
    /// <summary>Options shared by <c>serve</c> and <c>bench serve</c>'s in-process server.</summary>
    internal sealed class ServerOptionSet
    {
        private readonly string _defaultTemplate;

        public Option<string> Tokenizer { get; }
        public Option<string> ChatTemplate { get; }

        public ServerOptionSet(ModelConfig config)
        {
            Tokenizer = TokenizerChoice.CreateOption(config);
            ChatTemplate = new Option<string>("--chat-template") { Description = $"Chat prompt format: plain (<|user|>…<|assistant|>) or llama2 ([INST]); default: the description's chatTemplate ({config.ChatTemplate})." };
            _defaultTemplate = config.ChatTemplate;
        }

        public void AddTo(Command command)
        {
            command.Options.Add(Tokenizer);
            command.Options.Add(ChatTemplate);
        }

        public Llama2cTokenizer LoadTokenizer(ParseResult result, ModelConfig config) =>
            TokenizerChoice.Load(config, result.GetValue(Tokenizer), TokenizerChoice.WeightsPath(result, config));

        public Server.ChatTemplate Template(ParseResult result)
        {
            string name = result.GetValue(ChatTemplate) ?? _defaultTemplate;
            return Server.ChatTemplate.FromName(name) ?? throw new ArgumentException($"--chat-template must be plain or llama2, got '{name}'");
        }
    }

    public static Command Create(CompiledModel engine, ServeBackendFactory backends)
    {
        var config = engine.Config;
        var host = new Option<string>("--host") { Description = "Address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface).", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0: a free one).", DefaultValueFactory = _ => ServerOptions.DefaultPort };
        var apiKey = new Option<string>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1/ requests." };
        var requestTimeout = new Option<double?>("--request-timeout") { Description = "Seconds after which a running request is cancelled and its KV blocks freed (default: none)." };
        var shared = new ServerOptionSet(config);
        var command = new Command("serve", "Serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics).")
        {
            host, port, apiKey, requestTimeout,
        };
        shared.AddTo(command);
        backends.AddOptions(command);
        command.SetAction(async (result, cancellationToken) =>
        {
            ServerOptions options;
            Func<IGenerationBackend> loader;
            try
            {
                options = new ServerOptions
                {
                    Host = result.GetValue(host) ?? "127.0.0.1",
                    Port = result.GetValue(port),
                    ApiKey = result.GetValue(apiKey),
                    ChatTemplate = shared.Template(result),
                    RequestTimeout = result.GetValue(requestTimeout) switch
                    {
                        null => null,
                        > 0 and < 1e6 and double seconds => TimeSpan.FromSeconds(seconds),
                        double bad => throw new ArgumentException($"--request-timeout must be a positive number of seconds, got {bad}"),
                    },
                };
                loader = backends.CreateLoader(result);
            }
            catch (ArgumentException e)
            {
                return Fail(e.Message);
            }
            var tokenizer = shared.LoadTokenizer(result, config);
            return await RunAsync(config, tokenizer, options, loader, cancellationToken).ConfigureAwait(false);
        });
        return command;
    }

    private static async Task<int> RunAsync(ModelConfig config, Llama2cTokenizer tokenizer, ServerOptions options, Func<IGenerationBackend> loader, CancellationToken cancellationToken)
    {
        using var backend = new DeferredBackend(config.Name, config.MaxSeqLen, Task.Run(loader, cancellationToken));
        OpenAiServer server;
        try
        {
            server = OpenAiServer.Create(backend, tokenizer, options);
        }
        catch (ArgumentException e)
        {
            return Fail(e.Message);
        }
        await using (server.ConfigureAwait(false))
        {
            try
            {
                await server.StartAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (System.IO.IOException e)
            {
                return Fail($"cannot listen on {options.Host}:{options.Port}: {e.Message}");
            }
            Console.Error.WriteLine($"serving {config.Name} at {server.BaseAddress} (OpenAI API under {server.BaseAddress}v1/); loading weights…");
            var shutdown = server.WaitForShutdownAsync(cancellationToken);
            try
            {
                await backend.Loading.ConfigureAwait(false);
            }
            catch (Exception e) when (e is ModelLoadException or System.IO.IOException)
            {
                return Fail(e.Message);
            }
            Console.Error.WriteLine("ready");
            await shutdown.ConfigureAwait(false);
            Console.Error.WriteLine("stopping");
        }
        return 0;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine("error: " + message.Split('\n')[0].Trim());
        return ModelHost.UsageOrInputError;
    }
}
