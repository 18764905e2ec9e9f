using System.Runtime.InteropServices;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.Formats;

/// <summary>
/// The q/k row permutation between Hugging Face's half rotary layout and Meta's interleaved one: it is
/// llama.cpp's <c>permute</c>, and a half-layout model run with half RoPE computes what the permuted model
/// computes with interleaved RoPE (the reference forward pass decides, not the code under test).
/// </summary>
public class RopeConventionTests
{
    [Fact]
    public void Half_to_interleaved_is_llama_cpp_permute_reshape_swapaxes()
    {
        // convert_hf_to_gguf.py: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(w.shape), written as index loops.
        int numHeads = 3, headDim = 8, cols = 2, rows = numHeads * headDim;
        var w = Enumerable.Range(0, rows * cols).Select(i => (float)i).ToArray();
        var expected = new float[w.Length];
        int o = 0;
        for (int h = 0; h < numHeads; h++)
            for (int i = 0; i < headDim / 2; i++)      // axis 1 after swapaxes
                for (int s = 0; s < 2; s++)            // axis 2 after swapaxes
                    for (int c = 0; c < cols; c++)
                        expected[o++] = w[((h * 2 + s) * (headDim / 2) + i) * cols + c];
        var actual = new float[w.Length];
        RopePermutation.PermuteRows(MemoryMarshal.AsBytes(w.AsSpan()), MemoryMarshal.AsBytes(actual.AsSpan()), rows, cols * 4, numHeads, RopeStyle.Half, RopeStyle.Interleaved);
        Assert.Equal(expected, actual);

        var back = new float[w.Length];
        RopePermutation.PermuteRows(MemoryMarshal.AsBytes(actual.AsSpan()), MemoryMarshal.AsBytes(back.AsSpan()), rows, cols * 4, numHeads, RopeStyle.Interleaved, RopeStyle.Half);
        Assert.Equal(w, back);
    }

    [Fact]
    public void Half_weights_with_half_rope_equal_permuted_weights_with_interleaved_rope_in_the_reference()
    {
        var half = new TinyExplicitEngine().Config;   // 3 query heads per KV head, untied
        Assert.Equal(RopeStyle.Half, half.RopeStyle);
        var interleaved = half with { RopeStyle = RopeStyle.Interleaved };
        int[] tokens = Enumerable.Range(0, 24).Select(i => (i * 37 + 5) % half.VocabSize).ToArray();

        using var hfWeights = StrongRandomWeights(half, seed: 11);
        using var metaWeights = new InMemoryWeightSource("permuted", FormatTestSupport.Entries(hfWeights, FormatTestSupport.PermuteQk(half, RopeStyle.Half, RopeStyle.Interleaved)));
        var hf = ReferenceLogits(half, hfWeights, tokens);
        var meta = ReferenceLogits(interleaved, metaWeights, tokens);
        var wrong = ReferenceLogits(interleaved, hfWeights, tokens);
        double same = 0, different = 0;
        for (int p = 0; p < tokens.Length; p++)
        {
            same = Math.Max(same, MaxAbsDifference(hf[p], meta[p]));
            different = Math.Max(different, MaxAbsDifference(hf[p], wrong[p]));
        }
        Assert.True(same <= 1e-5, $"max |half - permuted interleaved| = {same:E3}");
        Assert.True(different > 1e-2, $"the wrong convention must change the logits visibly, it changed them by {different:E3}");
    }

    [Fact]
    public void The_binder_permutes_a_half_convention_source_for_an_interleaved_engine()
    {
        var engine = new Stories260KTestEngine();
        var c = engine.Config;
        int[] tokens = StoryTokens()[..40];
        float[][] expected;
        List<(string, long[], float[])> hfEntries;
        using (var stories = OpenStories())
        {
            expected = ReferenceLogits(c, stories, tokens);
            hfEntries = FormatTestSupport.Entries(stories, FormatTestSupport.PermuteQk(c, RopeStyle.Interleaved, RopeStyle.Half));
        }

        double Run(RopeStyle? convention)
        {
            using var runner = new ModelRunner(engine, new ConventionSource(new InMemoryWeightSource("hf", hfEntries), convention));
            runner.Blocks.Allocate(0, tokens.Length);
            var batch = runner.CreateBatch();
            batch.AddSequence(tokens, 0, runner.Blocks.BlockTable(0), allLogits: true);
            var logits = runner.Forward(batch);
            double max = 0;
            for (int p = 0; p < tokens.Length; p++) max = Math.Max(max, MaxAbsDifference(logits.Slice(p * c.VocabSize, c.VocabSize), expected[p]));
            return max;
        }

        double permuted = Run(RopeStyle.Half);
        Assert.True(permuted <= LogitsTolerance, $"bound with permutation: max |engine - reference| = {permuted:E3}");
        double unpermuted = Run(null);   // "as the engine expects": left in the wrong layout
        Assert.True(unpermuted > 1e-2, $"without the permutation the logits must differ, they differ by {unpermuted:E3}");
    }
}
