using System;

namespace ModelCompiler.Runtime.Threading;

/// <summary>
/// The process-wide CPU worker pool the kernels split their work over. (Placeholder: the kernels are
/// single-threaded until the persistent pool lands; the thread count is recorded so hosts can set it.)
/// </summary>
public static class WorkerPool
{
    private static int s_threadCount = Environment.ProcessorCount;

    /// <summary>Threads the kernels use (the calling thread included).</summary>
    public static int ThreadCount => s_threadCount;

    /// <summary>Sets the number of threads; call before the first forward pass.</summary>
    public static void SetThreadCount(int threadCount)
    {
        if (threadCount < 1) throw new ArgumentOutOfRangeException(nameof(threadCount), threadCount, "At least one thread is needed.");
        s_threadCount = threadCount;
    }
}
