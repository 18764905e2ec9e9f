using System.Text.RegularExpressions;
using ModelCompiler.Compiler;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Tests.Compiler;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// Op-level tests of the unfused kernels, which the fusions leave only for graphs they do not match: the
/// ParallelBlock test model (dim 32, 4 heads of 8, KV blocks of 8, interleaved RoPE, theta 10000, eps 1e-5)
/// runs a standalone RMSNorm, RoPE, KV write, SiLU, add and the block-output copy. Each is launched from
/// the engine's own CUDA source with the launch plan's kernel, grid, block and argument order, against a
/// double-precision reference. The half-split RoPE, a linear op's own bias and the elementwise product come
/// from a variant of the description (<c>"ropeStyle": "half"</c>, <c>"bias": true</c> on the output
/// projection, the branches multiplied instead of added).
/// </summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedUnfusedOpTests(EmulatedUnfusedOpTests.ModuleFixture module) : IClassFixture<EmulatedUnfusedOpTests.ModuleFixture>
{
    private const int Dim = 32, NumHeads = 4, HeadDim = 8, BlockSize = 8, MaxSeqLen = 32;

    /// <summary>One device, the ParallelBlock module and its variant (half RoPE, a biased linear, a mul; two g++ runs) for the class.</summary>
    public sealed class ModuleFixture : IDisposable
    {
        public CudaLaunchPlan Plan { get; } = new ParallelBlockEngine().CudaPlan!;
        public EmulatorFixture Emulator { get; } = new();
        public ICudaModule Module { get; }
        public ICudaModule VariantModule { get; }
        public string HalfRopeKernel { get; }
        public string BiasKernel { get; }
        public string MulKernel { get; }

        public ModuleFixture()
        {
            Module = Emulator.Device.LoadModule(Plan.Source, "parallel_block_op_tests");
            string variant = Descriptions.Edit(Descriptions.ParallelBlock, "\"tiedEmbedding\": true", "\"tiedEmbedding\": true, \"ropeStyle\": \"half\"");
            variant = Descriptions.Edit(variant, "\"outFeatures\": 32, \"output\": \"attn_out\"", "\"outFeatures\": 32, \"bias\": true, \"output\": \"attn_out\"");
            variant = Descriptions.Edit(variant, "{ \"op\": \"add\", \"inputs\": [\"attn_out\", \"mlp_out\"]", "{ \"op\": \"mul\", \"inputs\": [\"attn_out\", \"mlp_out\"]");
            var result = ModelCompilerDriver.CompileCuda(variant, "parallel_block_variant.model.json");
            Assert.Empty(result.Diagnostics);
            HalfRopeKernel = Regex.Match(result.Source!, @"^extern ""C"" __global__ void (rope_[0-9a-f]+)\(", RegexOptions.Multiline).Groups[1].Value;
            BiasKernel = Regex.Match(result.Source!, @"^extern ""C"" __global__ void (linear_bias_[0-9a-f]+_bias)\(", RegexOptions.Multiline).Groups[1].Value;
            Assert.NotEqual("", HalfRopeKernel);
            MulKernel = Regex.Match(result.Source!, @"^extern ""C"" __global__ void (mul_[0-9a-f]+)\(", RegexOptions.Multiline).Groups[1].Value;
            Assert.NotEqual("", BiasKernel);
            Assert.NotEqual("", MulKernel);
            VariantModule = Emulator.Device.LoadModule(result.Source!, "parallel_block_half_op_tests");
        }

        public void Dispose() { Module.Dispose(); VariantModule.Dispose(); Emulator.Dispose(); }
    }

    private readonly EmulatorFixture _emu = module.Emulator;
    private readonly ModuleFixture _fixture = module;

    private CudaLaunch Find(string prefix, string suffix, params CudaArgKind[] kinds) => EmulatorFixture.FirstLaunch(_fixture.Plan, prefix, suffix, kinds);

    private void Run(CudaLaunch launch, int numTokens, params KernelArg[] args) =>
        _emu.Device.Launch(_fixture.Module, launch.Kernel, launch.Grid.For(numTokens, 1, 0), launch.Block, 0, args);

    [Fact]
    public void The_standalone_rmsnorm_matches_a_double_reference_at_any_scale()
    {
        var launch = Find("rmsnorm_", "", CudaArgKind.Arena, CudaArgKind.LayerWeight, CudaArgKind.Arena, CudaArgKind.NumTokens);
        const int numTokens = 6;
        float[] scales = [1f, 1e-3f, 300f, 0.25f, 1f, 5f];
        var random = new Random(11);
        float[] x = Enumerable.Range(0, numTokens * Dim).Select(i => (float)(random.NextDouble() * 2 - 1) * scales[i / Dim]).ToArray();
        float[] g = EmulatorFixture.Random(Dim, 12, 2f);
        DevicePointer xp = _emu.Upload(x), gp = _emu.Upload(g), yp = _emu.Upload(new float[numTokens * Dim]);
        Run(launch, numTokens, KernelArg.Pointer(xp), KernelArg.Pointer(gp), KernelArg.Pointer(yp), KernelArg.Int(numTokens));
        float[] y = _emu.Download<float>(yp, numTokens * Dim);
        for (int t = 0; t < numTokens; t++)
        {
            double ss = 0;
            for (int c = 0; c < Dim; c++) ss += (double)x[t * Dim + c] * x[t * Dim + c];
            double inv = 1 / Math.Sqrt(ss / Dim + 1e-5);
            for (int c = 0; c < Dim; c++)
            {
                double expected = x[t * Dim + c] * inv * g[c];
                Assert.True(Math.Abs(y[t * Dim + c] - expected) <= 1e-5 * (1 + Math.Abs(expected)), $"token {t} (scale {scales[t]}) column {c}: {y[t * Dim + c]} vs {expected}");
            }
        }
        _emu.Free(xp, gp, yp);
    }

    /// <summary>Positions of the RoPE tests: 0 (identity), within and across KV blocks, the last of the context, and far beyond it.</summary>
    private static readonly int[] s_ropePositions = [0, 1, 7, 8, 19, 31, 4000];

    /// <summary>Rotates each head's pairs in double: (2i, 2i + 1) interleaved, or (i, i + headDim/2) half-split.</summary>
    private static double[] RopeReference(float[] rows, int width, bool interleaved)
    {
        var expected = rows.Select(v => (double)v).ToArray();
        for (int t = 0; t < s_ropePositions.Length; t++)
            for (int head = 0; head < width / HeadDim; head++)
                for (int i = 0; i < HeadDim / 2; i++)
                {
                    int r0 = t * width + head * HeadDim + (interleaved ? 2 * i : i), r1 = r0 + (interleaved ? 1 : HeadDim / 2);
                    double angle = s_ropePositions[t] * Math.Pow(10000.0, -2.0 * i / HeadDim);
                    expected[r0] = rows[r0] * Math.Cos(angle) - rows[r1] * Math.Sin(angle);
                    expected[r1] = rows[r0] * Math.Sin(angle) + rows[r1] * Math.Cos(angle);
                }
        return expected;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void The_standalone_rope_rotates_each_heads_pairs_in_place(bool interleaved)
    {
        var launch = Find("rope_", "", CudaArgKind.Arena, CudaArgKind.Positions, CudaArgKind.NumTokens);
        int numTokens = s_ropePositions.Length;
        float[] rows = EmulatorFixture.Random(numTokens * Dim, 21, 3f);
        DevicePointer rp = _emu.Upload(rows), pp = _emu.Upload(s_ropePositions);
        KernelArg[] args = [KernelArg.Pointer(rp), KernelArg.Pointer(pp), KernelArg.Int(numTokens)];
        if (interleaved) Run(launch, numTokens, args);
        else _emu.Device.Launch(_fixture.VariantModule, _fixture.HalfRopeKernel, launch.Grid.For(numTokens, 1, 0), launch.Block, 0, args);
        float[] actual = _emu.Download<float>(rp, rows.Length);
        double[] expected = RopeReference(rows, Dim, interleaved);
        for (int i = 0; i < rows.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= 2e-6 * (1 + Math.Abs(rows[i]) + 3), $"{(interleaved ? "interleaved" : "half")} token {i / Dim} column {i % Dim}: {actual[i]} vs {expected[i]}");
        _emu.Free(rp, pp);
    }

    [Fact]
    public void The_standalone_kv_write_puts_each_tokens_keys_and_values_in_its_slot_and_nowhere_else()
    {
        var launch = Find("kvwrite_paged_attention_", "_kvwrite", CudaArgKind.Arena, CudaArgKind.Arena, CudaArgKind.Positions, CudaArgKind.SequenceOfToken,
            CudaArgKind.BlockTables, CudaArgKind.BlockTableStride, CudaArgKind.KeyCache, CudaArgKind.ValueCache, CudaArgKind.NumTokens);
        // Sequence 1 prefills positions 6..10 (across a block edge); sequence 0 decodes position 31, the last slot.
        int[] positions = [6, 7, 8, 9, 10, 31];
        int[] sequenceOfToken = [1, 1, 1, 1, 1, 0];
        const int stride = MaxSeqLen / BlockSize, numBlocks = 2 * stride;
        int[] blockTables = [7, 5, 3, 1, 6, 4, 2, 0];   // sequence 0: 7 5 3 1; sequence 1: 6 4 2 0
        int numTokens = positions.Length;
        float[] k = EmulatorFixture.Random(numTokens * Dim, 31, 2f), v = EmulatorFixture.Random(numTokens * Dim, 32, 2f);
        const float sentinel = -777f;
        float[] cacheInit = Enumerable.Repeat(sentinel, numBlocks * BlockSize * Dim).ToArray();
        DevicePointer kp = _emu.Upload(k), vp = _emu.Upload(v), pp = _emu.Upload(positions), sp = _emu.Upload(sequenceOfToken), bp = _emu.Upload(blockTables);
        DevicePointer kc = _emu.Upload(cacheInit), vc = _emu.Upload(cacheInit);
        Run(launch, numTokens, KernelArg.Pointer(kp), KernelArg.Pointer(vp), KernelArg.Pointer(pp), KernelArg.Pointer(sp), KernelArg.Pointer(bp),
            KernelArg.Int(stride), KernelArg.Pointer(kc), KernelArg.Pointer(vc), KernelArg.Int(numTokens));
        float[] keys = _emu.Download<float>(kc, cacheInit.Length), values = _emu.Download<float>(vc, cacheInit.Length);
        var expectedKeys = (float[])cacheInit.Clone();
        var expectedValues = (float[])cacheInit.Clone();
        for (int t = 0; t < numTokens; t++)
        {
            long slot = ((long)blockTables[sequenceOfToken[t] * stride + positions[t] / BlockSize] * BlockSize + positions[t] % BlockSize) * Dim;
            for (int c = 0; c < Dim; c++)
            {
                expectedKeys[slot + c] = k[t * Dim + c];
                expectedValues[slot + c] = v[t * Dim + c];
            }
        }
        Assert.Equal(expectedKeys, keys);
        Assert.Equal(expectedValues, values);
        _emu.Free(kp, vp, pp, sp, bp, kc, vc);
    }

    [Fact]
    public void Silu_add_and_the_block_output_copy_match_their_definitions()
    {
        var silu = Find("silu_", "", CudaArgKind.Arena, CudaArgKind.Arena, CudaArgKind.NumTokens);
        var add = Find("add_", "", CudaArgKind.Arena, CudaArgKind.Arena, CudaArgKind.Arena, CudaArgKind.NumTokens);
        var copy = Find("copy_", "", CudaArgKind.Arena, CudaArgKind.Arena, CudaArgKind.NumTokens);
        const int numTokens = 5, hidden = 64;
        float[] up = EmulatorFixture.Random(numTokens * hidden, 41, 8f), a = EmulatorFixture.Random(numTokens * Dim, 42, 2f), b = EmulatorFixture.Random(numTokens * Dim, 43, 2f);
        DevicePointer upp = _emu.Upload(up), actp = _emu.Upload(new float[numTokens * hidden]);
        DevicePointer ap = _emu.Upload(a), bp = _emu.Upload(b), sum = _emu.Upload(new float[numTokens * Dim]), copied = _emu.Upload(EmulatorFixture.Random(numTokens * Dim, 44, 1f));
        Run(silu, numTokens, KernelArg.Pointer(upp), KernelArg.Pointer(actp), KernelArg.Int(numTokens));
        Run(add, numTokens, KernelArg.Pointer(ap), KernelArg.Pointer(bp), KernelArg.Pointer(sum), KernelArg.Int(numTokens));
        Run(copy, numTokens, KernelArg.Pointer(sum), KernelArg.Pointer(copied), KernelArg.Int(numTokens));
        float[] act = _emu.Download<float>(actp, numTokens * hidden), added = _emu.Download<float>(sum, numTokens * Dim), moved = _emu.Download<float>(copied, numTokens * Dim);
        for (int i = 0; i < act.Length; i++)
        {
            double expected = up[i] / (1 + Math.Exp(-(double)up[i]));
            Assert.True(Math.Abs(act[i] - expected) <= 1e-6 * (1 + Math.Abs(expected)), $"silu {i}: {act[i]} vs {expected}");
        }
        for (int i = 0; i < added.Length; i++) Assert.Equal(a[i] + b[i], added[i]);   // one f32 rounding, as on the CPU
        Assert.Equal(added, moved);
        _emu.Free(upp, actp, ap, bp, sum, copied);
    }

    [Fact]
    public void A_linear_ops_own_bias_is_added_to_its_output_rows_after_the_projection()
    {
        const int numTokens = 7;
        float[] y = EmulatorFixture.Random(numTokens * Dim, 51, 3f), bias = EmulatorFixture.Random(Dim, 52, 2f);
        DevicePointer yp = _emu.Upload(y), bp = _emu.Upload(bias);
        _emu.Device.Launch(_fixture.VariantModule, _fixture.BiasKernel, new Dim3(1, numTokens), new Dim3(256), 0,
            [KernelArg.Pointer(yp), KernelArg.Pointer(bp), KernelArg.Int(numTokens)]);
        float[] actual = _emu.Download<float>(yp, y.Length);
        for (int i = 0; i < y.Length; i++) Assert.Equal(y[i] + bias[i % Dim], actual[i]);
        _emu.Free(yp, bp);
    }

    [Fact]
    public void The_elementwise_product_matches_its_definition()
    {
        const int numTokens = 4;
        float[] a = EmulatorFixture.Random(numTokens * Dim, 61, 3f), b = EmulatorFixture.Random(numTokens * Dim, 62, 3f);
        DevicePointer ap = _emu.Upload(a), bp = _emu.Upload(b), yp = _emu.Upload(new float[numTokens * Dim]);
        _emu.Device.Launch(_fixture.VariantModule, _fixture.MulKernel, new Dim3(1, numTokens), new Dim3(256), 0,
            [KernelArg.Pointer(ap), KernelArg.Pointer(bp), KernelArg.Pointer(yp), KernelArg.Int(numTokens)]);
        float[] y = _emu.Download<float>(yp, a.Length);
        for (int i = 0; i < y.Length; i++) Assert.Equal(a[i] * b[i], y[i]);
        _emu.Free(ap, bp, yp);
    }
}
