using System.Diagnostics;

namespace ModelCompiler.Benchmarks;

/// <summary>Stopwatch medians of the Linear cases (a first look; BenchmarkDotNet is the reference).</summary>
internal static class QuickRun
{
    public static void Run(string[] args)
    {
        if (args.Length > 0 && args[0] == "bandwidth") { Bandwidth(); return; }
        if (args.Length > 0 && args[0] == "fma")
        {
            // The FMA peak on one thread and on two: a lower per-thread rate on two would mean the clock drops with both cores busy.
            foreach (int t in new[] { 1, 2, 1, 2 })
                Console.WriteLine($"f32 FMA peak, {t} thread(s): {ModelCompiler.Runtime.Diagnostics.Roofline.MeasureFmaPeak(t, 50_000_000, 5) / 1e9:F1} GFLOP/s");
            return;
        }
        if (args.Length > 0 && args[0] == "step") { StepRun.Run(args.Skip(1).ToArray()); return; }
        if (args.Length > 0 && args[0] == "decode-attention") { DecodeAttentionRun.Run(args.Skip(1).ToArray()); return; }
        if (args.Length > 0 && args[0] == "forward") { ForwardRun.Run(args.Skip(1).ToArray()); return; }
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

    /// <summary>
    /// Read bandwidth of a plain Vector512 sum over 256 MB, on one thread and on two (the roofline reference). The two
    /// threads are the kernels' worker pool (the caller and a worker that is already running), one half each: a
    /// <c>Parallel.For</c> here read ~30 GB/s where the pool's projections streamed 50–69, its second thread joining late.
    /// </summary>
    private static unsafe void Bandwidth()
    {
        const long bytes = 256L << 20;
        float* data = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)bytes, 64);
        new Span<byte>(data, (int)bytes).Fill(1);
        long n = bytes / 4;
        foreach (int threads in new[] { 1, 2, 1, 2 })
        {
            ModelCompiler.Runtime.Threading.WorkerPool.SetThreadCount(threads);
            var job = new SumJob { Data = data, Count = n / threads };
            ModelCompiler.Runtime.Threading.WorkerPool.Run(ref job, threads); // starts the worker, untimed
            var times = new List<double>();
            for (int r = 0; r < 7; r++)
            {
                long start = Stopwatch.GetTimestamp();
                ModelCompiler.Runtime.Threading.WorkerPool.Run(ref job, threads);
                times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
            }
            times.Sort();
            Console.WriteLine($"read bandwidth, {threads} thread(s): {bytes / times[3] / 1e9:F1} GB/s (median of 7)");
        }
    }

    /// <summary>Chunk c sums floats <c>[c·Count, (c + 1)·Count)</c> (the result is kept so the loads are not removed).</summary>
    private unsafe struct SumJob : ModelCompiler.Runtime.Threading.IParallelJob
    {
        public float* Data;
        public long Count;
        public static float Sink;

        public readonly void Execute(int chunk)
        {
            float* p = Data + chunk * Count;
            var a = System.Runtime.Intrinsics.Vector512<float>.Zero; var b = a; var c = a; var d = a;
            for (long i = 0; i < Count; i += 64)
            {
                a += System.Runtime.Intrinsics.Vector512.Load(p + i); b += System.Runtime.Intrinsics.Vector512.Load(p + i + 16);
                c += System.Runtime.Intrinsics.Vector512.Load(p + i + 32); d += System.Runtime.Intrinsics.Vector512.Load(p + i + 48);
            }
            Sink += System.Runtime.Intrinsics.Vector512.Sum(a + b + c + d);
        }
    }
}

