using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Threading;

namespace ModelCompiler.Runtime.Diagnostics;

/// <summary>This machine's limits, measured: memory copy bandwidth and f32 FMA throughput.</summary>
/// <param name="NumThreads">Threads the probes ran on.</param>
/// <param name="CopyBytesPerSecond">STREAM-style copy bandwidth, counting bytes read plus bytes written.</param>
/// <param name="CopyArraySizeInBytes">Size of each of the two copy arrays.</param>
/// <param name="FmaFlopsPerSecond">f32 FMA throughput in FLOP/s (an FMA is 2 FLOPs).</param>
/// <param name="FmaLanes">f32 lanes per FMA instruction of the probe (16 for AVX-512, 8 for AVX2+FMA, 1 scalar).</param>
public sealed record RooflineLimits(int NumThreads, double CopyBytesPerSecond, long CopyArraySizeInBytes, double FmaFlopsPerSecond, int FmaLanes);

/// <summary>
/// Probes for the two roofs a decode/prefill measurement is compared with. Both run on their own threads
/// (not the kernels' worker pool), one per requested thread, started once and synchronised with a barrier
/// per repetition; each reports the best of its repetitions after one untimed warm-up.
/// </summary>
public static unsafe class Roofline
{
    /// <summary>Independent FMA chains per thread: latency 4 × 2 pipes needs 8; 16 leaves margin and fits the 32 zmm registers.</summary>
    private const int NumChains = 16;

    /// <summary>
    /// f32 lanes per FMA of the widest path this process runs: 512-bit only where the kernels use Vector512
    /// (<c>CpuFeatures.UseVector512</c>), not wherever AVX-512F exists: .NET leaves Vector512 off by default on CPUs
    /// whose 512-bit instructions lower the clock (Skylake-X, Cascade Lake) and under <c>DOTNET_PreferredVectorBitWidth=256</c>,
    /// and the kernels then run 256-bit code, whose peak is half.
    /// </summary>
    public static int FmaLanes => Kernels.MatMul.CpuFeatures.UseVector512 ? 16 : Fma.IsSupported && Avx.IsSupported ? 8 : 1;

    /// <summary>Measures both limits.</summary>
    /// <param name="numThreads">Threads to spread each probe over (normally one per core).</param>
    /// <param name="copyArraySizeInBytes">Size of each copy array; far larger than the last-level cache (default 512 MiB).</param>
    /// <param name="fmaIterations">Loop iterations per thread of the FMA probe; each is <c>16</c> vector FMAs.</param>
    /// <param name="numRepetitions">Timed repetitions of each probe; the best counts.</param>
    public static RooflineLimits Measure(int numThreads, long copyArraySizeInBytes = 512L << 20, long fmaIterations = 50_000_000, int numRepetitions = 5) =>
        new(numThreads, MeasureCopyBandwidth(numThreads, copyArraySizeInBytes, numRepetitions), copyArraySizeInBytes,
            MeasureFmaPeak(numThreads, fmaIterations, numRepetitions), FmaLanes);

    /// <summary>
    /// Copies one array of <paramref name="arraySizeInBytes"/> into another, each thread its own contiguous
    /// slice (with <c>Buffer.MemoryCopy</c>, which for large blocks is the C library's memmove and
    /// streams with non-temporal stores). Bandwidth counts 2 × the array size per copy (read + write, the
    /// STREAM convention; a write-allocate read, where the stores are not non-temporal, is not counted).
    /// </summary>
    /// <returns>Best bytes per second.</returns>
    public static double MeasureCopyBandwidth(int numThreads, long arraySizeInBytes, int numRepetitions)
    {
        Check(numThreads, numRepetitions);
        if (arraySizeInBytes < 64 * numThreads) throw new ArgumentOutOfRangeException(nameof(arraySizeInBytes), arraySizeInBytes, "Too small to split over the threads.");
        byte* source = (byte*)NativeMemory.AlignedAlloc((nuint)arraySizeInBytes, 4096);
        byte* destination = (byte*)NativeMemory.AlignedAlloc((nuint)arraySizeInBytes, 4096);
        try
        {
            long sliceSize = arraySizeInBytes / numThreads / 64 * 64;
            bool firstRun = true;
            double seconds = RunParallel(numThreads, numRepetitions, thread =>
            {
                long start = thread * sliceSize;
                long length = thread == numThreads - 1 ? arraySizeInBytes - start : sliceSize;
                // The untimed warm-up touches every page (so page faults are not timed) from the thread that copies it.
                // (The barriers order this read after the write of afterWarmup.)
                if (firstRun)
                {
                    for (long offset = 0; offset < length; offset += int.MaxValue)
                        new Span<byte>(source + start + offset, (int)Math.Min(length - offset, int.MaxValue)).Fill(1);
                }
                Buffer.MemoryCopy(source + start, destination + start, length, length);
            }, afterWarmup: () => firstRun = false);
            return 2.0 * arraySizeInBytes / seconds;
        }
        finally
        {
            NativeMemory.AlignedFree(source);
            NativeMemory.AlignedFree(destination);
        }
    }

