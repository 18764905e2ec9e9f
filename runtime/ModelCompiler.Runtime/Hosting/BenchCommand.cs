using System;
using System.CommandLine;
using System.IO;
using System.Text;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Diagnostics;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Interop.Cuda;
using ModelCompiler.Runtime.Threading;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// The <c>bench</c> command: times prefill and decode on synthetic prompts, then measures this machine's
/// copy bandwidth and FMA peak and prints the speeds as fractions of those roofs. A table goes to stdout,
/// or with <c>--json</c> one JSON object; notes and errors go to stderr.
/// </summary>
internal static class BenchCommand
{
    public static Command Create(CompiledModel engine)
    {
        var config = engine.Config;
        var weightOptions = new WeightOptions(config);
        var deviceOptions = new DeviceOptions();
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Synthetic prompt tokens prefilled per repetition.", DefaultValueFactory = _ => Math.Min(128, config.MaxSeqLen / 2) };
        var genTokens = new Option<int>("--gen-tokens") { Description = "Decode steps per repetition (greedy, EOS ignored).", DefaultValueFactory = _ => Math.Min(128, config.MaxSeqLen / 2) };
        var repetitions = new Option<int>("--repetitions") { Description = "Timed repetitions, each a fresh sequence.", DefaultValueFactory = _ => 5 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed repetitions before them (at least; see --warmup-seconds).", DefaultValueFactory = _ => 1 };
        var warmupSeconds = new Option<double>("--warmup-seconds")
        {
            Description = "Keep warming up until this many seconds have passed, unless --warmup is 0 (default 3 under the JIT, so tiered compilation has promoted the hot code; 0 in a Native AOT build).",
            DefaultValueFactory = _ => BenchmarkOptions.DefaultMinWarmupSeconds,
        };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of the table." };
        var noRoofline = new Option<bool>("--no-roofline") { Description = "Skip measuring the machine's copy bandwidth and FMA peak." };
        // Probe sizes, for tests that need the command to be quick; the defaults are the measurement.
        var probeCopyMiB = new Option<int>("--probe-copy-mib") { Hidden = true, DefaultValueFactory = _ => 512 };
        var probeFmaIterations = new Option<long>("--probe-fma-iterations") { Hidden = true, DefaultValueFactory = _ => 50_000_000 };

        var command = new Command("bench", "Measure prefill and decode speed against this machine's memory and compute roofs.")
        {
            promptTokens, genTokens, repetitions, warmup, warmupSeconds, json, noRoofline, probeCopyMiB, probeFmaIterations,
        };
        weightOptions.AddTo(command);
        deviceOptions.AddTo(command);
        command.SetAction(result =>
        {
            var options = new BenchmarkOptions(result.GetValue(promptTokens), result.GetValue(genTokens), result.GetValue(repetitions), result.GetValue(warmup))
            {
                MinWarmupSeconds = result.GetValue(warmupSeconds),
            };
            if (options.Problem(config) is string problem) return GenerateCommand.Fail(problem);
            if (!weightOptions.TryGetSelection(result, out var weights, out string error)) return GenerateCommand.Fail(error);
            int copyMiB = result.GetValue(probeCopyMiB);
            long fmaIterations = result.GetValue(probeFmaIterations);
            if (copyMiB < 1 || fmaIterations < 1) return GenerateCommand.Fail("the probe sizes must be positive");
            var probes = result.GetValue(noRoofline) ? null : new ProbeSizes((long)copyMiB << 20, fmaIterations);
            if (!deviceOptions.TryResolve(result, engine, out var device, out error)) return GenerateCommand.Fail(error);
            // The roofs are this machine's CPU's: they say nothing about a GPU's run.
            if (device.Device is not null) probes = null;
            return Run(engine, options, weights, device, probes, result.GetValue(json));
        });
        return command;
    }

    private sealed record ProbeSizes(long CopyArraySizeInBytes, long FmaIterations);

    private static int Run(CompiledModel engine, BenchmarkOptions options, WeightSelection weights, DeviceChoice device, ProbeSizes? probes, bool json)
    {
        var config = engine.Config;
        IWeightSource source;
        try
        {
            source = WeightOptions.Open(config, weights, note => Console.Error.WriteLine("note: " + note));
        }
        catch
        {
            device.Device?.Dispose();
            throw;
        }
        if (device.Note is not null) Console.Error.WriteLine("note: " + device.Note);
        string description = source.Description;
        BenchmarkTimings timings;
        ModelCost cost;
        string dtypes;
        long peakRss;
        long? runPeakRss;
        if (device.Device is ICudaDevice gpu)
        {
            // The weights are bound on the host for the cost model, uploaded (decoded to f32), then freed.
            ModelWeights host;
            try { host = WeightBinder.Bind(engine.WeightSpecs, source, config); }
            catch { source.Dispose(); gpu.Dispose(); throw; }
            CudaModelRunner cudaRunner;
            using (host)
            {
                cost = ModelCost.Of(engine, host, everyRow: true);
                dtypes = $"f32 on {gpu.Name} (stored: {ModelCost.MatrixDTypes(engine, host)})";
                try
                {
                    cudaRunner = new CudaModelRunner(gpu, engine, host, ownsDevice: true);
                }
                catch (Exception e) when (e is CudaException or NvrtcCompileException or Cuda.Emulation.EmulatorCompileException)
                {
                    throw new ModelLoadException($"{gpu.Name}: {e.Message.Split('\n')[0].Trim()}");
                }
            }
            using (cudaRunner)
            {
                Console.Error.WriteLine("note: running on " + gpu.Name + "; the memory and FMA roofs are the CPU's, so they are not measured");
                timings = Benchmark.Run(cudaRunner, options);
            }
            peakRss = ProcessMemory.PeakResidentBytes();
            runPeakRss = null;
        }
        else
        {
            using (var runner = new ModelRunner(engine, source))
            {
                cost = ModelCost.Of(engine, runner.Weights);
                dtypes = ModelCost.MatrixDTypes(engine, runner.Weights);
                // Loading random weights holds an f32 copy (and managed arrays) for a while; the peak after
                // loading is what running the model needs, so it is reported beside the process's peak.
                // Aggressive: the GC also returns the freed managed arrays' pages to the OS, so RSS drops now.
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                long loadPeak = ProcessMemory.PeakResidentBytes();
                bool reset = ProcessMemory.TryResetPeak();
                timings = Benchmark.Run(runner, options);
                long afterPeak = ProcessMemory.PeakResidentBytes();
                peakRss = reset ? Math.Max(loadPeak, afterPeak) : afterPeak;
                runPeakRss = reset ? afterPeak : null;
            }
        }
        // After the model is gone, so the probe arrays do not add to its peak RSS or compete for memory.
        var limits = probes is null ? null : Roofline.Measure(Environment.ProcessorCount, probes.CopyArraySizeInBytes, probes.FmaIterations);

        var report = new BenchReport(config.Name, description, dtypes, WorkerPool.ThreadCount, timings, cost, peakRss, runPeakRss, limits);
        // Console.Out rather than the raw stream, so tests can capture it.
        if (json)
        {
            using var buffer = new MemoryStream();
            report.WriteJson(buffer);
            Console.Out.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
        }
        else
        {
            report.WriteTable(Console.Out);
        }
        Console.Out.Flush();
        return 0;
    }
}
