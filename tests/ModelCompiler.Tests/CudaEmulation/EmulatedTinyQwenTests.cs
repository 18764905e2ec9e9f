using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// The Qwen2-shaped TinyQwen (q/k/v biases, half-split RoPE with theta 1e6, GQA 2:1, dim 64, 2 layers, head
/// dim 16, KV blocks of 8) on the emulator: its fused QKV kernel with the bias in the epilogue, op by op,
/// and its logits against the CPU engine.
/// </summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedTinyQwenTests
{
    private const int Dim = 64, NumHeads = 4, NumKvHeads = 2, HeadDim = 16, KvDim = NumKvHeads * HeadDim, QkvDim = Dim + 2 * KvDim, BlockSize = 8, MaxSeqLen = 64;

    [Fact]
    public void Batched_prefill_and_graph_replayed_decode_logits_match_the_cpu_engine()
    {
        var engine = new TinyQwenEngine();
        var c = engine.Config;
        Assert.True(c.QkvBias);
        using var runner = new ModelRunner(engine, StrongRandomWeights(c, seed: 9));
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights);
        var random = new Random(64);
        int[] lengths = [21, 13];
        const int numDecodeSteps = 4;
        var tokens = lengths.Select(n => Enumerable.Range(0, n + numDecodeSteps).Select(_ => random.Next(c.VocabSize)).ToArray()).ToArray();
        long[] ids = [0, 1];
        AllocateInterleaved(runner.Blocks, ids, lengths.Select(n => n + numDecodeSteps).ToArray());

        var batch = runner.CreateBatch();
        for (int s = 0; s < 2; s++) batch.AddSequence(tokens[s].AsSpan(0, lengths[s]), 0, runner.Blocks.BlockTable(ids[s]), allLogits: true);
        EmulatedStories260KTests.AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), c.VocabSize, "batched prefill");
        for (int step = 0; step < numDecodeSteps; step++)
        {
            batch.Clear();
            for (int s = 0; s < 2; s++) batch.AddSequence(tokens[s].AsSpan(lengths[s] + step, 1), lengths[s] + step, runner.Blocks.BlockTable(ids[s]));
            EmulatedStories260KTests.AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), c.VocabSize, $"decode step {step} (graph replay)");
        }
        Assert.Equal(1, cuda.NumCapturedGraphs);
        Assert.Contains(cuda.LaunchedKernels, k => k.StartsWith("rmsnorm_qkv_bias_rope_kvwrite_", StringComparison.Ordinal));
    }

    [Fact]
    public void The_qkv_epilogue_adds_the_bias_before_the_half_split_rope_and_writes_the_cache_slots()
    {
        var engine = new TinyQwenEngine();
        CudaLaunchPlan plan = engine.CudaPlan!;
        CudaLaunch launch = plan.Launches.Single(l => l.Kernel.StartsWith("rmsnorm_qkv_bias_rope_kvwrite_", StringComparison.Ordinal));
        Assert.Equal(
            [CudaArgKind.Arena, CudaArgKind.LayerWeight, CudaArgKind.LayerWeight, CudaArgKind.LayerWeight, CudaArgKind.Arena, CudaArgKind.Positions, CudaArgKind.SequenceOfToken,
             CudaArgKind.BlockTables, CudaArgKind.BlockTableStride, CudaArgKind.KeyCache, CudaArgKind.ValueCache, CudaArgKind.NumTokens],
            launch.Args.Select(a => a.Kind).ToArray());
        using var emulator = new EmulatorFixture();
        using ICudaModule module = emulator.Device.LoadModule(plan.Source, "tinyqwen_op_tests");

        // Sequence 1 prefills positions 5..13 (across a block edge, more than one tile of 8); sequence 0 decodes position 63, the last.
        int[] positions = [5, 6, 7, 8, 9, 10, 11, 12, 13, 63];
        int[] sequenceOfToken = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0];
        int numTokens = positions.Length;
        const int stride = MaxSeqLen / BlockSize, numBlocks = 2 * stride;
        int[] blockTables = Enumerable.Range(0, 2 * stride).Select(i => i % 2 == 0 ? numBlocks - 1 - i / 2 : i / 2).ToArray();
        var r = new Random(5);
        float[] Random(int n, float scale) => Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
        float[] x = Random(numTokens * Dim, 2f), g = Random(Dim, 1.5f), w = Random(QkvDim * Dim, 0.3f), bias = Random(QkvDim, 2f);
        const float sentinel = -999f;
        float[] cacheInit = Enumerable.Repeat(sentinel, numBlocks * BlockSize * KvDim).ToArray();
        DevicePointer xp = emulator.Upload(x), gp = emulator.Upload(g), wp = emulator.Upload(w), bp = emulator.Upload(bias), qkvp = emulator.Upload(new float[numTokens * QkvDim]);
        DevicePointer pp = emulator.Upload(positions), sp = emulator.Upload(sequenceOfToken), tp = emulator.Upload(blockTables);
        DevicePointer kp = emulator.Upload(cacheInit), vp = emulator.Upload(cacheInit);
        emulator.Device.Launch(module, launch.Kernel, launch.Grid.For(numTokens, 2, 0), launch.Block, 0,
            [KernelArg.Pointer(xp), KernelArg.Pointer(gp), KernelArg.Pointer(wp), KernelArg.Pointer(bp), KernelArg.Pointer(qkvp), KernelArg.Pointer(pp), KernelArg.Pointer(sp),
             KernelArg.Pointer(tp), KernelArg.Int(stride), KernelArg.Pointer(kp), KernelArg.Pointer(vp), KernelArg.Int(numTokens)]);
        float[] qkv = emulator.Download<float>(qkvp, numTokens * QkvDim);
        float[] keyCache = emulator.Download<float>(kp, cacheInit.Length), valueCache = emulator.Download<float>(vp, cacheInit.Length);

        var written = new HashSet<long>();
        for (int t = 0; t < numTokens; t++)
        {
            double ss = 0;
            for (int i = 0; i < Dim; i++) ss += (double)x[t * Dim + i] * x[t * Dim + i];
            double inv = 1 / Math.Sqrt(ss / Dim + 1e-6);
            var rows = new double[QkvDim];
            var magnitude = new double[QkvDim];
            for (int row = 0; row < QkvDim; row++)
            {
                for (int i = 0; i < Dim; i++)
                {
                    double term = (double)w[row * Dim + i] * x[t * Dim + i] * inv * g[i];
                    rows[row] += term;
                    magnitude[row] += Math.Abs(term);
                }
                rows[row] += bias[row];
                magnitude[row] += Math.Abs(bias[row]);
            }
            var expected = (double[])rows.Clone();
            var partner = Enumerable.Range(0, QkvDim).ToArray();
            for (int head = 0; head < (Dim + KvDim) / HeadDim; head++)   // q and k heads: half-split pairs (i, i + 8)
                for (int i = 0; i < HeadDim / 2; i++)
                {
                    int r0 = head * HeadDim + i, r1 = r0 + HeadDim / 2;
                    double angle = positions[t] * Math.Pow(1e6, -2.0 * i / HeadDim);
                    expected[r0] = rows[r0] * Math.Cos(angle) - rows[r1] * Math.Sin(angle);
                    expected[r1] = rows[r0] * Math.Sin(angle) + rows[r1] * Math.Cos(angle);
                    partner[r0] = r1;
                    partner[r1] = r0;
                }
            long slot = ((long)blockTables[sequenceOfToken[t] * stride + positions[t] / BlockSize] * BlockSize + positions[t] % BlockSize) * KvDim;
            for (int row = 0; row < QkvDim; row++)
            {
                double bound = 1e-5 * (1 + magnitude[row] + magnitude[partner[row]]);
                Assert.True(Math.Abs(qkv[t * QkvDim + row] - expected[row]) <= bound, $"token {t} row {row}: {qkv[t * QkvDim + row]} vs {expected[row]}");
                if (row >= Dim)
                {
                    bool isKey = row < Dim + KvDim;
                    int column = isKey ? row - Dim : row - Dim - KvDim;
                    Assert.Equal(qkv[t * QkvDim + row], (isKey ? keyCache : valueCache)[slot + column]);
                }
            }
            for (int col = 0; col < KvDim; col++) written.Add(slot + col);
        }
        for (long i = 0; i < cacheInit.Length; i++)
            if (!written.Contains(i))
                Assert.True(keyCache[i] == sentinel && valueCache[i] == sentinel, $"cache float {i} written outside the tokens' slots");
        foreach (var p in new[] { xp, gp, wp, bp, qkvp, pp, sp, tp, kp, vp }) emulator.Device.Free(p);
    }
}