    /// <summary>
    /// Runs <paramref name="iterationsPerThread"/> iterations of 16 independent vector FMA chains on every
    /// thread. FLOP/s = 2 × lanes × 16 × iterations × threads / seconds.
    /// </summary>
    /// <returns>Best FLOPs per second.</returns>
    public static double MeasureFmaPeak(int numThreads, long iterationsPerThread, int numRepetitions)
    {
        Check(numThreads, numRepetitions);
        if (iterationsPerThread < 1) throw new ArgumentOutOfRangeException(nameof(iterationsPerThread), iterationsPerThread, "At least one iteration.");
        var sinks = new float[numThreads];
        double seconds = RunParallel(numThreads, numRepetitions, thread => sinks[thread] = FmaChains(iterationsPerThread), afterWarmup: null);
        GC.KeepAlive(sinks);
        return 2.0 * FmaLanes * NumChains * iterationsPerThread * numThreads / seconds;
    }

    private static void Check(int numThreads, int numRepetitions)
    {
        if (numThreads < 1) throw new ArgumentOutOfRangeException(nameof(numThreads), numThreads, "At least one thread.");
        if (numRepetitions < 1) throw new ArgumentOutOfRangeException(nameof(numRepetitions), numRepetitions, "At least one repetition.");
    }

    // Runs work(thread) on numThreads threads (the caller is thread 0) once untimed, then numRepetitions
    // times timed from a start barrier to an end barrier; returns the shortest time in seconds.
    private static double RunParallel(int numThreads, int numRepetitions, Action<int> work, Action? afterWarmup)
    {
        using var start = new Barrier(numThreads);
        using var end = new Barrier(numThreads);
        int totalRuns = numRepetitions + 1;
        var helpers = new Thread[numThreads - 1];
        for (int t = 1; t < numThreads; t++)
        {
            int thread = t;
            helpers[t - 1] = new Thread(() =>
            {
                for (int run = 0; run < totalRuns; run++)
                {
                    start.SignalAndWait();
                    work(thread);
                    end.SignalAndWait();
                }
            }) { IsBackground = true, Name = "roofline probe " + t };
            helpers[t - 1].Start();
        }
        double best = double.MaxValue;
        for (int run = 0; run < totalRuns; run++)
        {
            start.SignalAndWait();
            long begin = Stopwatch.GetTimestamp();
            work(0);
            end.SignalAndWait();
            double seconds = Stopwatch.GetElapsedTime(begin).TotalSeconds;
            if (run == 0) afterWarmup?.Invoke();
            else best = Math.Min(best, seconds);
        }
        foreach (var helper in helpers) helper.Join();
        return best;
    }

