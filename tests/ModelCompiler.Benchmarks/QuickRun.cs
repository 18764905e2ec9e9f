using System.Diagnostics;

namespace ModelCompiler.Benchmarks;

/// <summary>Stopwatch medians of the Linear cases (a first look; BenchmarkDotNet is the reference).</summary>
internal static class QuickRun
{
    public static void Run(string[] args)
    {
        if (args.Length > 0 && args[0] == "bandwidth") { Bandwidth(); return; }
        string[] dtypes = args.Length > 0 ? args[0].Split(',') : ["f32", "bf16", "f16", "q8_0", "q4_0"];
        string[] shapes = args.Length > 1 ? args[1].Split(',') : ["768x2304", "2048x768", "768x32000"];
        int[] tokens = args.Length > 2 ? args[2].Split(',').Select(int.Parse).ToArray() : [1, 16, 128];
        int[] threads = args.Length > 3 ? args[3].Split(',').Select(int.Parse).ToArray() : [1, 2];
        foreach (var dtype in dtypes)
        foreach (var shape in shapes)
        foreach (int numTokens in tokens)
        foreach (int t in threads)
        {
            bool stored = dtype.EndsWith("-stored", StringComparison.Ordinal);
            var bench = new LinearBenchmarks { DType = stored ? dtype[..^"-stored".Length] : dtype, Shape = shape, NumTokens = numTokens, Threads = t, Stored = stored };
            bench.Setup();
            int calls = numTokens == 1 ? 200 : 20;
            var times = new List<double>();
            // Process CPU time as well: on a shared, overloaded machine it excludes the time the OS ran others.
            var cpuTimes = new List<double>();
            using var process = Process.GetCurrentProcess();
            for (int repeat = 0; repeat < 9; repeat++)
            {
                double cpuStart = CpuSeconds(process, t);
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < calls; i++) bench.Linear();
                times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds / calls);
                cpuTimes.Add((CpuSeconds(process, t) - cpuStart) / calls);
            }
            bench.Cleanup();
            times.Sort();
            cpuTimes.Sort();
            double median = times[times.Count / 2];
            double cpuMedian = cpuTimes[cpuTimes.Count / 2];
            string figure = numTokens == 1 ? $"{bench.WeightBytes / median / 1e9,7:F1} GB/s" : $"{bench.Flops / median / 1e9,7:F1} GFLOP/s";
            Console.WriteLine($"{dtype,-11} {shape,-10} tokens {numTokens,3} threads {t}: {median * 1e6,9:F1} us  {figure}   cpu {cpuMedian * 1e6,9:F1} us");
        }
    }

    // One thread: this thread's run time in ns from /proc/thread-self/schedstat (Linux); otherwise the process's
    // CPU time, which the OS counts in 10 ms ticks.
    private static double CpuSeconds(Process process, int threads)
    {
        if (threads == 1 && File.Exists("/proc/thread-self/schedstat"))
            return long.Parse(File.ReadAllText("/proc/thread-self/schedstat").Split(' ')[0]) * 1e-9;
        process.Refresh();
        return process.TotalProcessorTime.TotalSeconds;
    }

    /// <summary>Read bandwidth of a plain Vector512 sum over 256 MB, on one thread and on two (the roofline reference).</summary>
    private static unsafe void Bandwidth()
    {
        const long bytes = 256L << 20;
        float* data = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)bytes, 64);
        new Span<byte>(data, (int)bytes).Fill(1);
        static float Sum(float* p, long count)
        {
            var a = System.Runtime.Intrinsics.Vector512<float>.Zero; var b = a; var c = a; var d = a;
            for (long i = 0; i < count; i += 64)
            {
                a += System.Runtime.Intrinsics.Vector512.Load(p + i); b += System.Runtime.Intrinsics.Vector512.Load(p + i + 16);
                c += System.Runtime.Intrinsics.Vector512.Load(p + i + 32); d += System.Runtime.Intrinsics.Vector512.Load(p + i + 48);
            }
            return System.Runtime.Intrinsics.Vector512.Sum(a + b + c + d);
        }
        long n = bytes / 4;
        foreach (int threads in new[] { 1, 2, 1, 2 })
        {
            var times = new List<double>();
            for (int r = 0; r < 7; r++)
            {
                long start = Stopwatch.GetTimestamp();
                if (threads == 1) Sum(data, n);
                else Parallel.For(0, 2, part => Sum(data + part * (n / 2), n / 2));
                times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
            }
            times.Sort();
            Console.WriteLine($"read bandwidth, {threads} thread(s): {bytes / times[3] / 1e9:F1} GB/s (median of 7)");
        }
    }
}
