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
        s.AppendLine(CudaEmitter.Prelude).AppendLine(CudaEmitter.Library);
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
        return s.ToString();
    }

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

    private static float[] Random(int n, int seed, float scale)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

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
        float[] weights = Random(outDim * inDim, 1, 0.5f);
        var encoded = new byte[WeightDTypes.SizeInBytes(t.DType, weights.Length)];
        WeightConversion.Encode(weights, t.DType, encoded);
        var decoded = new float[weights.Length];
        WeightConversion.Decode(encoded, t.DType, decoded);
        float[] x = Random(numTokens * inDim, 2, 2f), g = Random(inDim, 3, 1.5f), residual = Random(numTokens * outDim, 4, 1f);

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
    [InlineData("f32")]
    [InlineData("f16")]
    [InlineData("bf16")]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void The_element_decoder_matches_WeightConversion(string type)
    {
        var t = Types.Single(x => x.Name == type);
        const int rows = 5;
        float[] weights = Random(rows * 96, 7, 3f);
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
