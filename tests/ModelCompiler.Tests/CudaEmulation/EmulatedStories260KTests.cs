using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>Stories260K's generated CUDA source, run by <see cref="CudaModelRunner"/> on the emulator, against the CPU engine.</summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedStories260KTests
{
    [Fact]
    public void Prefill_then_decode_logits_match_the_cpu_engine()
    {
        int[] tokens = StoryTokens()[..40];
        var engine = new Stories260KTestEngine();
        using var runner = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights);
        int vocab = engine.Config.VocabSize;

        var batch = runner.CreateBatch();
        runner.Blocks.Allocate(0, 24);
        batch.AddSequence(tokens.AsSpan(0, 24), 0, runner.Blocks.BlockTable(0), allLogits: true);
        float[] emulated = cuda.Forward(batch).ToArray();
        float[] expected = runner.Forward(batch).ToArray();
        Assert.Equal(expected.Length, emulated.Length);
        for (int row = 0; row < 24; row++)
        {
            double error = MaxAbsDifference(emulated.AsSpan(row * vocab, vocab), expected[(row * vocab)..((row + 1) * vocab)]);
            Assert.True(error <= 1e-4, $"prefill row {row}: max |emulated - cpu| = {error:E3}");
        }
        Assert.Equal(0, cuda.NumCapturedGraphs); // prefill runs eagerly

        for (int position = 24; position < tokens.Length; position++)
        {
            runner.Blocks.Append(0, position + 1);
            batch.Clear();
            batch.AddSequence(tokens.AsSpan(position, 1), position, runner.Blocks.BlockTable(0));
            float[] step = cuda.Forward(batch).ToArray();
            float[] cpu = runner.Forward(batch).ToArray();
            double error = MaxAbsDifference(step, cpu);
            Assert.True(error <= 1e-4, $"decode position {position}: max |emulated - cpu| = {error:E3}");
        }
        Assert.Equal(1, cuda.NumCapturedGraphs); // every decode step replayed bucket 1's graph
    }

    [Fact]
    public void Batched_prefill_and_graph_replayed_decode_over_interleaved_block_tables_match_the_cpu_engine()
    {
        var engine = new Stories260KTestEngine();
        using var runner = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights);
        RunInterleavedPrefillAndDecode(runner, cuda);
        Assert.Equal(4, cuda.BucketFor(3));
        Assert.Equal(1, cuda.NumCapturedGraphs);
    }

    [Fact]
    public void Graph_replay_across_buckets_with_padding_rows_leaves_real_sequences_intact()
    {
        int[] story = StoryTokens();
        const int numSequences = 5, promptLength = 9;
        int[] schedule = [1, 5, 2, 3, 5, 1, 4, 2]; // live sequences per step: buckets 1, 8, 2, 4, 8, 1, 4, 2
        var engine = new Stories260KTestEngine();
        using var runner = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights);
        Assert.Equal([1, 2, 4, 8, 16], cuda.DecodeBuckets);
        long[] ids = Enumerable.Range(0, numSequences).Select(i => (long)i).ToArray();
        AllocateInterleaved(runner.Blocks, ids, Enumerable.Repeat(promptLength + schedule.Length, numSequences).ToArray());
        int[] length = new int[numSequences];

        var batch = runner.CreateBatch();
        for (int s = 0; s < numSequences; s++)
        {
            batch.AddSequence(story.AsSpan(11 * s, promptLength), 0, runner.Blocks.BlockTable(ids[s]));
            length[s] = promptLength;
        }
        AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), engine.Config.VocabSize, "prefill");

        for (int step = 0; step < schedule.Length; step++)
        {
            batch.Clear();
            for (int s = 0; s < schedule[step]; s++)
            {
                batch.AddSequence(story.AsSpan((40 + 3 * s + step) % story.Length, 1), length[s], runner.Blocks.BlockTable(ids[s]));
                length[s]++;
            }
            AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), engine.Config.VocabSize,
                $"step {step}: {schedule[step]} sequences in bucket {cuda.BucketFor(schedule[step])}");
        }
        Assert.Equal(4, cuda.NumCapturedGraphs); // buckets 1, 2, 4 and 8
    }

    [Fact]
    public void Greedy_text_on_the_device_is_the_cpu_engines()
    {
        const int numTokens = 48;
        var tokenizer = StoriesTokenizer();
        int[] prompt = tokenizer.Encode("Once upon a time", addBos: true);
        var engine = new Stories260KTestEngine();
        using var runner = new ModelRunner(engine, OpenStories());
        var expected = new List<int>();
        new TextGenerator(runner).Generate(prompt, numTokens, new Sampler(engine.Config.VocabSize, new SamplingOptions(0f, 0, 1f, 0)), expected.Add, stopAtEndOfText: false);

        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, OpenStories());
        // Sampling on the device: only the token ids come back.
        var actual = new List<int>();
        var batch = cuda.CreateBatch();
        cuda.Blocks.Allocate(0, prompt.Length);
        batch.AddSequence(prompt, 0, cuda.Blocks.BlockTable(0));
        Span<int> next = stackalloc int[1];
        cuda.ForwardGreedy(batch, next);
        for (int position = prompt.Length; actual.Count < numTokens; position++)
        {
            actual.Add(next[0]);
            if (actual.Count == numTokens) break;
            cuda.Blocks.Append(0, position + 1);
            batch.Clear();
            batch.AddSequence(next, position, cuda.Blocks.BlockTable(0));
            cuda.ForwardGreedy(batch, next);
        }
        Assert.Equal(expected, actual);
        Assert.Equal(tokenizer.Decode(expected.ToArray()), tokenizer.Decode(actual.ToArray()));
    }

    /// <summary>
    /// Three sequences whose blocks interleave in the pool (0, 3, 6… for sequence 0) run one batched prefill of their
    /// prompts, then six decode steps of three rows (padded to bucket 4: the first step captures its graph, every step
    /// replays it), each batch on <paramref name="cuda"/> and on the CPU <paramref name="runner"/>, whose logits must
    /// agree within <paramref name="tolerance"/>. Returns each sequence's block-table id and its length at the end.
    /// </summary>
    internal static (long[] Ids, int[] Lengths) RunInterleavedPrefillAndDecode(ModelRunner runner, CudaModelRunner cuda, double tolerance = 1e-4)
    {
        int[] story = StoryTokens();
        int[][] prompts = [story[..20], story[5..38], story[40..57]];
        const int numDecodeSteps = 6;
        long[] ids = [0, 1, 2];
        int vocab = runner.Config.VocabSize;
        // Every sequence's blocks for its whole life, allocated up front.
        AllocateInterleaved(runner.Blocks, ids, prompts.Select(p => p.Length + numDecodeSteps).ToArray());

        var batch = runner.CreateBatch();
        for (int s = 0; s < 3; s++) batch.AddSequence(prompts[s], 0, runner.Blocks.BlockTable(ids[s]), allLogits: true);
        AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), vocab, "batched prefill", tolerance);
        for (int step = 0; step < numDecodeSteps; step++)
        {
            batch.Clear();
            for (int s = 0; s < 3; s++) batch.AddSequence(story.AsSpan(60 + 7 * s + step, 1), prompts[s].Length + step, runner.Blocks.BlockTable(ids[s]));
            AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), vocab, $"decode step {step} (graph replay)", tolerance);
        }
        return (ids, prompts.Select(p => p.Length + numDecodeSteps).ToArray());
    }

    internal static void AssertClose(ReadOnlySpan<float> emulated, float[] expected, int vocab, string what, double tolerance = 1e-4)
    {
        Assert.Equal(expected.Length, emulated.Length);
        for (int row = 0; row < expected.Length / vocab; row++)
        {
            double error = MaxAbsDifference(emulated.Slice(row * vocab, vocab), expected[(row * vocab)..((row + 1) * vocab)]);
            Assert.True(error <= tolerance, $"{what}, row {row}: max |emulated - cpu| = {error:E3}");
        }
    }

    [Theory]
    [InlineData(WeightDType.F16, 1e-4, 1e-4)]
    [InlineData(WeightDType.BF16, 5e-4, 1e-4)]
    [InlineData(WeightDType.Q8_0, 0.5, 0.5)]
    [InlineData(WeightDType.Q4_0, 0.5, 0.5)]
    public void Typed_weights_run_their_kernel_variants_and_match_the_cpu_engine_on_the_same_weights(WeightDType dtype, double prefillTolerance, double decodeTolerance)
    {
        // The CPU engine reads the converted matrices too, so only the arithmetic differs. f16/bf16 prefill
        // (24 tokens): the CPU widens the weights to f32, the tensor-core GEMM takes the activations as a hi + lo
        // pair. q8_0/q4_0: where the CPU packs the matrices (AVX-VNNI) it quantizes the activations to int8 blocks
        // (llama.cpp's scheme) at every token count, while the CUDA kernels keep them f32, so the bound is the
        // CPU's own quantization error, not the kernels' (tested exactly op by op).
        int[] tokens = StoryTokens()[..30];
        var engine = new Stories260KTestEngine();
        using var runner = new ModelRunner(engine, new ConvertedWeightSource(OpenStories(), dtype));
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights) { UseGraphs = false };
        int vocab = engine.Config.VocabSize;
        var batch = runner.CreateBatch();
        runner.Blocks.Allocate(0, 24);
        batch.AddSequence(tokens.AsSpan(0, 24), 0, runner.Blocks.BlockTable(0), allLogits: true);
        Check(cuda.Forward(batch).ToArray(), runner.Forward(batch).ToArray(), "prefill", prefillTolerance);
        for (int position = 24; position < tokens.Length; position++)
        {
            runner.Blocks.Append(0, position + 1);
            batch.Clear();
            batch.AddSequence(tokens.AsSpan(position, 1), position, runner.Blocks.BlockTable(0));
            Check(cuda.Forward(batch).ToArray(), runner.Forward(batch).ToArray(), $"decode {position}", decodeTolerance);
        }
        string suffix = "_" + WeightDTypes.Name(dtype);
        Assert.Contains(cuda.LaunchedKernels, k => k.EndsWith(suffix, StringComparison.Ordinal));
        if (dtype is WeightDType.F16 or WeightDType.BF16) Assert.Contains(cuda.LaunchedKernels, k => k.EndsWith("_mma" + suffix, StringComparison.Ordinal));

        void Check(float[] emulated, float[] expected, string what, double tolerance)
        {
            Assert.Equal(expected.Length, emulated.Length);
            for (int row = 0; row < expected.Length / vocab; row++)
            {
                double error = MaxAbsDifference(emulated.AsSpan(row * vocab, vocab), expected[(row * vocab)..((row + 1) * vocab)]);
                Assert.True(error <= tolerance, $"{dtype} {what}, row {row}: max |emulated - cpu| = {error:E3}");
            }
        }
    }
}
