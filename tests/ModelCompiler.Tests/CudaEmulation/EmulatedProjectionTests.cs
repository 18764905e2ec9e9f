using System.Runtime.InteropServices;
using ModelCompiler.Compiler.Emit;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// Op-level tests of the emitter's library on the emulator: the projection template <c>mc_matvec</c> for every
/// weight type (raw f16/bf16 bits, Q8_0/Q4_0 GGUF blocks) against a double-precision dot product over the
/// weights decoded by <see cref="WeightConversion.Decode"/>, and the per-element decoder the embedding uses.
/// </summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedProjectionTests(EmulatedProjectionTests.ModuleFixture module)
    : IClassFixture<EmulatedProjectionTests.ModuleFixture>
{
    private static readonly (string Name, string Macro, WeightDType DType)[] Types =
    [
        ("f32", "MC_W_F32", WeightDType.F32), ("f16", "MC_W_F16", WeightDType.F16), ("bf16", "MC_W_BF16", WeightDType.BF16),
        ("q8_0", "MC_W_Q8_0", WeightDType.Q8_0), ("q4_0", "MC_W_Q4_0", WeightDType.Q4_0),
    ];

    /// <summary>Shapes: (name, IN, OUT, KSPLIT, VEC, NORM, ADD).</summary>
    private static readonly (string Name, int In, int Out, int KSplit, bool Vec, bool Norm, bool Add)[] Shapes =
    [
        ("norm", 256, 40, 1, true, true, false),
        ("splitk", 512, 24, 2, true, false, true),
        ("scalar", 96, 17, 1, false, true, false),
    ];

    /// <summary>Test kernels around the library's templates, one module (one g++ run) for the class.</summary>
    internal static string Source()
    {
        var s = new System.Text.StringBuilder();
        s.AppendLine(CudaEmitter.Runtime("f32"));
        foreach (var t in Types)
        {
            foreach (var shape in Shapes)
            {
                string name = $"mv_{shape.Name}_{t.Name}";
                s.AppendLine($"extern \"C\" __global__ void {name}(const float* x, const float* g, const void* w, float* y, int numTokens)")
                 .AppendLine($"{{ mc_matvec<{t.Macro}, {shape.In}, {shape.Out}, 8, {shape.KSplit}, {(shape.Vec ? "true" : "false")}, {(shape.Norm ? "true" : "false")}, {(shape.Add ? "true" : "false")}>(x, (const int*)0, g, 1e-5f, w, y, numTokens); }}")
                 .AppendLine($"MC_EXPORT({name})");
            }
            s.AppendLine($"extern \"C\" __global__ void decode_{t.Name}(const void* w, float* out, int rows)")
             .AppendLine($"{{ for (int c = threadIdx.x; c < 96; c += blockDim.x) out[blockIdx.x * 96 + c] = mc_weight_at<{t.Macro}>((const uint8_t*)w + blockIdx.x * mc_row_bytes<{t.Macro}, 96>(), c); }}")
             .AppendLine($"MC_EXPORT(decode_{t.Name})");
        }
        foreach (var (name, macro) in new[] { ("f16", "MC_W_F16"), ("bf16", "MC_W_BF16") })
        {
            foreach (var shape in MmaShapes)
            {
                string kernel = $"gemm_{shape.Name}_{name}";
                s.AppendLine($"extern \"C\" __global__ void {kernel}(const float* x, const float* g, const void* w, float* y, int numTokens)")
                 .AppendLine($"{{ mc_gemm_mma<{macro}, {shape.In}, {shape.Out}, {(shape.Vec ? "true" : "false")}, {(shape.Norm ? "true" : "false")}, {(shape.Add ? "true" : "false")}>(x, g, 1e-5f, w, y, numTokens); }}")
                 .AppendLine($"MC_EXPORT({kernel})");
            }
            // One m16n8k16 from fragments loaded in the PTX layout: a [16, 16] row-major, b [16, 8] (k, n) stored n-major, d [16, 8].
            string bf = name == "bf16" ? "BF16" : "F16";
            s.AppendLine($"extern \"C\" __global__ void mma_fragment_{name}(const uint16_t* a, const uint16_t* b, float* d)")
             .AppendLine("{ const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;")
             .AppendLine("  uint32_t af[4], bf[2]; float df[4];")
             .AppendLine("  for (int i = 0; i < 4; i++) { const int r = g + (i & 1) * 8, c = 2 * t + (i >> 1) * 8; af[i] = a[r * 16 + c] | ((uint32_t)a[r * 16 + c + 1] << 16); }")
             .AppendLine("  for (int i = 0; i < 2; i++) { const int k = 2 * t + i * 8; bf[i] = b[g * 16 + k] | ((uint32_t)b[g * 16 + k + 1] << 16); }")
             .AppendLine("  for (int i = 0; i < 4; i++) df[i] = d[(g + (i >> 1) * 8) * 8 + 2 * t + (i & 1)];")
             .AppendLine($"  MC_MMA_M16N8K16_{bf}(df, af, bf);")
             .AppendLine("  for (int i = 0; i < 4; i++) d[(g + (i >> 1) * 8) * 8 + 2 * t + (i & 1)] = df[i]; }")
             .AppendLine($"MC_EXPORT(mma_fragment_{name})");
        }
        return s.ToString();
    }

    /// <summary>Tensor-core GEMM shapes: (name, IN, OUT, VEC, NORM, ADD); OUT not a multiple of the 64-row block.</summary>
    private static readonly (string Name, int In, int Out, bool Vec, bool Norm, bool Add)[] MmaShapes =
    [
        ("norm", 96, 72, true, true, false),
        ("add", 128, 40, false, false, true),
    ];

    /// <summary>One device and one module for the class.</summary>
    public sealed class ModuleFixture : IDisposable
    {
        public EmulatorFixture Emulator { get; } = new();
        public ICudaModule Module { get; }
        public ModuleFixture() => Module = Emulator.Device.LoadModule(Source(), "projection_tests");
        public void Dispose() { Module.Dispose(); Emulator.Dispose(); }
    }

    private readonly EmulatorFixture _emu = module.Emulator;
    private readonly ICudaModule _module = module.Module;

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var t in Types) foreach (var shape in Shapes) data.Add(t.Name, shape.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void The_projection_of_each_weight_type_matches_a_double_dot_product_over_the_decoded_weights(string type, string shapeName)
    {
        var t = Types.Single(x => x.Name == type);
        var shape = Shapes.Single(x => x.Name == shapeName);
        const int numTokens = 11;   // a whole tile of 8 and a partial one
        int inDim = shape.In, outDim = shape.Out;
        float[] weights = EmulatorFixture.Random(outDim * inDim, 1, 0.5f);
        var encoded = new byte[WeightDTypes.SizeInBytes(t.DType, weights.Length)];
        WeightConversion.Encode(weights, t.DType, encoded);
        var decoded = new float[weights.Length];
        WeightConversion.Decode(encoded, t.DType, decoded);
        float[] x = EmulatorFixture.Random(numTokens * inDim, 2, 2f), g = EmulatorFixture.Random(inDim, 3, 1.5f), residual = EmulatorFixture.Random(numTokens * outDim, 4, 1f);

        DevicePointer xs = _emu.Upload(x), gs = _emu.Upload(g), ws = _emu.Upload(encoded);
        DevicePointer ys = _emu.Upload(shape.Add ? residual : new float[numTokens * outDim]);
        _emu.Device.Launch(_module, $"mv_{shape.Name}_{t.Name}", new Dim3((uint)((outDim + 7) / 8), (numTokens + 7) / 8, (uint)shape.KSplit), new Dim3(256), 0,
            [KernelArg.Pointer(xs), KernelArg.Pointer(gs), KernelArg.Pointer(ws), KernelArg.Pointer(ys), KernelArg.Int(numTokens)]);
        float[] y = _emu.Download<float>(ys, numTokens * outDim);

        for (int tok = 0; tok < numTokens; tok++)
        {
            double inv = 1;
            if (shape.Norm)
            {
                double ss = 0;
                for (int i = 0; i < inDim; i++) ss += (double)x[tok * inDim + i] * x[tok * inDim + i];
                inv = 1 / Math.Sqrt(ss / inDim + 1e-5);
            }
            for (int o = 0; o < outDim; o++)
            {
                double dot = 0, magnitude = 0;
                for (int i = 0; i < inDim; i++)
                {
                    double term = decoded[o * inDim + i] * (double)x[tok * inDim + i] * (shape.Norm ? g[i] * inv : 1);
                    dot += term;
                    magnitude += Math.Abs(term);
                }
                double expected = (shape.Add ? residual[tok * outDim + o] : 0) + dot;
                double error = Math.Abs(y[tok * outDim + o] - expected);
                // f32 accumulation over exactly decoded weights: far inside the 2e-3 relative bound of f16/bf16 compute.
                Assert.True(error <= 1e-5 * (magnitude + 1), $"{type} {shapeName} token {tok} row {o}: {y[tok * outDim + o]} vs {expected} (|Σ|w·x|| {magnitude:G4})");
            }
        }
        foreach (var p in new[] { xs, gs, ws, ys }) _emu.Device.Free(p);
    }

    [Theory]
    [InlineData("f16")]
    [InlineData("bf16")]
    public void One_mma_fragment_in_the_ptx_layout_matches_a_naive_matrix_product(string type)
    {
        var dtype = type == "f16" ? WeightDType.F16 : WeightDType.BF16;
        float[] a = EmulatorFixture.Random(16 * 16, 11, 2f), b = EmulatorFixture.Random(8 * 16, 12, 2f), c = EmulatorFixture.Random(16 * 8, 13, 1f);
        ushort[] Encode(float[] v)
        {
            var bytes = new byte[2 * v.Length];
            WeightConversion.Encode(v, dtype, bytes);
            var bits = MemoryMarshal.Cast<byte, ushort>(bytes).ToArray();
            WeightConversion.Decode(bytes, dtype, v);   // v becomes the rounded values the product sees
            return bits;
        }
        ushort[] ab = Encode(a), bb = Encode(b);
        DevicePointer ap = _emu.Upload(ab), bp = _emu.Upload(bb), dp = _emu.Upload(c);
        _emu.Device.Launch(_module, $"mma_fragment_{type}", new Dim3(1), new Dim3(32), 0, [KernelArg.Pointer(ap), KernelArg.Pointer(bp), KernelArg.Pointer(dp)]);
        float[] d = _emu.Download<float>(dp, 16 * 8);
        for (int m = 0; m < 16; m++)
            for (int n = 0; n < 8; n++)
            {
                double expected = c[m * 8 + n];
                for (int k = 0; k < 16; k++) expected += (double)a[m * 16 + k] * b[n * 16 + k];
                Assert.True(Math.Abs(d[m * 8 + n] - expected) <= 1e-5 * (1 + Math.Abs(expected)), $"D[{m}, {n}] = {d[m * 8 + n]}, expected {expected}");
            }
    }

    [Theory]
    [InlineData("f16", "norm")]
    [InlineData("f16", "add")]
    [InlineData("bf16", "norm")]
    [InlineData("bf16", "add")]
    public void The_tensor_core_prefill_gemm_matches_a_double_matrix_product(string type, string shapeName)
    {
        var dtype = type == "f16" ? WeightDType.F16 : WeightDType.BF16;
        var shape = MmaShapes.Single(x => x.Name == shapeName);
        const int numTokens = 37;   // a whole 32-token tile and a partial one
        int inDim = shape.In, outDim = shape.Out;
        float[] weights = EmulatorFixture.Random(outDim * inDim, 21, 0.5f);
        var encoded = new byte[WeightDTypes.SizeInBytes(dtype, weights.Length)];
        WeightConversion.Encode(weights, dtype, encoded);
        var decoded = new float[weights.Length];
        WeightConversion.Decode(encoded, dtype, decoded);
        float[] x = EmulatorFixture.Random(numTokens * inDim, 22, 2f), g = EmulatorFixture.Random(inDim, 23, 1.5f), residual = EmulatorFixture.Random(numTokens * outDim, 24, 1f);

        DevicePointer xs = _emu.Upload(x), gs = _emu.Upload(g), ws = _emu.Upload(encoded);
        DevicePointer ys = _emu.Upload(shape.Add ? residual : new float[numTokens * outDim]);
        _emu.Device.Launch(_module, $"gemm_{shape.Name}_{type}", new Dim3((uint)((outDim + 63) / 64), (numTokens + 31) / 32), new Dim3(128), 0,
            [KernelArg.Pointer(xs), KernelArg.Pointer(gs), KernelArg.Pointer(ws), KernelArg.Pointer(ys), KernelArg.Int(numTokens)]);
        float[] y = _emu.Download<float>(ys, numTokens * outDim);

        double worst = 0;
        for (int tok = 0; tok < numTokens; tok++)
        {
            double inv = 1;
            if (shape.Norm)
            {
                double ss = 0;
                for (int i = 0; i < inDim; i++) ss += (double)x[tok * inDim + i] * x[tok * inDim + i];
                inv = 1 / Math.Sqrt(ss / inDim + 1e-5);
            }
            for (int o = 0; o < outDim; o++)
            {
                double dot = 0, magnitude = 0;
                for (int i = 0; i < inDim; i++)
                {
                    double term = decoded[o * inDim + i] * (double)x[tok * inDim + i] * (shape.Norm ? g[i] * inv : 1);
                    dot += term;
                    magnitude += Math.Abs(term);
                }
                double expected = (shape.Add ? residual[tok * outDim + o] : 0) + dot;
                double relative = Math.Abs(y[tok * outDim + o] - expected) / (magnitude + 1e-6);
                worst = Math.Max(worst, relative);
                // The activations go in as a hi + lo pair (22 or 16 significant bits): far inside 2e-3 of Σ|w·x|.
                Assert.True(relative <= (type == "f16" ? 1e-5 : 1e-4), $"{type} {shapeName} token {tok} row {o}: {y[tok * outDim + o]} vs {expected} (relative {relative:E2})");
            }
        }
        foreach (var p in new[] { xs, gs, ws, ys }) _emu.Device.Free(p);
    }

    [Theory]
    [InlineData("f32")]
    [InlineData("f16")]
    [InlineData("bf16")]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void The_element_decoder_matches_WeightConversion(string type)
    {
        var t = Types.Single(x => x.Name == type);
        const int rows = 5;
        float[] weights = EmulatorFixture.Random(rows * 96, 7, 3f);
        var encoded = new byte[WeightDTypes.SizeInBytes(t.DType, weights.Length)];
        WeightConversion.Encode(weights, t.DType, encoded);
        var decoded = new float[weights.Length];
        WeightConversion.Decode(encoded, t.DType, decoded);
        DevicePointer ws = _emu.Upload(encoded), outs = _emu.Allocate<float>(rows * 96);
        _emu.Device.Launch(_module, $"decode_{t.Name}", new Dim3(rows), new Dim3(64), 0, [KernelArg.Pointer(ws), KernelArg.Pointer(outs), KernelArg.Int(rows)]);
        Assert.Equal(decoded, _emu.Download<float>(outs, rows * 96));
        _emu.Device.Free(ws);
        _emu.Device.Free(outs);
    }
}
