using ModelCompiler.Runtime;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Reference;
using ModelCompiler.Runtime.Tokenization;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Engine;

/// <summary>Shared pieces of the engine-against-reference tests.</summary>
internal static class EngineTestSupport
{
    public const double LogitsTolerance = 1e-4;

    public static Llama2cCheckpoint OpenStories() => Llama2cCheckpoint.Open(TestPaths.Model("stories260K.bin"));

    public static Llama2cTokenizer StoriesTokenizer() => Llama2cTokenizer.Load(TestPaths.Model("tok512.bin"), 512);

    /// <summary>About 90 tokens of story text in the Stories260K vocabulary (BOS first).</summary>
    public static int[] StoryTokens()
    {
        const string text = "Once upon a time, there was a little boy named Tim. Tim had a big red ball that he loved to " +
                            "throw in the garden. One sunny day, the ball rolled into the pond and a friendly frog jumped out to say hello.";
        return StoriesTokenizer().Encode(text, addBos: true);
    }

    /// <summary>
    /// Weights for a llama-architecture config with values large enough (uniform ±0.25 matrices) that
    /// attention is far from uniform and rotary mistakes change the logits visibly.
    /// </summary>
    public static InMemoryWeightSource StrongRandomWeights(ModelConfig c, int seed)
    {
        var random = new Random(seed);
        var entries = new List<(string, long[], float[])>();
        float[] Fill(int n, float center, float halfWidth) =>
            Enumerable.Range(0, n).Select(_ => center + (float)(random.NextDouble() * 2 - 1) * halfWidth).ToArray();
        void Matrix(string name, int rows, int cols) => entries.Add((name, new long[] { rows, cols }, Fill(rows * cols, 0, 0.25f)));
        void Vector(string name, int n) => entries.Add((name, new long[] { n }, Fill(n, 1, 0.2f)));
        Matrix("tok_embeddings.weight", c.VocabSize, c.Dim);
        for (int l = 0; l < c.NumLayers; l++)
        {
            Vector($"layers.{l}.attention_norm.weight", c.Dim);
            Matrix($"layers.{l}.attention.wq.weight", c.Dim, c.Dim);
            Matrix($"layers.{l}.attention.wk.weight", c.KvDim, c.Dim);
            Matrix($"layers.{l}.attention.wv.weight", c.KvDim, c.Dim);
            Matrix($"layers.{l}.attention.wo.weight", c.Dim, c.Dim);
            if (c.QkvBias)
            {
                entries.Add(($"layers.{l}.attention.wq.bias", new long[] { c.Dim }, Fill(c.Dim, 0, 0.5f)));
                entries.Add(($"layers.{l}.attention.wk.bias", new long[] { c.KvDim }, Fill(c.KvDim, 0, 0.5f)));
                entries.Add(($"layers.{l}.attention.wv.bias", new long[] { c.KvDim }, Fill(c.KvDim, 0, 0.5f)));
            }
            Vector($"layers.{l}.ffn_norm.weight", c.Dim);
            Matrix($"layers.{l}.feed_forward.w1.weight", c.HiddenDim, c.Dim);
            Matrix($"layers.{l}.feed_forward.w2.weight", c.Dim, c.HiddenDim);
            Matrix($"layers.{l}.feed_forward.w3.weight", c.HiddenDim, c.Dim);
        }
        Vector("norm.weight", c.Dim);
        if (!c.TiedEmbedding) Matrix("output.weight", c.VocabSize, c.Dim);
        return new InMemoryWeightSource("strong random weights", entries);
    }

    /// <summary>The reference's logits for every position of <paramref name="tokens"/>, fed in order from position 0.</summary>
    public static float[][] ReferenceLogits(ModelConfig config, IWeightSource weights, IReadOnlyList<int> tokens)
    {
        var reference = new ReferenceTransformer(config, weights);
        return tokens.Select((t, p) => reference.Forward(t, p)).ToArray();
    }

    /// <summary>Largest |a - b| over a logits row; fails when the row lengths differ.</summary>
    public static double MaxAbsDifference(ReadOnlySpan<float> engine, float[] reference)
    {
        Assert.Equal(reference.Length, engine.Length);
        double max = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            Assert.False(float.IsNaN(engine[i]), $"NaN at logit {i}");
            max = Math.Max(max, Math.Abs(engine[i] - reference[i]));
        }
        return max;
    }

    /// <summary>
    /// Allocates the sequences' KV blocks one block at a time in turn, so their block tables interleave
    /// in the pool (sequence 0 gets blocks 0, 3, 6… when there are three).
    /// </summary>
    public static void AllocateInterleaved(BlockManager blocks, long[] ids, int[] lengths)
    {
        for (int i = 0; i < ids.Length; i++) blocks.Allocate(ids[i], Math.Min(lengths[i], blocks.BlockSize));
        for (int filled = blocks.BlockSize; ; filled += blocks.BlockSize)
        {
            bool any = false;
            for (int i = 0; i < ids.Length; i++)
            {
                if (lengths[i] <= filled) continue;
                blocks.Append(ids[i], Math.Min(lengths[i], filled + blocks.BlockSize));
                any = true;
            }
            if (!any) break;
        }
    }
}
