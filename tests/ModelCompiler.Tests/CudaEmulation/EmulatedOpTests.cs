using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// Op-level tests of the kernels the emitter generates for Stories260K (dim 64, 8 heads, 4 KV heads, head dim 8,
/// hidden 172, vocab 512, KV blocks of 16, interleaved RoPE, theta 10000, eps 1e-5), each launched from the engine's
/// own CUDA source with the launch plan's kernel name, block and argument order, against a double-precision reference.
/// </summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedOpTests(EmulatedOpTests.ModuleFixture module) : IClassFixture<EmulatedOpTests.ModuleFixture>
{
    private const int Dim = 64, NumHeads = 8, NumKvHeads = 4, HeadDim = 8, KvDim = NumKvHeads * HeadDim, QkvDim = Dim + 2 * KvDim;
    private const int Hidden = 172, Vocab = 512, BlockSize = 16, MaxSeqLen = 512, NumSplits = 4;

    /// <summary>One device and the Stories260K module (one g++ run) for the class.</summary>
    public sealed class ModuleFixture : IDisposable
    {
        public CudaLaunchPlan Plan { get; } = new Stories260KTestEngine().CudaPlan!;
        public EmulatorFixture Emulator { get; } = new();
        public ICudaModule Module { get; }
        public ModuleFixture() => Module = Emulator.Device.LoadModule(Plan.Source, "stories260k_op_tests");
        public void Dispose() { Module.Dispose(); Emulator.Dispose(); }
    }

    private readonly EmulatorFixture _emu = module.Emulator;
    private readonly ICudaModule _module = module.Module;
    private readonly CudaLaunchPlan _plan = module.Plan;

    private CudaLaunch Find(string prefix, string suffix, params CudaArgKind[] kinds) => EmulatorFixture.FindLaunch(_plan, prefix, suffix, kinds);

    private void Run(CudaLaunch launch, int numTokens, int numSequences, int numLogits, params KernelArg[] args) =>
        _emu.Device.Launch(_module, launch.Kernel, launch.Grid.For(numTokens, numSequences, numLogits), launch.Block, 0, args);

    [Fact]
    public void The_embedding_gathers_table_rows_and_gives_zero_rows_outside_the_vocabulary()
    {
        var launch = Find("embedding_", "", CudaArgKind.TokenIds, CudaArgKind.Weight, CudaArgKind.Arena, CudaArgKind.NumTokens);
        int[] ids = [0, 511, 17, -1, 512, 17, 300];
        float[] table = EmulatorFixture.Random(Vocab * Dim, 31, 2f);
        DevicePointer idp = _emu.Upload(ids), tp = _emu.Upload(table), xp = _emu.Upload(EmulatorFixture.Random(ids.Length * Dim, 32, 9f));
        Run(launch, ids.Length, 1, 0, KernelArg.Pointer(idp), KernelArg.Pointer(tp), KernelArg.Pointer(xp), KernelArg.Int(ids.Length));
        float[] x = _emu.Download<float>(xp, ids.Length * Dim);
        for (int t = 0; t < ids.Length; t++)
            for (int c = 0; c < Dim; c++)
            {
                float expected = ids[t] >= 0 && ids[t] < Vocab ? table[ids[t] * Dim + c] : 0f;
                Assert.True(x[t * Dim + c] == expected, $"token {t} (id {ids[t]}) column {c}: {x[t * Dim + c]} vs {expected}");
            }
        _emu.Free(idp, tp, xp);
    }

    [Fact]
    public void SwiGlu_matches_a_double_silu_of_the_gate_times_the_up_half()
    {
        var launch = Find("swiglu_", "", CudaArgKind.Arena, CudaArgKind.Arena, CudaArgKind.NumTokens);
        const int numTokens = 5;
        float[] gateUp = EmulatorFixture.Random(numTokens * 2 * Hidden, 41, 6f);
        DevicePointer gp = _emu.Upload(gateUp), yp = _emu.Upload(new float[numTokens * Hidden]);
        Run(launch, numTokens, 1, 0, KernelArg.Pointer(gp), KernelArg.Pointer(yp), KernelArg.Int(numTokens));
        float[] y = _emu.Download<float>(yp, numTokens * Hidden);
        for (int t = 0; t < numTokens; t++)
            for (int c = 0; c < Hidden; c++)
            {
                double gate = gateUp[t * 2 * Hidden + c], up = gateUp[t * 2 * Hidden + Hidden + c];
                double expected = gate / (1 + Math.Exp(-gate)) * up;
                Assert.True(Math.Abs(y[t * Hidden + c] - expected) <= 1e-5 * (1 + Math.Abs(expected)), $"token {t} column {c}: {y[t * Hidden + c]} vs {expected}");
            }
        _emu.Free(gp, yp);
    }

    /// <summary>Block tables for <paramref name="numSequences"/> sequences whose blocks interleave: logical block b of sequence s is physical block (b · n + (n − 1 − s)).</summary>
    private static int[] InterleavedBlockTables(int numSequences, int stride)
    {
        var tables = new int[numSequences * stride];
        for (int s = 0; s < numSequences; s++)
            for (int b = 0; b < stride; b++) tables[s * stride + b] = b * numSequences + (numSequences - 1 - s);
        return tables;
    }

    [Fact]
    public void Paged_attention_partial_and_combine_match_a_double_softmax_attention_over_interleaved_block_tables()
    {
        var partialLaunch = Find("paged_attention_", "_partial", CudaArgKind.Arena, CudaArgKind.Positions, CudaArgKind.SequenceOfToken, CudaArgKind.BlockTables,
            CudaArgKind.BlockTableStride, CudaArgKind.KeyCache, CudaArgKind.ValueCache, CudaArgKind.Scratch);
        var combineLaunch = Find("paged_attention_", "_combine", CudaArgKind.Scratch, CudaArgKind.Arena);
        Assert.Equal(NumSplits, (int)partialLaunch.Grid.Z);
        // Decode: one token per sequence, at positions inside the first block, across a split boundary, and at the last position.
        int[] positions = [0, 5, 127, 128, 300, 511];
        int numSequences = positions.Length, numTokens = numSequences;
        int[] sequenceOfToken = [3, 0, 5, 1, 4, 2];
        const int stride = MaxSeqLen / BlockSize;
        int[] blockTables = InterleavedBlockTables(numSequences, stride);
        int numBlocks = numSequences * stride;
        float[] q = EmulatorFixture.Random(numTokens * QkvDim, 61, 2f);
        float[] keys = EmulatorFixture.Random(numBlocks * BlockSize * KvDim, 62, 2f), values = EmulatorFixture.Random(numBlocks * BlockSize * KvDim, 63, 1f);
        DevicePointer qp = _emu.Upload(q), pp = _emu.Upload(positions), sp = _emu.Upload(sequenceOfToken), bp = _emu.Upload(blockTables);
        DevicePointer kp = _emu.Upload(keys), vp = _emu.Upload(values);
        DevicePointer scratch = _emu.Upload(new float[numTokens * NumHeads * NumSplits * (HeadDim + 2)]);
        DevicePointer op = _emu.Upload(new float[numTokens * Dim]);
        Run(partialLaunch, numTokens, numSequences, 0, KernelArg.Pointer(qp), KernelArg.Pointer(pp), KernelArg.Pointer(sp), KernelArg.Pointer(bp),
            KernelArg.Int(stride), KernelArg.Pointer(kp), KernelArg.Pointer(vp), KernelArg.Pointer(scratch));
        Run(combineLaunch, numTokens, numSequences, 0, KernelArg.Pointer(scratch), KernelArg.Pointer(op));
        float[] output = _emu.Download<float>(op, numTokens * Dim);

        for (int t = 0; t < numTokens; t++)
        {
            int seq = sequenceOfToken[t], last = positions[t];
            for (int h = 0; h < NumHeads; h++)
            {
                int kvHead = h / (NumHeads / NumKvHeads);
                var scores = new double[last + 1];
                var slots = new long[last + 1];
                for (int j = 0; j <= last; j++)
                {
                    slots[j] = ((long)blockTables[seq * stride + j / BlockSize] * BlockSize + j % BlockSize) * KvDim + kvHead * HeadDim;
                    double dot = 0;
                    for (int d = 0; d < HeadDim; d++) dot += (double)q[t * QkvDim + h * HeadDim + d] * keys[slots[j] + d];
                    scores[j] = dot / Math.Sqrt(HeadDim);
                }
                double max = scores.Max(), sum = scores.Sum(s => Math.Exp(s - max));
                for (int d = 0; d < HeadDim; d++)
                {
                    double expected = 0;
                    for (int j = 0; j <= last; j++) expected += Math.Exp(scores[j] - max) / sum * values[slots[j] + d];
                    float actual = output[t * Dim + h * HeadDim + d];
                    Assert.True(Math.Abs(actual - expected) <= 1e-5, $"token {t} (sequence {seq}, position {last}) head {h} dim {d}: {actual} vs {expected}");
                }
            }
        }
        _emu.Free(qp, pp, sp, bp, kp, vp, scratch, op);
    }

    [Fact]
    public void The_qkv_epilogue_matches_a_double_rmsnorm_projection_with_interleaved_rope_and_writes_the_cache_slots()
    {
        var launch = Find("rmsnorm_qkv_rope_kvwrite_", "", CudaArgKind.Arena, CudaArgKind.LayerWeight, CudaArgKind.LayerWeight, CudaArgKind.Arena,
            CudaArgKind.Positions, CudaArgKind.SequenceOfToken, CudaArgKind.BlockTables, CudaArgKind.BlockTableStride, CudaArgKind.KeyCache, CudaArgKind.ValueCache, CudaArgKind.NumTokens);
        // A prefill of 7 tokens of sequence 1 at positions 14..20 (across a block edge) and 4 decode tokens of sequences 0, 2, 3, 0: 11 tokens, two tiles of 8.
        int[] positions = [14, 15, 16, 17, 18, 19, 20, 3, 200, 511, 4];
        int[] sequenceOfToken = [1, 1, 1, 1, 1, 1, 1, 0, 2, 3, 0];
        int numTokens = positions.Length;
        const int numSequences = 4, stride = MaxSeqLen / BlockSize;
        int[] blockTables = InterleavedBlockTables(numSequences, stride);
        int numBlocks = numSequences * stride;
        float[] x = EmulatorFixture.Random(numTokens * Dim, 71, 2f), g = EmulatorFixture.Random(Dim, 72, 1.5f), w = EmulatorFixture.Random(QkvDim * Dim, 73, 0.5f);
        const float sentinel = -1234.5f;
        float[] cacheInit = Enumerable.Repeat(sentinel, numBlocks * BlockSize * KvDim).ToArray();
        DevicePointer xp = _emu.Upload(x), gp = _emu.Upload(g), wp = _emu.Upload(w), qkvp = _emu.Upload(new float[numTokens * QkvDim]);
        DevicePointer pp = _emu.Upload(positions), sp = _emu.Upload(sequenceOfToken), bp = _emu.Upload(blockTables);
        DevicePointer kp = _emu.Upload(cacheInit), vp = _emu.Upload(cacheInit);
        Run(launch, numTokens, numSequences, 0, KernelArg.Pointer(xp), KernelArg.Pointer(gp), KernelArg.Pointer(wp), KernelArg.Pointer(qkvp),
            KernelArg.Pointer(pp), KernelArg.Pointer(sp), KernelArg.Pointer(bp), KernelArg.Int(stride), KernelArg.Pointer(kp), KernelArg.Pointer(vp), KernelArg.Int(numTokens));
        float[] qkv = _emu.Download<float>(qkvp, numTokens * QkvDim);
        float[] keyCache = _emu.Download<float>(kp, cacheInit.Length), valueCache = _emu.Download<float>(vp, cacheInit.Length);

        var written = new HashSet<long>();
        for (int t = 0; t < numTokens; t++)
        {
            double ss = 0;
            for (int i = 0; i < Dim; i++) ss += (double)x[t * Dim + i] * x[t * Dim + i];
            double inv = 1 / Math.Sqrt(ss / Dim + 1e-5);
            var rows = new double[QkvDim];
            var magnitude = new double[QkvDim];
            for (int r = 0; r < QkvDim; r++)
                for (int i = 0; i < Dim; i++)
                {
                    double term = (double)w[r * Dim + i] * x[t * Dim + i] * inv * g[i];
                    rows[r] += term;
                    magnitude[r] += Math.Abs(term);
                }
            var expected = (double[])rows.Clone();
            for (int r0 = 0; r0 < Dim + KvDim; r0 += 2)   // q and k: interleaved pairs (2i, 2i + 1) of each head
            {
                int i = (r0 % HeadDim) / 2;
                double angle = positions[t] * Math.Pow(10000.0, -2.0 * i / HeadDim);
                expected[r0] = rows[r0] * Math.Cos(angle) - rows[r0 + 1] * Math.Sin(angle);
                expected[r0 + 1] = rows[r0] * Math.Sin(angle) + rows[r0 + 1] * Math.Cos(angle);
            }
            long slot = ((long)blockTables[sequenceOfToken[t] * stride + positions[t] / BlockSize] * BlockSize + positions[t] % BlockSize) * KvDim;
            for (int r = 0; r < QkvDim; r++)
            {
                double bound = 1e-5 * (1 + magnitude[r] + (r % 2 == 0 ? magnitude[r + 1] : magnitude[r - 1]));
                Assert.True(Math.Abs(qkv[t * QkvDim + r] - expected[r]) <= bound, $"token {t} row {r}: {qkv[t * QkvDim + r]} vs {expected[r]}");
                if (r >= Dim)
                {
                    bool isKey = r < Dim + KvDim;
                    int column = isKey ? r - Dim : r - Dim - KvDim;
                    float cached = (isKey ? keyCache : valueCache)[slot + column];
                    Assert.True(cached == qkv[t * QkvDim + r], $"token {t} {(isKey ? "key" : "value")} column {column} in the cache: {cached} vs qkv {qkv[t * QkvDim + r]}");
                }
            }
            for (int c = 0; c < KvDim; c++) written.Add(slot + c);
        }
        // Nothing else in either cache was touched.
        for (long i = 0; i < cacheInit.Length; i++)
            if (!written.Contains(i))
                Assert.True(keyCache[i] == sentinel && valueCache[i] == sentinel, $"cache float {i} written outside the tokens' slots");
        _emu.Free(xp, gp, wp, qkvp, pp, sp, bp, kp, vp);
    }

    /// <summary>x[t] / sqrt(mean(x[t]²) + eps) · g in double.</summary>
    private static double[] RmsNormReference(float[] x, int t, int width, float[] g, double eps)
    {
        double ss = 0;
        for (int i = 0; i < width; i++) ss += (double)x[t * width + i] * x[t * width + i];
        double inv = 1 / Math.Sqrt(ss / width + eps);
        var y = new double[width];
        for (int i = 0; i < width; i++) y[i] = x[t * width + i] * inv * g[i];
        return y;
    }

    [Fact]
    public void The_norm_folded_into_the_ffn_projection_alone_matches_a_double_rmsnorm()
    {
        // The fused RMSNorm → gate/up projection launched with an identity in its first 64 rows and zeros below:
        // its first 64 outputs are then the norm alone, the rest exactly 0. Rows of very different scales
        // (1e-3 puts eps in play, 100 tests the sum of squares).
        var launch = Find("rmsnorm_linear_", "", CudaArgKind.Arena, CudaArgKind.LayerWeight, CudaArgKind.LayerWeight, CudaArgKind.Arena, CudaArgKind.NumTokens);
        const int numTokens = 10, outDim = 2 * Hidden;
        float[] scales = [1f, 1e-3f, 100f, 3f, 0.5f, 1f, 20f, 1e-2f, 1f, 7f];
        var random = new Random(81);
        float[] x = Enumerable.Range(0, numTokens * Dim).Select(i => (float)(random.NextDouble() * 2 - 1) * scales[i / Dim]).ToArray();
        float[] g = EmulatorFixture.Random(Dim, 82, 1.5f);
        var w = new float[outDim * Dim];
        for (int r = 0; r < Dim; r++) w[r * Dim + r] = 1f;
        DevicePointer xp = _emu.Upload(x), gp = _emu.Upload(g), wp = _emu.Upload(w), yp = _emu.Upload(EmulatorFixture.Random(numTokens * outDim, 83, 5f));
        Run(launch, numTokens, 1, 0, KernelArg.Pointer(xp), KernelArg.Pointer(gp), KernelArg.Pointer(wp), KernelArg.Pointer(yp), KernelArg.Int(numTokens));
        float[] y = _emu.Download<float>(yp, numTokens * outDim);
        for (int t = 0; t < numTokens; t++)
        {
            double[] expected = RmsNormReference(x, t, Dim, g, 1e-5);
            for (int c = 0; c < outDim; c++)
            {
                double e = c < Dim ? expected[c] : 0;
                Assert.True(Math.Abs(y[t * outDim + c] - e) <= 1e-5 * (1 + Math.Abs(e)), $"token {t} (scale {scales[t]}) column {c}: {y[t * outDim + c]} vs {e}");
            }
        }
        _emu.Free(xp, gp, wp, yp);
    }

    [Fact]
    public void The_final_norm_and_lm_head_gather_the_rows_that_need_logits_and_match_a_double_reference()
    {
        var launch = Find("final_norm_lm_head_", "", CudaArgKind.Arena, CudaArgKind.LogitsTokenIndices, CudaArgKind.Weight, CudaArgKind.Weight,
            CudaArgKind.Logits, CudaArgKind.NumLogits);
        const int numTokens = 13;
        int[] rows = [12, 0, 5, 6, 11, 3, 9, 2, 7];   // more than one tile of 8, out of order
        int numLogits = rows.Length;
        float[] x = EmulatorFixture.Random(numTokens * Dim, 91, 3f), g = EmulatorFixture.Random(Dim, 92, 1.5f), head = EmulatorFixture.Random(Vocab * Dim, 93, 0.5f);
        DevicePointer xp = _emu.Upload(x), ip = _emu.Upload(rows), gp = _emu.Upload(g), hp = _emu.Upload(head), lp = _emu.Upload(new float[numLogits * Vocab]);
        Run(launch, numTokens, 1, numLogits, KernelArg.Pointer(xp), KernelArg.Pointer(ip), KernelArg.Pointer(gp), KernelArg.Pointer(hp), KernelArg.Pointer(lp), KernelArg.Int(numLogits));
        float[] logits = _emu.Download<float>(lp, numLogits * Vocab);
        for (int i = 0; i < numLogits; i++)
        {
            double[] normed = RmsNormReference(x, rows[i], Dim, g, 1e-5);
            for (int v = 0; v < Vocab; v++)
            {
                double dot = 0, magnitude = 0;
                for (int c = 0; c < Dim; c++) { dot += head[v * Dim + c] * normed[c]; magnitude += Math.Abs(head[v * Dim + c] * normed[c]); }
                Assert.True(Math.Abs(logits[i * Vocab + v] - dot) <= 1e-5 * (1 + magnitude), $"logits row {i} (token {rows[i]}) id {v}: {logits[i * Vocab + v]} vs {dot}");
            }
        }
        _emu.Free(xp, ip, gp, hp, lp);
    }
}
