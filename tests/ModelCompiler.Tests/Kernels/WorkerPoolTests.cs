using ModelCompiler.Runtime.Threading;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>The tests that change <see cref="WorkerPool.ThreadCount"/> run one at a time.</summary>
[CollectionDefinition(Name)]
public class WorkerPoolCollection
{
    public const string Name = "WorkerPool thread count";
}

[Collection(WorkerPoolCollection.Name)]
public unsafe class WorkerPoolTests
{
    private struct CountingJob : IParallelJob
    {
        public int* Counts;
        public int ThrowAt;
        public int NestedChunks;

        public void Execute(int chunk)
        {
            if (chunk == ThrowAt) throw new InvalidOperationException($"chunk {chunk} failed");
            Interlocked.Increment(ref Counts[chunk]);
            if (NestedChunks > 0)
            {
                var nested = new CountingJob { Counts = Counts + 100_000 + chunk * NestedChunks, ThrowAt = -1 };
                WorkerPool.Run(ref nested, NestedChunks);
            }
        }
    }

    private static int[] RunCounting(int numChunks, int threads, int nestedChunks = 0)
    {
        var counts = GC.AllocateArray<int>(200_000, pinned: true);
        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(threads);
        try
        {
            fixed (int* p = counts)
            {
                var job = new CountingJob { Counts = p, ThrowAt = -1, NestedChunks = nestedChunks };
                WorkerPool.Run(ref job, numChunks);
            }
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
        return counts;
    }

    [Theory]
    [InlineData(0, 2)]
    [InlineData(1, 2)]
    [InlineData(2, 2)]
    [InlineData(3, 2)]
    [InlineData(1000, 2)]
    [InlineData(1000, 1)]
    [InlineData(77, 5)]
    public void Every_chunk_runs_exactly_once(int numChunks, int threads)
    {
        for (int repeat = 0; repeat < 20; repeat++)
        {
            var counts = RunCounting(numChunks, threads);
            for (int i = 0; i < counts.Length; i++) Assert.Equal(i < numChunks ? 1 : 0, counts[i]);
        }
    }

    [Fact]
    public void A_throwing_chunk_reaches_the_caller_and_the_pool_keeps_working()
    {
        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(2);
        try
        {
            var counts = GC.AllocateArray<int>(1000, pinned: true);
            fixed (int* p = counts)
            {
                // No lambda: the pool reaches the job through its address, and a variable captured by a lambda lives
                // in a heap closure that the GC may move mid-run (seen once as a NullReferenceException on a worker
                // while other tests allocated in parallel).
                var job = new CountingJob { Counts = p, ThrowAt = 500 };
                Exception? thrown = null;
                try { WorkerPool.Run(ref job, 1000); }
                catch (Exception caught) { thrown = caught; }
                var e = Assert.IsType<InvalidOperationException>(thrown);
                Assert.Equal("chunk 500 failed", e.Message);
                Assert.All(counts, c => Assert.InRange(c, 0, 1));
            }
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
        var after = RunCounting(100, 2);
        Assert.Equal(100, after.Sum());
    }

    [Fact]
    public void A_nested_run_executes_inline_and_completes()
    {
        var counts = RunCounting(16, 2, nestedChunks: 10);
        Assert.Equal(16, counts.Take(16).Sum());
        Assert.True(counts.Skip(100_000).Take(160).All(c => c == 1));
    }

    [Fact]
    public void Runs_from_several_threads_at_once_all_complete()
    {
        int saved = WorkerPool.ThreadCount;
        WorkerPool.SetThreadCount(2);
        try
        {
            var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
            {
                var counts = GC.AllocateArray<int>(64, pinned: true);
                fixed (int* p = counts)
                {
                    for (int i = 0; i < 300; i++)
                    {
                        var job = new CountingJob { Counts = p, ThrowAt = -1 };
                        WorkerPool.Run(ref job, 64);
                    }
                }
                Assert.All(counts, c => Assert.Equal(300, c));
            })).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a run did not finish");
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
    }

    [Fact]
    public void Runs_after_the_workers_went_to_sleep_still_complete()
    {
        RunCounting(10, 2);
        Thread.Sleep(50); // well past the spin time: the worker is blocked
        var counts = RunCounting(10, 2);
        Assert.Equal(10, counts.Sum());
    }

    [Fact]
    public void A_thread_count_below_one_is_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => WorkerPool.SetThreadCount(0));
    }
}
