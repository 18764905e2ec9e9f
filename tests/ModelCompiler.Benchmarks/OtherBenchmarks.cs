using BenchmarkDotNet.Attributes;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Threading;

namespace ModelCompiler.Benchmarks;

/// <summary>Paged attention at Llama110M (12 heads of 64), f32 or f16 cache: one decode token after a long context, and a 128-token prefill.</summary>
public class AttentionBenchmarks : IWorkSize
{
    private const int NumHeads = 12, HeadDim = 64, BlockSize = 16;

    [Params(1, 128)] public int NumTokens { get; set; } = 1;
    [Params(512)] public int Context { get; set; } = 512;
    [Params(1, 2)] public int Threads { get; set; } = 2;
    [Params(KvCacheDType.F32, KvCacheDType.F16)] public KvCacheDType KvDType { get; set; } = KvCacheDType.F32;

    /// <summary>KV bytes read (decode) per call.</summary>
    public double WeightBytes => NumTokens == 1 ? 2.0 * Context * NumHeads * HeadDim * KvCacheDTypes.ElementSizeInBytes(KvDType) : 0;
    /// <summary>QKᵀ and PV multiply-adds of the causal prefill.</summary>
    public double Flops => NumTokens > 1 ? 4.0 * NumHeads * HeadDim * (Context - NumTokens / 2.0) * NumTokens : 0;

    private ForwardBatch _batch = null!;
    private PagedKvCache _cache = null!;
    private float[] _q = [], _output = [];

    [GlobalSetup]
    public void Setup()
    {
        WorkerPool.SetThreadCount(Threads);
        int blocks = Context / BlockSize;
        _cache = new PagedKvCache(1, blocks, BlockSize, NumHeads * HeadDim, KvDType);
        var random = new Random(2);
        var key = new float[NumHeads * HeadDim];
        var value = new float[NumHeads * HeadDim];
        for (int block = 0; block < blocks; block++)
            for (int offset = 0; offset < BlockSize; offset++)
            {
                for (int i = 0; i < key.Length; i++) { key[i] = (float)random.NextDouble() - 0.5f; value[i] = (float)random.NextDouble() - 0.5f; }
                _cache.WriteToken(0, block, offset, key, value);
            }
        _batch = new ForwardBatch(NumTokens, 1, blocks, BlockSize);
        var table = Enumerable.Range(0, blocks).Reverse().ToArray();
        _batch.AddSequence(new int[NumTokens], Context - NumTokens, table);
        _q = new float[NumTokens * NumHeads * HeadDim];
        for (int i = 0; i < _q.Length; i++) _q[i] = (float)random.NextDouble() - 0.5f;
        _output = new float[_q.Length];
    }

    [GlobalCleanup]
    public void Cleanup() => WorkerPool.SetThreadCount(Environment.ProcessorCount);

    [Benchmark]
    public void PagedAttention() =>
        CpuKernels.PagedAttention(_q, NumHeads * HeadDim, 0, _batch, _cache, 0, NumHeads, NumHeads, HeadDim, _output);
}

/// <summary>RMSNorm and SwiGLU at Llama110M widths.</summary>
public class NormBenchmarks : IWorkSize
{
    [Params(1, 128)] public int NumTokens { get; set; } = 1;

    public double WeightBytes => 0;
    public double Flops => 0;

    private float[] _x = [], _y = [], _weight = [], _gateUp = [], _hidden = [];

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(3);
        _x = Enumerable.Range(0, NumTokens * 768).Select(_ => (float)random.NextDouble()).ToArray();
        _y = new float[_x.Length];
        _weight = Enumerable.Range(0, 768).Select(_ => (float)random.NextDouble()).ToArray();
        _gateUp = Enumerable.Range(0, NumTokens * 4096).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        _hidden = new float[NumTokens * 2048];
    }

    [Benchmark]
    public void RmsNorm() => CpuKernels.RmsNorm(_x, NumTokens, 768, _weight, 1e-5f, _y);

    [Benchmark]
    public void SwiGlu() => CpuKernels.SwiGlu(_gateUp, NumTokens, 2048, _hidden);
}
