using System;
using System.Collections.Generic;
using System.CommandLine;
using ModelCompiler.Runtime.Threading;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>Where the weights come from, after the command line was checked.</summary>
/// <param name="WeightsPath">A weights file, or null for random weights.</param>
/// <param name="RandomSeed">Seed of the random weights, or null for a file.</param>
/// <param name="DType">Type of the random weights' matrices (f32 for a file: the file decides).</param>
/// <param name="NumThreads">Kernel threads, or null for the worker pool's default.</param>
internal sealed record WeightSelection(string? WeightsPath, int? RandomSeed, WeightDType DType, int? NumThreads);

/// <summary>
/// The options every command that runs the model shares (generate, bench, later serve):
/// <c>--weights FILE | --random-weights SEED</c>, <c>--dtype</c> (random weights only) and <c>--threads</c>.
/// </summary>
internal sealed class WeightOptions
{
    private readonly ModelConfig _config;

    public WeightOptions(ModelConfig config)
    {
        _config = config;
        Weights = new Option<string>("--weights") { Description = $"Weights file (format from its magic bytes); default: {config.WeightsPath} in the shared folder." };
        RandomWeights = new Option<int?>("--random-weights") { Description = "Use deterministic random weights from this seed instead of a file." };
        DType = new Option<string>("--dtype") { Description = "Matrix type of the random weights: f32, f16, bf16, q8_0 or q4_0 (default f32)." };
        Threads = new Option<int?>("--threads") { Description = "Kernel threads (default: one per logical core; one for models narrower than 256)." };
    }

    public Option<string> Weights { get; }
    public Option<int?> RandomWeights { get; }
    public Option<string> DType { get; }
    public Option<int?> Threads { get; }

    /// <summary>Adds the options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        command.Options.Add(Weights);
        command.Options.Add(RandomWeights);
        command.Options.Add(DType);
        command.Options.Add(Threads);
    }

    /// <summary>Checks the options' combination; on failure <paramref name="error"/> is one line for the user.</summary>
    public bool TryGetSelection(ParseResult result, out WeightSelection selection, out string error)
    {
        selection = null!;
        string? path = result.GetValue(Weights);
        int? seed = result.GetValue(RandomWeights);
        string? dtypeName = result.GetValue(DType);
        int? threads = result.GetValue(Threads);
        error = "";
        if (path is not null && seed is not null)
            error = "--weights and --random-weights exclude each other; give one";
        else if (threads is < 1)
            error = $"--threads must be at least 1, got {threads}";
        var dtype = WeightDType.F32;
        if (error.Length == 0 && dtypeName is not null)
        {
            if (!WeightDTypes.TryParse(dtypeName, out dtype))
                error = $"--dtype must be one of {string.Join(", ", Names())}; got '{dtypeName}'";
            else if (seed is null)
                error = "--dtype applies to --random-weights only; a weights file keeps its stored types";
        }
        if (error.Length > 0) return false;
        selection = new WeightSelection(seed is null ? path ?? SharedPaths.Resolve(_config.WeightsPath) : null, seed, dtype, threads);
        return true;
    }

    /// <summary>
    /// Applies the thread count, then opens the selected weights for <paramref name="config"/>: a file
    /// checked against the description, or random weights converted to the selected type. Harmless
    /// differences go to <paramref name="note"/>.
    /// </summary>
    /// <exception cref="ModelLoadException">The file cannot be used with this engine.</exception>
    public static IWeightSource Open(ModelConfig config, WeightSelection selection, Action<string> note)
    {
        WorkerPool.SetThreadCount(selection.NumThreads ?? DefaultThreadCount(config));
        if (selection.RandomSeed is int seed)
        {
            var random = InMemoryWeightSource.CreateRandomLlama(config, seed);
            if (selection.DType == WeightDType.F32) return random;
            var converted = new ConvertedWeightSource(random, selection.DType);
            if (converted.KeptAsF32.Count > 0)
                note($"{converted.KeptAsF32.Count} matrices have rows that are not whole {WeightDTypes.Name(selection.DType)} blocks and stay f32 (e.g. {converted.KeptAsF32[0]})");
            return converted;
        }

        var source = WeightFiles.OpenChecked(selection.WeightsPath!, config, out var notes);
        foreach (var line in notes) note(line);
        return source;
    }

    /// <summary>
    /// Threads when <c>--threads</c> is not given: every core, except for tiny models whose kernels are too
    /// short to amortise a hand-off (measured: Stories260K prefill ran 3× faster on one thread than on two).
    /// </summary>
    internal static int DefaultThreadCount(ModelConfig config) => config.Dim < 256 ? 1 : Environment.ProcessorCount;

    private static IEnumerable<string> Names()
    {
        foreach (var d in Enum.GetValues<WeightDType>()) yield return WeightDTypes.Name(d);
    }
}