/// <summary>
/// <c>quick step [dtypes] [passes] [tokens]</c> (a dtype <c>f32-stored</c> keeps the stored rows): the projections of a Llama110M forward step of <c>tokens</c> tokens (1, a
/// decode step, by default; 16 is a serving step of 16 sequences) (12 layers of q|k|v, o,
/// gate|up and down, then the 32,000-row LM head; 49 distinct matrices, DRAM-resident like a real step's) on two
/// threads, pass after pass: median, p10 and fastest pass, and the weights' bytes per second. Attention and the
/// elementwise kernels are left out, so this is the matrices' share of a step on their own.
/// </summary>
internal static class StepRun
{
    public static unsafe void Run(string[] args)
    {
        string[] dtypes = args.Length > 0 ? args[0].Split(',') : ["f32", "bf16", "q8_0", "q4_0"];
        int passes = args.Length > 1 ? int.Parse(args[1]) : 100;
        int numTokens = args.Length > 2 ? int.Parse(args[2]) : 1;
        ModelCompiler.Runtime.Threading.WorkerPool.SetThreadCount(2);
        var shapes = new List<(int In, int Out)>();
        for (int l = 0; l < 12; l++) { shapes.Add((768, 2304)); shapes.Add((768, 768)); shapes.Add((768, 4096)); shapes.Add((2048, 768)); }
        shapes.Add((768, 32000));
        foreach (string dtype in dtypes)
        {
            // DTYPE-stored: the matrices keep their stored rows (not packed at load), as the quick mode's "-stored".
            bool stored = dtype.EndsWith("-stored", StringComparison.Ordinal);
            var type = ModelCompiler.Runtime.Weights.WeightDTypes.TryParse(stored ? dtype[..^"-stored".Length] : dtype, out var d) ? d : throw new ArgumentException(dtype);
            var buffers = new List<ModelCompiler.Runtime.ModelWeights>();
            var matrices = new List<ModelCompiler.Runtime.WeightMatrix>();
            var random = new Random(1);
            long bytes = 0;
            foreach (var (inDim, outDim) in shapes)
            {
                var weights = new float[inDim * outDim];
                for (int i = 0; i < weights.Length; i++) weights[i] = (float)(random.NextDouble() * 2 - 1) * 0.05f;
                var encoded = new byte[ModelCompiler.Runtime.Weights.WeightDTypes.SizeInBytes(type, weights.Length)];
                bytes += encoded.Length;
                ModelCompiler.Runtime.Quantization.WeightConversion.Encode(weights, type, encoded);
                // Bound like the engine binds them: the stored rows, plus the load-time packed copy.
                var buffer = new ModelCompiler.Runtime.ModelWeights(1, null);
                encoded.CopyTo(buffer.Allocate(0, type, outDim, inDim));
                if (!stored) buffer.PackForCpu(0);
                buffers.Add(buffer);
                matrices.Add(buffer.Matrix(0));
            }
            var x = new float[2048 * numTokens];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(random.NextDouble() * 2 - 1);
            var y = new float[32000 * numTokens];
            long flops = 0;
            foreach (var (inDim, outDim) in shapes) flops += 2L * inDim * outDim * numTokens;
            var times = new List<double>();
            for (int p = 0; p < passes; p++)
            {
                long start = Stopwatch.GetTimestamp();
                for (int m = 0; m < matrices.Count; m++) ModelCompiler.Runtime.Kernels.CpuKernels.Linear(x, numTokens, matrices[m], y, shapes[m].In, shapes[m].Out);
                times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
            }
            times.Sort();
            double median = times[times.Count / 2];
            Console.WriteLine($"{dtype,-5} step projections, {numTokens} token(s) ({bytes / 1e6:F1} MB): median {median * 1e3:F3} ms ({bytes / median / 1e9:F1} GB/s, {flops / median / 1e9:F1} GFLOP/s)  p10 {times[times.Count / 10] * 1e3:F3} ms  fastest {times[0] * 1e3:F3} ms ({bytes / times[0] / 1e9:F1} GB/s)");
            foreach (var buffer in buffers) buffer.Dispose();
        }
    }
}

