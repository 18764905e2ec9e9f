using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Threading;

namespace ModelCompiler.Runtime.Threading;

/// <summary>One unit of parallel work: <see cref="Execute"/> runs chunk <c>chunk</c> of <c>[0, numChunks)</c>.</summary>
/// <remarks>
/// Implementations are small structs holding pointers and sizes (no spans: the pool reaches the job through a
/// pointer). <see cref="Execute"/> runs on any participating thread, concurrently with other chunks, so chunks
/// must write disjoint memory; the job itself is read-only while the pool runs it.
/// </remarks>
public interface IParallelJob
{
    /// <summary>Runs chunk <paramref name="chunk"/>.</summary>
    void Execute(int chunk);
}

/// <summary>
/// The process-wide CPU worker pool the kernels split their work over: <see cref="ThreadCount"/> - 1 persistent
/// background threads plus the calling thread.
/// </summary>
/// <remarks>
/// <para>How a <see cref="Run{TJob}"/> works: the caller publishes a pointer to its job (a local on its stack) and a
/// function pointer to a generic trampoline that knows the job's type, bumps the generation counter and wakes
/// the workers that sleep. Every participant (the caller included) then takes chunk indices from one shared
/// counter until it passes <c>numChunks</c>, so a thread that the OS deschedules (this machine is shared) just
/// takes fewer chunks, and one that wakes after every chunk was claimed skips the run. The caller returns once
/// every worker that joined has reported back, so the job's stack slot outlives
/// every use. Nothing is allocated per call: no delegates, no boxing, no tasks.</para>
/// <para>Idle workers spin for <see cref="SpinMicroseconds"/> after their last job (a decode step's kernels come a
/// few microseconds apart), then block on a per-worker semaphore; the caller releases only the sleepers.</para>
/// <para>Invariants and defined behaviour:</para>
/// <list type="bullet">
/// <item>Every chunk runs exactly once, unless a chunk throws: then the remaining unclaimed chunks are skipped
/// and the first exception is rethrown on the caller (with its original stack) after all participants stopped.</item>
/// <item>One parallel run at a time. A <see cref="Run{TJob}"/> from inside a job (nested), or from another
/// thread while a run is in progress, executes all its chunks inline on its own thread, in order; it never
/// waits for the pool, so it cannot deadlock.</item>
/// <item><see cref="SetThreadCount"/> may be called at any time between runs; extra workers are started
/// lazily, surplus workers stay asleep.</item>
/// </list>
/// </remarks>
public static unsafe class WorkerPool
{
    /// <summary>How long an idle worker spins (checking for new work) before it blocks.</summary>
    public const int SpinMicroseconds = 200;

    private static int s_threadCount = Math.Max(1, Environment.ProcessorCount);

    // Serialises runs (and worker creation); a run that cannot take it goes inline.
    private static readonly object s_runLock = new();
    private static Worker[] s_workers = [];

    // The published job. Written by the caller before the generation bump, read by workers after they see it.
    private static void* s_job;
    private static delegate*<void*, int, void> s_invoke;
    private static int s_numChunks;

    // Shared by the participants of the current run.
    private static int s_nextChunk;
    // Workers inside a run (joined, not yet done). Only ever incremented and decremented in pairs by the
    // workers themselves, never reset, so a late worker's pair can straddle runs without unbalancing it.
    private static int s_pendingWorkers;
    // The generation still accepting workers, or 0 once the caller has claimed every chunk and closed it.
    private static long s_openGeneration;
    private static ExceptionDispatchInfo? s_exception;
    private static long s_generation;

    [ThreadStatic] private static bool t_inJob;

    /// <summary>Threads the kernels use (the calling thread included).</summary>
    public static int ThreadCount => s_threadCount;

    /// <summary>Sets the number of threads (at least 1; 1 runs every kernel on the calling thread).</summary>
    public static void SetThreadCount(int threadCount)
    {
        if (threadCount < 1) throw new ArgumentOutOfRangeException(nameof(threadCount), threadCount, "At least one thread is needed.");
        Volatile.Write(ref s_threadCount, threadCount);
    }

    /// <summary>
    /// Runs chunks <c>[0, numChunks)</c> of <paramref name="job"/> over the pool and returns when all are done.
    /// <paramref name="job"/> must be a local variable of the caller (it is reached through its address).
    /// </summary>
    /// <param name="job">The job; read-only during the run.</param>
    /// <param name="numChunks">Number of chunks; 0 does nothing, 1 (or a single thread) runs inline.</param>
    /// <param name="maxThreads">Most threads to use (e.g. the number of chunks worth splitting); 0 = <see cref="ThreadCount"/>.</param>
    public static void Run<TJob>(ref TJob job, int numChunks, int maxThreads = 0) where TJob : struct, IParallelJob
    {
        int threads = s_threadCount;
        if (maxThreads > 0 && maxThreads < threads) threads = maxThreads;
        if (threads > numChunks) threads = numChunks;
        if (threads <= 1 || t_inJob || !Monitor.TryEnter(s_runLock))
        {
            RunInline(ref job, numChunks);
            return;
        }
        try
        {
            RunParallel((void*)Unsafe.AsPointer(ref job), &Trampoline<TJob>.Invoke, numChunks, threads - 1);
        }
        finally
        {
            Monitor.Exit(s_runLock);
        }
    }

