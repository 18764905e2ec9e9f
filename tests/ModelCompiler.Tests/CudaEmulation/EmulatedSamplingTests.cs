using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using ModelCompiler.Tests.Runtime;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// The sampling kernel (<c>sample_tokens_*</c>, launched from an engine's own source with its plan's grid and
/// arguments) against the host <see cref="Sampler"/> and against <see cref="SamplingReference"/> (the draw
/// contract written naively: a full sort, no shortcuts), given the same uniforms: identical token ids, row by
/// row. Every mass in the contract is an integer sum and every weight the same float operations on both
/// sides, so there is no tolerance and no boundary a summation order could flip.
/// </summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedSamplingTests(EmulatedSamplingTests.ModuleFixture modules) : IClassFixture<EmulatedSamplingTests.ModuleFixture>
{
    /// <summary>One device and one module per engine for the class (a g++ run each the first time, and few loaded libraries).</summary>
    public sealed class ModuleFixture : IDisposable
    {
        private readonly Dictionary<string, ICudaModule> _modules = new();
        public EmulatorFixture Emulator { get; } = new();
        public ICudaModule Module(CudaLaunchPlan plan, string name)
        {
            if (!_modules.TryGetValue(name, out var module)) _modules[name] = module = Emulator.Device.LoadModule(plan.Source, name);
            return module;
        }
        public void Dispose()
        {
            foreach (var module in _modules.Values) module.Dispose();
            Emulator.Dispose();
        }
    }

    private const int Bound = 1024;   // CudaEmitter.SampleCandidates

    private static readonly float[] Temperatures = [0f, 0.05f, 0.7f, 1f, 1.5f, 8f];
    private static readonly int[] TopKs = [0, 1, 2, 40, 200, 511, 512, 513, 1024, 1025, 5000, 31999, 32000, 40000];
    private static readonly float[] TopPs = [1f, 0.999f, 0.9f, 0.5f, 1e-6f];

    [Fact]
    public void Stories260K_rows_over_temperatures_top_k_and_top_p_give_the_host_samplers_tokens()
    {
        var engine = new Stories260KTestEngine();
        var counts = RunRows(engine.CudaPlan!, engine.Config.VocabSize, numRows: 360, seed: 1, "stories260k_sampling");
        // The comparison means something: many rows are not the argmax, and no row fell back (the vocabulary is under the bound).
        Assert.True(counts.NotArgmax > 360 / 3, $"only {counts.NotArgmax} of 360 rows drew a token other than the argmax");
        Assert.Equal(0, counts.TopKAboveBound + counts.NucleusAboveBound);
    }

    [Fact]
    public void Llama15M_rows_of_32000_logits_sample_on_the_device_within_the_bound_and_say_why_beyond_it()
    {
        var engine = new Llama15MTestEngine();
        var counts = RunRows(engine.CudaPlan!, engine.Config.VocabSize, numRows: 72, seed: 2, "llama15m_sampling");
        Assert.True(counts.NotArgmax > 72 / 4, $"only {counts.NotArgmax} of 72 rows drew a token other than the argmax");
        Assert.True(counts.TopKAboveBound > 0 && counts.NucleusAboveBound > 0, $"both codes should occur ({counts})");
    }

    [Fact]
    public void A_greedy_row_ties_to_the_lower_id_across_threads_and_warps()
    {
        var engine = new Stories260KTestEngine();
        const int vocab = 512, rows = 4;
        float[] logits = EmulatorFixture.Random(rows * vocab, 51, 3f);
        logits[0 * vocab + 3] = 10f; logits[0 * vocab + 500] = 10f;     // different warps
        logits[1 * vocab + 257] = 7f; logits[1 * vocab + 1] = 7f;       // the lower id in a later warp's stride
        for (int v = 0; v < vocab; v++) logits[2 * vocab + v] = -1.5f;  // constant
        logits[3 * vocab + 296] = 5f; logits[3 * vocab + 40] = 5f;      // one thread's stride
        var options = new SamplingOptions();
        int[] tokens = Launch(engine.CudaPlan!, vocab, logits, Enumerable.Repeat(options, rows).ToArray(), new ulong[rows], "stories260k_sampling");
        Assert.Equal(new[] { 3, 1, 0, 40 }, tokens);
    }

    [Fact]
    public void The_runner_samples_on_the_device_and_takes_rows_beyond_the_bound_to_the_host_with_the_same_uniform()
    {
        // Three prompts of Llama15M (random weights: flat logits, so a top-p of 0.99 has a nucleus of thousands).
        var engine = new Llama15MTestEngine();
        using var cpu = new ModelRunner(engine, InMemoryWeightSource.CreateRandomLlama(engine.Config, seed: 15));
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, cpu.Weights);
        SamplingOptions[] options =
        [
            new(Temperature: 1f, TopK: 40, Seed: 1),            // on the device
            new(Temperature: 1f, TopK: 2000, Seed: 2),          // top-k above the bound: the host
            new(Temperature: 2f, TopP: 0.99f, Seed: 3),         // a nucleus above the bound: the host
            new(Temperature: 0.5f, Seed: 4),                    // no cut: on the device
            new(Temperature: 0f),                               // greedy
        ];
        var batch = cpu.CreateBatch();
        for (int s = 0; s < options.Length; s++)
        {
            cpu.Blocks.Allocate(s, 3);
            batch.AddSequence(new[] { 1, 400 + 1000 * s, 77 * s + 5 }, 0, cpu.Blocks.BlockTable(s));
        }
        int[] expected = new int[options.Length], actual = new int[options.Length];
        for (int step = 0; step < 3; step++)
        {
            ((IModelRunner)cpu).ForwardSample(batch, options.Select(o => new Sampler(engine.Config.VocabSize, o with { Seed = o.Seed + (ulong)step })).ToArray(), expected);
            cuda.ForwardSample(batch, options.Select(o => new Sampler(engine.Config.VocabSize, o with { Seed = o.Seed + (ulong)step })).ToArray(), actual);
            Assert.Equal(expected, actual);
        }
        Assert.Equal(6, cuda.NumRowsSampledOnHost);
        Assert.Equal(6, cuda.NumRowsSampledOnDevice);
    }

    [Fact]
    public void Sampled_text_from_the_device_is_the_cpu_engines_for_the_same_seed()
    {
        var engine = new Stories260KTestEngine();
        int[] prompt = StoriesTokenizer().Encode("Once upon a time", addBos: true);
        using var cpu = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, cpu.Weights);
        foreach (var options in new SamplingOptions[] { new(Temperature: 0.9f, TopK: 40, TopP: 0.95f, Seed: 21), new(Temperature: 1.2f, Seed: 22) })
        {
            var expected = new List<int>();
            var actual = new List<int>();
            new TextGenerator(cpu).Generate(prompt, 40, new Sampler(engine.Config.VocabSize, options), expected.Add, stopAtEndOfText: false);
            new TextGenerator(cuda).Generate(prompt, 40, new Sampler(engine.Config.VocabSize, options), actual.Add, stopAtEndOfText: false);
            Assert.Equal(expected, actual);
        }
        Assert.Equal(80, cuda.NumRowsSampledOnDevice);
        Assert.Equal(0, cuda.NumRowsSampledOnHost);
    }

    /// <summary>Random rows and options; checks each token against the host sampler, the naive reference and the bound's codes.</summary>
    private (int NotArgmax, int TopKAboveBound, int NucleusAboveBound) RunRows(CudaLaunchPlan plan, int vocab, int numRows, int seed, string moduleName)
    {
        var random = new Random(seed);
        var logits = new float[numRows * vocab];
        var options = new SamplingOptions[numRows];
        var uniforms = new ulong[numRows];
        for (int r = 0; r < numRows; r++)
        {
            FillRow(logits.AsSpan(r * vocab, vocab), random, r);
            options[r] = new SamplingOptions(Temperatures[random.Next(Temperatures.Length)], TopKs[random.Next(TopKs.Length)], TopPs[random.Next(TopPs.Length)]);
            uniforms[r] = (r % 7) switch { 0 => 0UL, 1 => ulong.MaxValue, _ => (ulong)random.NextInt64() << 1 ^ (ulong)random.Next() };
        }
        int[] tokens = Launch(plan, vocab, logits, options, uniforms, moduleName);
        int notArgmax = 0, topKAboveBound = 0, nucleusAboveBound = 0;
        for (int r = 0; r < numRows; r++)
        {
            var row = logits.AsSpan(r * vocab, vocab);
            int expected = new Sampler(vocab, options[r]).Sample(row, uniforms[r]);
            var reference = SamplingReference.Sample(row, options[r], uniforms[r]);
            string what = $"row {r} ({options[r]}, uniform {uniforms[r]:X16}, nucleus {reference.NumCandidates})";
            Assert.True(expected == reference.Token, $"{what}: host sampler {expected}, reference {reference.Token}");
            if (expected != Sampler.Argmax(row)) notArgmax++;
            bool cutK = options[r].TopK > 0 && options[r].TopK < vocab;
            int code = options[r].Temperature == 0 ? expected
                : cutK && options[r].TopK > Bound ? -1
                : !cutK && options[r].TopP < 1 && reference.NumCandidates > Bound ? -2
                : expected;
            Assert.True(code == tokens[r], $"{what}: device {tokens[r]}, expected {code}");
            if (code == -1) topKAboveBound++;
            if (code == -2) nucleusAboveBound++;
        }
        return (notArgmax, topKAboveBound, nucleusAboveBound);
    }

    // Rows of several shapes: spread, peaked, with ties of equal logits, flat, and with -infinity entries.
    private static void FillRow(Span<float> row, Random random, int r)
    {
        float scale = (r % 5) switch { 0 => 1f, 1 => 4f, 2 => 12f, 3 => 0.01f, _ => 30f };
        for (int v = 0; v < row.Length; v++) row[v] = (float)(random.NextDouble() * 2 - 1) * scale;
        switch (r % 6)
        {
            case 0:   // few distinct values: ties everywhere, including at the top
                for (int v = 0; v < row.Length; v++) row[v] = random.Next(-3, 4);
                break;
            case 1:   // one dominant token and a runner-up
                row[random.Next(row.Length)] = 20f;
                row[random.Next(row.Length)] = 18.5f;
                break;
            case 2:   // masked tokens
                for (int i = 0; i < row.Length / 4; i++) row[random.Next(row.Length)] = float.NegativeInfinity;
                break;
        }
    }

    private int[] Launch(CudaLaunchPlan plan, int vocab, float[] logits, SamplingOptions[] options, ulong[] uniforms, string moduleName)
    {
        var launch = EmulatorFixture.FindLaunch(plan, "sample_tokens_", "", CudaArgKind.Logits, CudaArgKind.SamplingParams, CudaArgKind.SampledTokens, CudaArgKind.NumLogits);
        int rows = options.Length;
        var parameters = new int[rows * CudaModelRunner.SamplingParamInts];
        for (int r = 0; r < rows; r++)
        {
            var o = options[r];
            var p = parameters.AsSpan(r * CudaModelRunner.SamplingParamInts, CudaModelRunner.SamplingParamInts);
            p[0] = o.Temperature == 0 ? 0 : 1;
            p[1] = o.Temperature == 0 ? 0 : BitConverter.SingleToInt32Bits(1f / o.Temperature);
            p[2] = o.TopK;
            p[3] = BitConverter.SingleToInt32Bits(o.TopP);
            p[4] = (int)(uint)uniforms[r];
            p[5] = (int)(uint)(uniforms[r] >> 32);
        }
        var emulator = modules.Emulator;
        var module = modules.Module(plan, moduleName);
        DevicePointer lp = emulator.Upload(logits), pp = emulator.Upload(parameters), tp = emulator.Upload(Enumerable.Repeat(-7, rows).ToArray());
        emulator.Device.Launch(module, launch.Kernel, launch.Grid.For(0, 0, rows), launch.Block, 0,
            [KernelArg.Pointer(lp), KernelArg.Pointer(pp), KernelArg.Pointer(tp), KernelArg.Int(rows)]);
        int[] tokens = emulator.Download<int>(tp, rows);
        emulator.Free(lp, pp, tp);
        return tokens;
    }
}