/// <summary>
/// <c>quick decode-attention [f32,f16] [sequences] [context] [passes] [queries] [threads]</c>: the attention of a batched Llama110M decode
/// step (12 heads of 64, blocks of 16) for every one of 12 layers, each sequence one new token at position
/// <c>context - 1</c>, their blocks scattered over the pool as a serving engine's are. The 12 layers' KV
/// (16 sequences of 192 positions: 226 MB in f32) is DRAM-resident, so this is the step's KV read on its own:
/// median and fastest pass, and KV bytes read per second. With <c>queries</c> above 1 each sequence brings that many
/// tokens ending at <c>context - 1</c> instead (<c>f32 1 128 40 128</c>: a 128-token prompt's attention, the
/// query-tile kernel). <c>threads</c> (default 2) sizes the worker pool: one thread shows a core's own rate.
/// </summary>
internal static class DecodeAttentionRun
{
    public static void Run(string[] args)
    {
        string[] dtypes = args.Length > 0 ? args[0].Split(',') : ["f32", "f16"];
        int numSequences = args.Length > 1 ? int.Parse(args[1]) : 16;
        int context = args.Length > 2 ? int.Parse(args[2]) : 192;
        int passes = args.Length > 3 ? int.Parse(args[3]) : 50;
        // Query tokens per sequence, ending at the context's last position: 1 is a decode step, more a prefill chunk.
        int queryTokens = args.Length > 4 ? int.Parse(args[4]) : 1;
        const int numLayers = 12, numHeads = 12, headDim = 64, blockSize = 16, kvDim = numHeads * headDim;
        ModelCompiler.Runtime.Threading.WorkerPool.SetThreadCount(args.Length > 5 ? int.Parse(args[5]) : 2);
        int blocksPerSequence = (context + blockSize - 1) / blockSize;
        int numBlocks = numSequences * blocksPerSequence;
        foreach (string name in dtypes)
        {
            var dtype = name == "f16" ? ModelCompiler.Runtime.KvCacheDType.F16 : ModelCompiler.Runtime.KvCacheDType.F32;
            var cache = new ModelCompiler.Runtime.KvCache.PagedKvCache(numLayers, numBlocks, blockSize, kvDim, dtype);
            var random = new Random(3);
            var key = new float[kvDim * blockSize];
            var value = new float[kvDim * blockSize];
            for (int layer = 0; layer < numLayers; layer++)
                for (int block = 0; block < numBlocks; block++)
                {
                    for (int i = 0; i < key.Length; i++) { key[i] = (float)random.NextDouble() - 0.5f; value[i] = (float)random.NextDouble() - 0.5f; }
                    cache.WriteTokens(layer, block, 0, blockSize, key, kvDim, value, kvDim);
                }
            // Scattered blocks: a random permutation of the pool dealt out to the sequences.
            int[] order = Enumerable.Range(0, numBlocks).OrderBy(_ => random.Next()).ToArray();
            var batch = new ModelCompiler.Runtime.KvCache.ForwardBatch(numSequences * queryTokens, numSequences, blocksPerSequence, blockSize);
            var tokens = new int[queryTokens];
            for (int s = 0; s < numSequences; s++)
                batch.AddSequence(tokens, context - queryTokens, order.AsSpan(s * blocksPerSequence, blocksPerSequence));
            var q = new float[numSequences * queryTokens * kvDim];
            for (int i = 0; i < q.Length; i++) q[i] = (float)random.NextDouble() - 0.5f;
            var output = new float[q.Length];
            double bytes = 2.0 * numLayers * numSequences * context * kvDim * ModelCompiler.Runtime.KvCacheDTypes.ElementSizeInBytes(dtype);
            var times = new List<double>();
            for (int p = 0; p < passes + 3; p++)
            {
                long start = Stopwatch.GetTimestamp();
                for (int layer = 0; layer < numLayers; layer++)
                    ModelCompiler.Runtime.Kernels.CpuKernels.PagedAttention(q, kvDim, 0, batch, cache, layer, numHeads, numHeads, headDim, output);
                if (p >= 3) times.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
            }
            times.Sort();
            double median = times[times.Count / 2];
            Console.WriteLine($"{name} attention, {numSequences} sequences x {queryTokens} queries x {context} positions x {numLayers} layers ({bytes / 1e6:F1} MB): median {median * 1e3:F3} ms ({bytes / median / 1e9:F1} GB/s)  fastest {times[0] * 1e3:F3} ms ({bytes / times[0] / 1e9:F1} GB/s)");
        }
    }
}
