using System;
using System.CommandLine;
using System.Globalization;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Tokenization;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>The <c>generate</c> command: prompt in, prompt and continuation out.</summary>
internal static class GenerateCommand
{
    public static Command Create(CompiledModel engine)
    {
        var config = engine.Config;
        var prompt = new Option<string>("--prompt") { Description = "Text to continue.", DefaultValueFactory = _ => "" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 is greedy.", DefaultValueFactory = _ => 0.8f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens; 0 disables.", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling probability mass; 1 disables.", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<ulong?>("--seed") { Description = "Random seed (default: from the clock)." };
        var weightOptions = new WeightOptions(config);
        var deviceOptions = new DeviceOptions();
        var tokenizer = TokenizerChoice.CreateOption(config);

        var command = new Command("generate", "Generate text from a prompt; prints the prompt and its continuation to stdout.")
        {
            prompt, maxTokens, temperature, topK, topP, seed, tokenizer,
        };
        weightOptions.AddTo(command);
        deviceOptions.AddTo(command);
        command.SetAction(result =>
        {
            int numTokens = result.GetValue(maxTokens);
            if (numTokens <= 0) return Fail($"--max-tokens must be positive, got {numTokens}");
            SamplingOptions options;
            try
            {
                options = new SamplingOptions(result.GetValue(temperature), result.GetValue(topK), result.GetValue(topP),
                    result.GetValue(seed) ?? (ulong)DateTime.UtcNow.Ticks);
            }
            catch (ArgumentOutOfRangeException e)
            {
                return Fail(e.Message.Split('\n')[0].Trim());
            }
            if (!weightOptions.TryGetSelection(result, out var weights, out string error)) return Fail(error);
            string? tokenizerPath = result.GetValue(tokenizer);
            if (!deviceOptions.TryResolve(result, engine, out var device, out error)) return Fail(error);
            return Run(engine, result.GetValue(prompt) ?? "", numTokens, options, weights, device, tokenizerPath);
        });
        return command;
    }

    /// <summary>
    /// Opens the weights, then prints <paramref name="device"/>'s note (after the weights, so that a bad
    /// file is still one error line) and creates the runner on the chosen device.
    /// </summary>
    internal static IModelRunner OpenRunner(CompiledModel engine, WeightSelection weights, DeviceChoice device)
    {
        try
        {
            var source = WeightOptions.Open(engine.Config, weights, note => Console.Error.WriteLine("note: " + note));
            if (device.Note is not null) Console.Error.WriteLine("note: " + device.Note);
            else if (device.Device is not null) Console.Error.WriteLine("note: running on " + device.Device.Name);
            var runner = device.CreateRunner(engine, source);
            if (device.Device is CudaDriverDevice { ModuleTarget: string target } gpu && target.StartsWith("compute_", StringComparison.Ordinal))
            {
                var (major, minor) = NvrtcCompiler.Version();
                Console.Error.WriteLine($"note: NVRTC {major}.{minor} cannot compile for sm_{gpu.ComputeCapability.Major}{gpu.ComputeCapability.Minor}: " +
                    $"the kernels go to the driver as PTX for {target} and are JIT-compiled at load");
            }
            return runner;
        }
        catch
        {
            device.Device?.Dispose();
            throw;
        }
    }

    internal static int Fail(string message)
    {
        Console.Error.WriteLine("error: " + message);
        return ModelHost.UsageOrInputError;
    }

    private static int Run(CompiledModel engine, string prompt, int maxTokens, SamplingOptions options, WeightSelection weights, DeviceChoice device, string? tokenizerPath)
    {
        var config = engine.Config;
        using var runner = OpenRunner(engine, weights, device);
        var tokenizer = TokenizerChoice.Load(config, tokenizerPath, weights.WeightsPath);
        var generator = new TextGenerator(runner);
        int[] promptTokens = tokenizer.Encode(prompt, addBos: true);
        if (promptTokens.Length >= config.MaxSeqLen)
            return Fail($"the prompt is {promptTokens.Length} tokens long; the context holds {config.MaxSeqLen}");

        // Console.Out (UTF-8 on Linux) rather than the raw stream, so tests can capture it.
        var stdout = Console.Out;
        stdout.Write(prompt);
        stdout.Flush();
        var detokenizer = new StreamingDetokenizer(tokenizer, promptTokens[^1]);
        var stats = generator.Generate(promptTokens, maxTokens, new Sampler(config.VocabSize, options), token =>
        {
            if (token == TextGenerator.Bos || token == TextGenerator.Eos) return;
            stdout.Write(detokenizer.Push(token));
            stdout.Flush();
        });
        stdout.Write(detokenizer.Flush());
        stdout.Write('\n');
        stdout.Flush();

        var ci = CultureInfo.InvariantCulture;
        Console.Error.WriteLine(string.Format(ci,
            "prompt tokens: {0}, generated tokens: {1}, time to first token: {2:F1} ms, decode: {3:F1} tokens/s, seed: {4}",
            stats.NumPromptTokens, stats.NumGeneratedTokens, stats.TimeToFirstToken.TotalMilliseconds, stats.DecodeTokensPerSecond, options.Seed));
        return 0;
    }
}
