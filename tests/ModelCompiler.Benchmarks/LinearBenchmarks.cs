using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Threading;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Benchmarks;

/// <summary>
/// <c>CpuKernels.Linear</c> at Llama110M projection shapes. For decode steps (1 and 16 tokens) the weights are cycled
/// over enough copies (≥ 256 MB in all) that every call reads them from DRAM, as a decode step does with a model
/// larger than L3; a prefill (128 tokens) reuses one copy, its cost being the arithmetic.
/// </summary>
public unsafe class LinearBenchmarks : IWorkSize
{
    private const long MinTotalWeightBytes = 256L << 20;

    [Params("f32", "bf16", "f16", "q8_0", "q4_0")] public string DType { get; set; } = "f32";
    /// <summary>in x out.</summary>
    [Params("768x2304", "768x4096", "2048x768", "768x32000")] public string Shape { get; set; } = "768x2304";
    /// <summary>1: a decode step; 16: a batched decode step (16 sequences); 128: a prefill.</summary>
    [Params(1, 16, 128)] public int NumTokens { get; set; } = 1;
    [Params(1, 2)] public int Threads { get; set; } = 2;
    /// <summary>
    /// q8_0/q4_0: run on the stored GGUF rows instead of the load-time packed copy the engine makes
    /// (<c>ModelWeights.PackForCpu</c>); quick mode spells it <c>q8_0-stored</c>.
    /// </summary>
    public bool Stored { get; set; }

    private int InDim => int.Parse(Shape.Split('x')[0]);
    private int OutDim => int.Parse(Shape.Split('x')[1]);
    private WeightDType WeightType => WeightDTypes.TryParse(DType, out var d) ? d : throw new ArgumentException(DType);

    public double WeightBytes => NumTokens == 1 ? WeightDTypes.SizeInBytes(WeightType, (long)InDim * OutDim) : 0;
    public double Flops => NumTokens > 1 ? 2.0 * NumTokens * InDim * OutDim : 0;

    private WeightMatrix[] _copies = [];
    private ModelWeights[] _buffers = [];
    private float[] _x = [], _y = [];
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        WorkerPool.SetThreadCount(Threads);
        var random = new Random(1);
        var weights = new float[InDim * OutDim];
        for (int i = 0; i < weights.Length; i++) weights[i] = (float)(random.NextDouble() * 2 - 1) * 0.05f;
        long bytes = WeightDTypes.SizeInBytes(WeightType, weights.Length);
        int copies = NumTokens <= 16 && Environment.GetEnvironmentVariable("MC_BENCH_HOT") is null ? (int)Math.Max(1, (MinTotalWeightBytes + bytes - 1) / bytes) : 1;
        _copies = new WeightMatrix[copies];
        _buffers = new ModelWeights[copies];
        var encoded = new byte[bytes];
        WeightConversion.Encode(weights, WeightType, encoded);
        for (int c = 0; c < copies; c++)
        {
            // Bound like the engine binds them: the stored rows, plus the packed copy for q8_0/q4_0.
            _buffers[c] = new ModelWeights(1, null);
            encoded.CopyTo(_buffers[c].Allocate(0, WeightType, OutDim, InDim));
            if (!Stored) _buffers[c].PackForCpu(0);
            _copies[c] = _buffers[c].Matrix(0);
        }
        _x = new float[NumTokens * InDim];
        for (int i = 0; i < _x.Length; i++) _x[i] = (float)(random.NextDouble() * 2 - 1);
        _y = new float[NumTokens * OutDim];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var b in _buffers) b.Dispose();
        WorkerPool.SetThreadCount(Environment.ProcessorCount);
    }

    [Benchmark]
    public void Linear()
    {
        var w = _copies[_next];
        _next = _next + 1 == _copies.Length ? 0 : _next + 1;
        CpuKernels.Linear(_x, NumTokens, w, _y, InDim, OutDim);
    }
}