    // a = a·m + c converges to c / (1 − m) without denormals or overflow; the sum keeps the loop alive.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float FmaChains(long iterations)
    {
        if (Kernels.MatMul.CpuFeatures.UseVector512) return FmaChains512(iterations);
        if (Fma.IsSupported && Avx.IsSupported) return FmaChains256(iterations);
        float m = 0.999f, c = 1e-3f;
        float s0 = 0, s1 = 0.1f, s2 = 0.2f, s3 = 0.3f;
        for (long i = 0; i < iterations * NumChains / 4; i++)
        {
            s0 = MathF.FusedMultiplyAdd(s0, m, c);
            s1 = MathF.FusedMultiplyAdd(s1, m, c);
            s2 = MathF.FusedMultiplyAdd(s2, m, c);
            s3 = MathF.FusedMultiplyAdd(s3, m, c);
        }
        return s0 + s1 + s2 + s3;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float FmaChains512(long iterations)
    {
        var m = Vector512.Create(0.999f);
        var c = Vector512.Create(1e-3f);
        Vector512<float> a0 = Vector512.Create(0.00f), a1 = Vector512.Create(0.01f), a2 = Vector512.Create(0.02f), a3 = Vector512.Create(0.03f);
        Vector512<float> a4 = Vector512.Create(0.04f), a5 = Vector512.Create(0.05f), a6 = Vector512.Create(0.06f), a7 = Vector512.Create(0.07f);
        Vector512<float> a8 = Vector512.Create(0.08f), a9 = Vector512.Create(0.09f), a10 = Vector512.Create(0.10f), a11 = Vector512.Create(0.11f);
        Vector512<float> a12 = Vector512.Create(0.12f), a13 = Vector512.Create(0.13f), a14 = Vector512.Create(0.14f), a15 = Vector512.Create(0.15f);
        for (long i = 0; i < iterations; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, c); a1 = Avx512F.FusedMultiplyAdd(a1, m, c);
            a2 = Avx512F.FusedMultiplyAdd(a2, m, c); a3 = Avx512F.FusedMultiplyAdd(a3, m, c);
            a4 = Avx512F.FusedMultiplyAdd(a4, m, c); a5 = Avx512F.FusedMultiplyAdd(a5, m, c);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, c); a7 = Avx512F.FusedMultiplyAdd(a7, m, c);
            a8 = Avx512F.FusedMultiplyAdd(a8, m, c); a9 = Avx512F.FusedMultiplyAdd(a9, m, c);
            a10 = Avx512F.FusedMultiplyAdd(a10, m, c); a11 = Avx512F.FusedMultiplyAdd(a11, m, c);
            a12 = Avx512F.FusedMultiplyAdd(a12, m, c); a13 = Avx512F.FusedMultiplyAdd(a13, m, c);
            a14 = Avx512F.FusedMultiplyAdd(a14, m, c); a15 = Avx512F.FusedMultiplyAdd(a15, m, c);
        }
        var sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15));
        return Vector512.Sum(sum);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float FmaChains256(long iterations)
    {
        var m = Vector256.Create(0.999f);
        var c = Vector256.Create(1e-3f);
        Vector256<float> a0 = Vector256.Create(0.00f), a1 = Vector256.Create(0.01f), a2 = Vector256.Create(0.02f), a3 = Vector256.Create(0.03f);
        Vector256<float> a4 = Vector256.Create(0.04f), a5 = Vector256.Create(0.05f), a6 = Vector256.Create(0.06f), a7 = Vector256.Create(0.07f);
        Vector256<float> a8 = Vector256.Create(0.08f), a9 = Vector256.Create(0.09f), a10 = Vector256.Create(0.10f), a11 = Vector256.Create(0.11f);
        Vector256<float> a12 = Vector256.Create(0.12f), a13 = Vector256.Create(0.13f), a14 = Vector256.Create(0.14f), a15 = Vector256.Create(0.15f);
        for (long i = 0; i < iterations; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, c); a1 = Fma.MultiplyAdd(a1, m, c);
            a2 = Fma.MultiplyAdd(a2, m, c); a3 = Fma.MultiplyAdd(a3, m, c);
            a4 = Fma.MultiplyAdd(a4, m, c); a5 = Fma.MultiplyAdd(a5, m, c);
            a6 = Fma.MultiplyAdd(a6, m, c); a7 = Fma.MultiplyAdd(a7, m, c);
            a8 = Fma.MultiplyAdd(a8, m, c); a9 = Fma.MultiplyAdd(a9, m, c);
            a10 = Fma.MultiplyAdd(a10, m, c); a11 = Fma.MultiplyAdd(a11, m, c);
            a12 = Fma.MultiplyAdd(a12, m, c); a13 = Fma.MultiplyAdd(a13, m, c);
            a14 = Fma.MultiplyAdd(a14, m, c); a15 = Fma.MultiplyAdd(a15, m, c);
        }
        var sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15));
        return Vector256.Sum(sum);
    }
}
