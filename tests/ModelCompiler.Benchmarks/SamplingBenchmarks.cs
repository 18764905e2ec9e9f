using BenchmarkDotNet.Attributes;
using ModelCompiler.Runtime.Sampling;

namespace ModelCompiler.Benchmarks;

/// <summary>
/// The host <see cref="Sampler"/> on one row of the Llama 2 vocabulary (32,000 logits spread over ±8, about
/// the spread of a small model's next-token logits): the per-token cost of sampling on the CPU.
/// </summary>
public class SamplingBenchmarks : IWorkSize
{
    [Params("T0.8", "T0.8 k40 p0.9", "T0.8 p0.9", "T1 k0 p1")] public string Options { get; set; } = "T0.8 k40 p0.9";

    public double WeightBytes => 4.0 * 32000;
    public double Flops => 0;

    private float[] _logits = [];
    private Sampler _sampler = null!;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(5);
        _logits = Enumerable.Range(0, 32000).Select(_ => (float)(random.NextDouble() * 16 - 8)).ToArray();
        _sampler = new Sampler(32000, Parse(Options));
    }

    internal static SamplingOptions Parse(string text) => text switch
    {
        "T0.8" => new(Temperature: 0.8f),
        "T0.8 k40 p0.9" => new(Temperature: 0.8f, TopK: 40, TopP: 0.9f),
        "T0.8 p0.9" => new(Temperature: 0.8f, TopP: 0.9f),
        _ => new(Temperature: 1f),
    };

    [Benchmark]
    public int Sample() => _sampler.Sample(_logits);
}
