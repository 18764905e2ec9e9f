using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using Xunit;
using Xunit.Abstractions;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.Formats;

/// <summary>
/// Accuracy of each weight type on the real Stories260K model: its f32 checkpoint is written as a GGUF file of
/// each type by <see cref="GgufExport"/>, loaded back through <see cref="WeightFiles.OpenChecked"/> and run by the
/// generated engine over a fixed story text. Reported per type: top-1 agreement of the next-token argmax with
/// f32 and mean KL(f32 ‖ type) over all positions. Bounds were set from the measurement (see the table in the
/// test output) with margin; a regression in conversion, the reader or a kernel's format path trips them.
/// In Stories260K the down projection's 172 columns are not whole blocks, so q8_0/q4_0 files keep it f16 (llama.cpp's fallback).
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class QuantizationAccuracyTests(ITestOutputHelper output)
{
    // dtype, minimum top-1 agreement, maximum mean KL (nats). Measured on Stories260K over StoryTokens (84 positions),
    // generated engine, x86-64 AVX-512, 2025-11:
    //   f32 100.0 % / 0        f16 100.0 % / 4.5e-7     bf16 100.0 % / 3.6e-5
    //   q8_0 100.0 % / 3.0e-4  q4_0 84.5 % / 9.0e-2     (one position is 1.2 %)
    // Bounds leave about 10x on KL and a few positions on top-1 for kernel changes that reorder sums.
    public static TheoryData<string, double, double> Bounds => new()
    {
        { "f32", 1.0, 1e-9 },
        { "f16", 0.99, 1e-5 },
        { "bf16", 0.97, 3e-4 },
        { "q8_0", 0.95, 3e-3 },
        { "q4_0", 0.75, 0.2 },
    };

    [Theory]
    [MemberData(nameof(Bounds))]
    public void Agreement_with_f32_is_within_the_documented_bounds(string dtypeName, double minTop1, double maxKl)
    {
        Assert.True(WeightDTypes.TryParse(dtypeName, out var dtype));
        var engine = new Stories260KTestEngine();
        int[] tokens = StoryTokens();
        float[] reference;
        using (var runner = new ModelRunner(engine, OpenStories())) reference = RunAll(runner, tokens);

        using var file = new TempFile(".gguf");
        using (var stories = OpenStories()) GgufExport.Write(stories, engine.Config, dtype, file.Path);
        float[] logits;
        using (var runner = new ModelRunner(engine, WeightFiles.OpenChecked(file.Path, engine.Config, out _))) logits = RunAll(runner, tokens);

        int vocab = engine.Config.VocabSize, agree = 0;
        double klSum = 0;
        for (int p = 0; p < tokens.Length; p++)
        {
            var a = reference.AsSpan(p * vocab, vocab);
            var b = logits.AsSpan(p * vocab, vocab);
            if (Argmax(a) == Argmax(b)) agree++;
            klSum += KlDivergence(a, b);
        }
        double top1 = (double)agree / tokens.Length, kl = klSum / tokens.Length;
        output.WriteLine($"| dtype | positions | top-1 agreement | mean KL(f32||dtype) | file bytes |");
        output.WriteLine($"| {dtypeName} | {tokens.Length} | {top1:P1} | {kl:E2} | {new FileInfo(file.Path).Length} |");
        Assert.True(top1 >= minTop1, $"{dtypeName}: top-1 agreement {top1:P1} below {minTop1:P0}");
        Assert.True(kl <= maxKl, $"{dtypeName}: mean KL {kl:E2} above {maxKl:E0}");
    }

    private static float[] RunAll(ModelRunner runner, int[] tokens)
    {
        runner.Blocks.Allocate(0, tokens.Length);
        var batch = runner.CreateBatch();
        batch.AddSequence(tokens, 0, runner.Blocks.BlockTable(0), allLogits: true);
        return runner.Forward(batch).ToArray();
    }

    internal static int Argmax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    // KL(p || q) of the softmaxes of two logit rows, in double.
    internal static double KlDivergence(ReadOnlySpan<float> p, ReadOnlySpan<float> q)
    {
        double LogSumExp(ReadOnlySpan<float> x)
        {
            double max = double.NegativeInfinity;
            foreach (var v in x) max = Math.Max(max, v);
            double sum = 0;
            foreach (var v in x) sum += Math.Exp(v - max);
            return max + Math.Log(sum);
        }
        double lp = LogSumExp(p), lq = LogSumExp(q), kl = 0;
        for (int i = 0; i < p.Length; i++)
        {
            double logP = p[i] - lp, logQ = q[i] - lq;
            kl += Math.Exp(logP) * (logP - logQ);
        }
        return Math.Max(kl, 0);
    }
}
