using BenchmarkDotNet.Running;

namespace ModelCompiler.Benchmarks;

/// <summary>
/// Kernel benchmarks at Llama110M shapes (dim 768, hidden 2048, vocab 32000):
/// <c>dotnet run -c Release --project tests/ModelCompiler.Benchmarks -- --filter '*'</c>
/// (or e.g. <c>--filter '*Linear*'</c>). The GB/s column is weight bytes read per call ÷ median time (decode's
/// memory roofline figure); GFLOP/s is 2·tokens·in·out ÷ median time (prefill's compute figure).
/// <c>-- quick</c> skips BenchmarkDotNet and prints stopwatch medians of the main cases in a few seconds.
/// </summary>
public static class Program
{
    public static void Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "quick") { QuickRun.Run(args.Skip(1).ToArray()); return; }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, new BenchmarkConfig());
    }
}
