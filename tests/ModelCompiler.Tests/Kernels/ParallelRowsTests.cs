using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Threading;
using Xunit;
using static ModelCompiler.Tests.Kernels.KernelTestData;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// The row-wise steps that a prefill-sized batch splits over the worker pool by tokens (RMSNorm, SwiGLU, the RoPE +
/// KV-write epilogue): against naive loops, and exactly equal on one and two threads (each row is computed by the
/// same code wherever it runs).
/// </summary>
[Collection(WorkerPoolCollection.Name)]
public class ParallelRowsTests
{
    // 100 tokens: far above the split threshold, and not a multiple of the chunk count.
    private const int NumTokens = 100, Dim = 384, Hidden = 520;

    private static T OnThreads<T>(int threads, Func<T> run)
    {
        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(threads);
        try { return run(); }
        finally { WorkerPool.SetThreadCount(saved); }
    }

    [Fact]
    public void RmsNorm_split_by_tokens_matches_the_naive_norm_on_any_thread_count()
    {
        var random = new Random(3);
        var x = RandomFloats(random, NumTokens * Dim, 2f);
        var weight = RandomFloats(random, Dim);
        float[] Run() { var y = new float[x.Length]; CpuKernels.RmsNorm(x, NumTokens, Dim, weight, 1e-5f, y); return y; }
        var one = OnThreads(1, Run);
        Assert.Equal(one, OnThreads(2, Run));
        for (int t = 0; t < NumTokens; t++)
        {
            double meanSquare = 0;
            for (int i = 0; i < Dim; i++) meanSquare += (double)x[t * Dim + i] * x[t * Dim + i];
            double inverseRms = 1 / Math.Sqrt(meanSquare / Dim + 1e-5);
            var expected = Enumerable.Range(0, Dim).Select(i => x[t * Dim + i] * inverseRms * weight[i]).ToArray();
            AssertClose(expected, one.AsSpan(t * Dim, Dim), what: $"token {t}");
        }
    }

    [Fact]
    public void SwiGlu_split_by_tokens_matches_the_naive_gate_on_any_thread_count()
    {
        var random = new Random(4);
        var gateUp = RandomFloats(random, NumTokens * 2 * Hidden, 4f);
        float[] Run() { var y = new float[NumTokens * Hidden]; CpuKernels.SwiGlu(gateUp, NumTokens, Hidden, y); return y; }
        var one = OnThreads(1, Run);
        Assert.Equal(one, OnThreads(2, Run));
        var expected = new double[NumTokens * Hidden];
        for (int t = 0; t < NumTokens; t++)
            for (int j = 0; j < Hidden; j++)
            {
                double g = gateUp[t * 2 * Hidden + j], u = gateUp[t * 2 * Hidden + Hidden + j];
                expected[t * Hidden + j] = g / (1 + Math.Exp(-g)) * u;
            }
        AssertClose(expected, one);
    }

    [Fact]
    public void Rope_and_kv_write_epilogue_split_by_tokens_gives_the_same_rows_and_cache_on_any_thread_count()
    {
        const int numHeads = 4, numKvHeads = 2, headDim = 32, blockSize = 16, qkvDim = (numHeads + 2 * numKvHeads) * headDim;
        var random = new Random(5);
        var x = RandomFloats(random, NumTokens * Dim);
        var norm = RandomFloats(random, Dim);
        var wqkv = RandomFloats(random, qkvDim * Dim, 0.1f);
        (float[] Qkv, float[] Keys, float[] Values) Run()
        {
            var cache = new PagedKvCache(1, 16, blockSize, numKvHeads * headDim);
            var batch = new ForwardBatch(NumTokens, 2, 16, blockSize);
            // Two sequences, the second a chunk that starts inside a block.
            batch.AddSequence(new int[60], 0, [3, 0, 7, 9]);
            batch.AddSequence(new int[NumTokens - 60], 21, [1, 2, 4, 5]);
            var qkv = new float[NumTokens * qkvDim];
            CpuKernels.RmsNormQkvRopeKvWrite(x, NumTokens, norm, 1e-5f, TestMatrix.F32(wqkv, Dim), qkv, new float[NumTokens * Dim],
                Dim, numHeads, numKvHeads, headDim, batch, cache, 0, 10000f, RopeStyle.Interleaved);
            return (qkv, cache.FloatKeys!.ToArray(), cache.FloatValues!.ToArray());
        }
        var one = OnThreads(1, Run);
        var two = OnThreads(2, Run);
        Assert.Equal(one.Qkv, two.Qkv);
        Assert.Equal(one.Keys, two.Keys);
        Assert.Equal(one.Values, two.Values);
    }
}