    private static void RunInline<TJob>(ref TJob job, int numChunks) where TJob : struct, IParallelJob
    {
        bool wasInJob = t_inJob;
        t_inJob = true;
        try
        {
            for (int chunk = 0; chunk < numChunks; chunk++) job.Execute(chunk);
        }
        finally
        {
            t_inJob = wasInJob;
        }
    }

    private static class Trampoline<TJob> where TJob : struct, IParallelJob
    {
        public static void Invoke(void* job, int chunk) => Unsafe.AsRef<TJob>(job).Execute(chunk);
    }

    // Called with s_runLock held.
    private static void RunParallel(void* job, delegate*<void*, int, void> invoke, int numChunks, int numWorkers)
    {
        EnsureWorkers(numWorkers);
        s_job = job;
        s_invoke = invoke;
        s_numChunks = numChunks;
        s_nextChunk = 0;
        s_exception = null;
        // A worker takes part in generation g only if it was assigned g, so one that is slow to notice an
        // earlier generation can never mistake this run's state for that one's.
        var workers = s_workers;
        long generation = s_generation + 1;
        s_openGeneration = generation;
        for (int i = 0; i < numWorkers; i++) workers[i].Assign(generation);
        // Full fence: the job is visible before the new generation, and the generation before the sleep
        // flags are read (pairs with the fence in Worker.Loop).
        Interlocked.Increment(ref s_generation);
        for (int i = 0; i < numWorkers; i++) workers[i].WakeIfSleeping();

        ExecuteChunks();

        // Every chunk is claimed. Close the run, then wait only for the workers that joined it: one the OS
        // has not scheduled yet (this machine is shared) finds the run closed and never touches the job, so
        // the caller does not wait for it. Both sides use full fences (close, then read the count; join,
        // then read the open flag), so a worker that saw the run open is always counted here.
        Interlocked.Exchange(ref s_openGeneration, 0);
        var spin = new SpinWait();
        while (Volatile.Read(ref s_pendingWorkers) != 0) spin.SpinOnce(sleep1Threshold: -1);
        s_job = null;
        var exception = s_exception;
        s_exception = null;
        exception?.Throw();
    }

    private static void ExecuteChunks()
    {
        void* job = s_job;
        var invoke = s_invoke;
        int numChunks = s_numChunks;
        t_inJob = true;
        try
        {
            while (true)
            {
                int chunk = Interlocked.Increment(ref s_nextChunk) - 1;
                if (chunk >= numChunks) break;
                invoke(job, chunk);
            }
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref s_exception, ExceptionDispatchInfo.Capture(e), null);
            // Nobody takes another chunk.
            Volatile.Write(ref s_nextChunk, int.MaxValue / 2);
        }
        finally
        {
            t_inJob = false;
        }
    }

    private static void EnsureWorkers(int count)
    {
        if (s_workers.Length >= count) return;
        var grown = new Worker[count];
        Array.Copy(s_workers, grown, s_workers.Length);
        for (int i = s_workers.Length; i < count; i++) grown[i] = new Worker(i);
        s_workers = grown;
    }

    private sealed class Worker
    {
        private readonly SemaphoreSlim _wake = new(0);
        private int _sleeping;
        private long _assignedGeneration;
        // The generation current when the worker was created (under the run lock, before the bump that may
        // assign it work): a thread that starts late must still see that bump as new.
        private readonly long _startGeneration = s_generation;

        public Worker(int index)
        {
            var thread = new Thread(Loop, maxStackSize: 4 << 20) { IsBackground = true, Name = $"ModelCompiler worker {index + 1}" };
            thread.Start();
        }

        public void Assign(long generation) => Volatile.Write(ref _assignedGeneration, generation);

        public void WakeIfSleeping()
        {
            if (Interlocked.Exchange(ref _sleeping, 0) == 1) _wake.Release();
        }

        private void Loop()
        {
            long seen = _startGeneration;
            long spinTicks = Stopwatch.Frequency * SpinMicroseconds / 1_000_000;
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                int iteration = 0;
                long current;
                while ((current = Volatile.Read(ref s_generation)) == seen)
                {
                    Thread.SpinWait(8);
                    if ((++iteration & 63) == 0 && Stopwatch.GetTimestamp() - start > spinTicks)
                    {
                        // Announce the sleep, then re-check (both full fences): either the caller sees the flag and
                        // releases us, or we see its generation bump and take the flag back ourselves.
                        Interlocked.Exchange(ref _sleeping, 1);
                        if (Volatile.Read(ref s_generation) == seen) _wake.Wait();
                        else if (Interlocked.Exchange(ref _sleeping, 0) == 0) _wake.Wait(); // the caller released us already: consume it
                        start = Stopwatch.GetTimestamp();
                    }
                }
                seen = current;
                if (Volatile.Read(ref _assignedGeneration) != current) continue;
                Interlocked.Increment(ref s_pendingWorkers);
                if (Volatile.Read(ref s_openGeneration) == current) ExecuteChunks();
                Interlocked.Decrement(ref s_pendingWorkers);
            }
        }
    }
}
