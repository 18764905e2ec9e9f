using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Threading;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// Attention split over (token, KV head) chunks: large enough to take the parallel path, the output on two
/// threads must equal the single-thread output exactly (each chunk does the same arithmetic wherever it runs),
/// and a bad block table must still surface as the documented exception from a worker.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
[Collection(WorkerPoolCollection.Name)]
public class AttentionThreadingTests
{
    private const int NumHeads = 8, NumKvHeads = 2, HeadDim = 24;

    private static (ForwardBatch Batch, PagedKvCache Cache, float[] Q) Setup(int blockSize, bool breakTable)
    {
        var random = new Random(11);
        int kvDim = NumKvHeads * HeadDim;
        var cache = new PagedKvCache(2, 64, blockSize, kvDim);
        for (int layer = 0; layer < cache.NumLayers; layer++)
            for (int block = 0; block < cache.NumBlocks; block++)
                for (int offset = 0; offset < blockSize; offset++)
                    cache.WriteToken(layer, block, offset, KernelTestData.RandomFloats(random, kvDim, 0.5f), KernelTestData.RandomFloats(random, kvDim, 0.5f));
        var batch = new ForwardBatch(128, 2, 32, blockSize);
        var tableA = Enumerable.Range(0, 25).Select(i => 63 - i).ToArray();
        var tableB = Enumerable.Range(0, 20).Select(i => i * 2).ToArray();
        if (breakTable) tableB[3] = -1;
        batch.AddSequence(new int[40], 150, tableA);
        batch.AddSequence(new int[30], 120, tableB);
        return (batch, cache, KernelTestData.RandomFloats(random, 70 * NumHeads * HeadDim));
    }

    private static float[] Run(int threads, int blockSize, bool breakTable = false)
    {
        var (batch, cache, q) = Setup(blockSize, breakTable);
        var output = new float[q.Length];
        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(threads);
        try
        {
            CpuKernels.PagedAttention(q, NumHeads * HeadDim, 0, batch, cache, 1, NumHeads, NumKvHeads, HeadDim, output);
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
        return output;
    }

    // Blocks of 8 take the per-token job (PagedAttentionJob), blocks of 16 the query tiles (PrefillAttentionJob).
    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    public void Two_threads_give_exactly_the_single_thread_output(int blockSize)
    {
        Assert.Equal(Run(1, blockSize), Run(2, blockSize));
    }

    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    public void A_missing_block_is_reported_from_the_parallel_path(int blockSize)
    {
        var e = Assert.Throws<InvalidOperationException>(() => Run(2, blockSize, breakTable: true));
        Assert.Contains("does not cover", e.Message);
    }
}
