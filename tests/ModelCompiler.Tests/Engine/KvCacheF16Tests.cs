using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Cuda.Emulation;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Sampling;
using Xunit;
using Xunit.Abstractions;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.Engine;

/// <summary>
/// Stories260K compiled with <c>runtime.kvCacheDType: f16</c> against the float64 reference forward pass (which
/// keeps K and V in double): the only difference is the rounding of every cached key and value to f16, so the
/// logits differ by more than the f32 engine's 1e-4 but stay within <see cref="F16LogitsTolerance"/>.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class KvCacheF16Tests(ITestOutputHelper output)
{
    /// <summary>
    /// Bound on |logits − reference| with an f16 cache. Rounding K and V to 11 significant bits moves each by up to
    /// 2^-12 relative; through Stories260K's five layers this measured 2.8e-2 at most over these 84 positions (logits
    /// of magnitude up to ~15), with the same top-1 token at every position. 0.1 leaves a margin of about 3.5 while
    /// still catching a wrong layout or a missed conversion (those give errors of order 1 and change the argmax).
    /// </summary>
    private const double F16LogitsTolerance = 0.1;

    [Fact]
    public void The_description_field_reaches_the_config_the_pool_and_the_cost()
    {
        var engine = new Stories260KF16KvTestEngine();
        Assert.Equal(KvCacheDType.F16, engine.Config.KvCacheDType);
        Assert.Equal(KvCacheDType.F32, new Stories260KTestEngine().Config.KvCacheDType);
        using var f16 = new ModelRunner(engine, OpenStories());
        using var f32 = new ModelRunner(new Stories260KTestEngine(), OpenStories());
        Assert.Equal(KvCacheDType.F16, f16.KvCache.DType);
        // Same number of blocks, half the bytes.
        Assert.Equal(f32.KvCache.NumBlocks, f16.KvCache.NumBlocks);
        Assert.Equal(f32.KvCache.SizeInBytes, 2 * f16.KvCache.SizeInBytes);
        var c = engine.Config;
        Assert.Equal((long)c.NumLayers * 2 * c.KvDim * 2, ModelCompiler.Runtime.Diagnostics.ModelCost.Of(engine, f16.Weights).KvBytesPerTokenPosition);
    }

    [Fact]
    public void Prefill_then_decode_logits_match_the_reference_within_the_f16_bound()
    {
        int[] tokens = StoryTokens();
        var engine = new Stories260KF16KvTestEngine();
        float[][] expected;
        using (var checkpoint = OpenStories()) expected = ReferenceLogits(engine.Config, checkpoint, tokens);

        using var runner = new ModelRunner(engine, OpenStories());
        var batch = runner.CreateBatch();
        int vocab = engine.Config.VocabSize;
        // A prefill of 40 tokens, then one token at a time: both read keys and values back from the f16 cache.
        int position = 0, agree = 0, worstPosition = 0;
        double worst = 0;
        runner.Blocks.Allocate(0, 40);
        while (position < tokens.Length)
        {
            int count = position == 0 ? 40 : 1;
            if (position > 0) runner.Blocks.Append(0, position + count);
            batch.Clear();
            batch.AddSequence(tokens.AsSpan(position, count), position, runner.Blocks.BlockTable(0), allLogits: true);
            var logits = runner.Forward(batch);
            for (int i = 0; i < count; i++)
            {
                var row = logits.Slice(i * vocab, vocab);
                double error = MaxAbsDifference(row, expected[position + i]);
                if (error > worst) (worst, worstPosition) = (error, position + i);
                if (Sampler.Argmax(row) == Sampler.Argmax(expected[position + i])) agree++;
            }
            position += count;
        }
        output.WriteLine($"f16 KV cache, {tokens.Length} positions: max |logits - reference| = {worst:E3} (position {worstPosition}), top-1 agreement {agree}/{tokens.Length}");
        Assert.True(worst <= F16LogitsTolerance, $"position {worstPosition}: max |engine - reference| = {worst:E3}");
        Assert.True(worst > 0, "an f16 cache that rounds nothing is not an f16 cache");
        Assert.True(agree >= tokens.Length * 95 / 100, $"top-1 agreement {agree}/{tokens.Length} is below 95%");
    }
}

/// <summary><c>--device</c> with an engine whose KV cache is f16: the emulated CUDA runner prints the CPU engine's greedy text.</summary>
[Collection(nameof(ConsoleCollection))]
public sealed class KvCacheF16DeviceTests
{
    private static readonly string[] s_generate = ["generate", "--prompt", "Once upon a time", "--max-tokens", "48", "--temperature", "0"];

    [Fact]
    public void Greedy_generate_on_the_emulator_prints_the_cpus_text()
    {
        var cpu = Hosting.ConsoleCapture.Run<Stories260KF16KvTestEngine>([.. s_generate, "--device", "cpu"]);
        var emulated = Hosting.ConsoleCapture.Run<Stories260KF16KvTestEngine>([.. s_generate, "--device", "emulator"]);
        Assert.True(emulated.ExitCode == 0, emulated.Stderr);
        Assert.StartsWith("Once upon a time", cpu.Stdout);
        Assert.True(cpu.Stdout.Length > "Once upon a time\n".Length + 40);
        Assert.Equal(cpu.Stdout, emulated.Stdout);
    }
}

/// <summary>
/// A decode step's forward pass and argmax allocate nothing on the managed heap, with either KV cache type. Of 400
/// measured steps at most 4 may allocate: the runtime itself may allocate on the thread now and then (tiered
/// compilation replacing a method mid-run was seen to, 1–8 KB in full-suite runs), while a per-step allocation of
/// any size shows in every step.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class DecodeAllocationTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Greedy_decode_forward_passes_allocate_nothing(bool f16)
    {
        const int numWarmupSteps = 50, numMeasuredSteps = 400;
        CompiledModel engine = f16 ? new Stories260KF16KvTestEngine() : new Stories260KTestEngine();
        using var runner = new ModelRunner(engine, OpenStories());
        IModelRunner backend = runner;
        int[] prompt = StoryTokens()[..20];
        runner.Blocks.Allocate(1, prompt.Length);
        var batch = runner.CreateBatch();
        batch.AddSequence(prompt, 0, runner.Blocks.BlockTable(1));
        Span<int> next = stackalloc int[1];
        backend.ForwardGreedy(batch, next);
        long allocated = 0;
        int numAllocatingSteps = 0;
        for (int step = 0; step < numWarmupSteps + numMeasuredSteps; step++)
        {
            int position = prompt.Length + step;
            runner.Blocks.Append(1, position + 1); // the block manager's table may grow; not part of the forward pass
            long before = GC.GetAllocatedBytesForCurrentThread();
            batch.Clear();
            batch.AddSequence(next, position, runner.Blocks.BlockTable(1));
            backend.ForwardGreedy(batch, next);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            if (step < numWarmupSteps || bytes == 0) continue;
            allocated += bytes;
            numAllocatingSteps++;
        }
        // A per-step allocation shows in every step. A handful of steps may see one-off runtime work on this thread
        // (tiered JIT promotions land late when the machine is busy: seen as ~8 KB in one full-suite run).
        Assert.True(numAllocatingSteps <= 4, $"{numAllocatingSteps} of {numMeasuredSteps} decode steps allocated ({allocated} bytes in all)");
    }
}
