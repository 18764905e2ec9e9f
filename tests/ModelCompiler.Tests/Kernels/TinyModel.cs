using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime;
using static ModelCompiler.Tests.Kernels.KernelTestData;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// A tiny random Llama-architecture model held twice: as named checkpoint tensors (a <see cref="InMemoryWeightSource"/>
/// for <see cref="Runtime.Reference.ReferenceTransformer"/>) and in the kernels' layouts (q|k|v and
/// gate|up concatenated along rows, as the load-time fusion will produce them).
/// </summary>
internal sealed class TinyModel : IDisposable
{
    public required ModelConfig Config { get; init; }
    public required InMemoryWeightSource Checkpoint { get; init; }
    public required float[] TokenEmbedding { get; init; }   // [vocab, dim]
    public required float[][] AttentionNorm { get; init; }  // [numLayers][dim]
    public required float[][] Wq { get; init; }             // [numLayers][qDim, dim]
    public required float[][] Wk { get; init; }             // [numLayers][kvDim, dim]
    public required float[][] Wv { get; init; }             // [numLayers][kvDim, dim]
    public required float[][] Wqkv { get; init; }           // [numLayers][qDim + 2 kvDim, dim]
    public required float[][] Wo { get; init; }             // [numLayers][dim, qDim]
    public required float[][] FfnNorm { get; init; }        // [numLayers][dim]
    public required float[][] W1 { get; init; }             // [numLayers][hidden, dim] gate
    public required float[][] W3 { get; init; }             // [numLayers][hidden, dim] up
    public required float[][] WGateUp { get; init; }        // [numLayers][2 hidden, dim]
    public required float[][] W2 { get; init; }             // [numLayers][dim, hidden] down
    public required float[] FinalNorm { get; init; }        // [dim]
    public required float[] Output { get; init; }           // [vocab, dim]

    public static TinyModel Create(int seed, int dim, int numHeads, int numKvHeads, int hiddenDim, int vocabSize, int numLayers, RopeStyle ropeStyle, bool tiedEmbedding)
    {
        var config = new ModelConfig
        {
            Name = "tiny", Dim = dim, HiddenDim = hiddenDim, NumLayers = numLayers, NumHeads = numHeads, NumKvHeads = numKvHeads,
            VocabSize = vocabSize, MaxSeqLen = 32, RopeTheta = 10000f, RopeStyle = ropeStyle, NormEps = 1e-5f,
            TiedEmbedding = tiedEmbedding, KvBlockSize = 4, MaxBatchTokens = 32, MaxSequences = 4, NumKvBlocks = 40,
            WeightFormat = "test", WeightsPath = "", TokenizerFormat = "test", TokenizerPath = "",
        };
        var random = new Random(seed);
        int qDim = numHeads * config.HeadDim, kvDim = config.KvDim;
        var entries = new List<(string, long[], float[])>();

        // Uniform(-1, 1) has variance 1/3: scaling by sqrt(3 / fanIn) keeps projections near unit variance.
        float[] Matrix(string name, int rows, int cols)
        {
            var m = RandomFloats(random, rows * cols, MathF.Sqrt(3f / cols));
            entries.Add((name, [rows, cols], m));
            return m;
        }
        float[] Gain(string name)
        {
            var g = RandomFloats(random, dim, 0.2f).Select(v => 1 + v).ToArray();
            entries.Add((name, [dim], g));
            return g;
        }

        var embedding = RandomFloats(random, vocabSize * dim);
        entries.Add(("tok_embeddings.weight", [vocabSize, dim], embedding));
        var layers = Enumerable.Range(0, numLayers).Select(l => new
        {
            AttentionNorm = Gain($"layers.{l}.attention_norm.weight"),
            Wq = Matrix($"layers.{l}.attention.wq.weight", qDim, dim),
            Wk = Matrix($"layers.{l}.attention.wk.weight", kvDim, dim),
            Wv = Matrix($"layers.{l}.attention.wv.weight", kvDim, dim),
            Wo = Matrix($"layers.{l}.attention.wo.weight", dim, qDim),
            FfnNorm = Gain($"layers.{l}.ffn_norm.weight"),
            W1 = Matrix($"layers.{l}.feed_forward.w1.weight", hiddenDim, dim),
            W2 = Matrix($"layers.{l}.feed_forward.w2.weight", dim, hiddenDim),
            W3 = Matrix($"layers.{l}.feed_forward.w3.weight", hiddenDim, dim),
        }).ToArray();
        var finalNorm = Gain("norm.weight");
        var output = tiedEmbedding ? embedding : Matrix("output.weight", vocabSize, dim);

        return new TinyModel
        {
            Config = config,
            Checkpoint = new InMemoryWeightSource("tiny random model", entries),
            TokenEmbedding = embedding,
            AttentionNorm = layers.Select(l => l.AttentionNorm).ToArray(),
            Wq = layers.Select(l => l.Wq).ToArray(),
            Wk = layers.Select(l => l.Wk).ToArray(),
            Wv = layers.Select(l => l.Wv).ToArray(),
            Wqkv = layers.Select(l => l.Wq.Concat(l.Wk).Concat(l.Wv).ToArray()).ToArray(),
            Wo = layers.Select(l => l.Wo).ToArray(),
            FfnNorm = layers.Select(l => l.FfnNorm).ToArray(),
            W1 = layers.Select(l => l.W1).ToArray(),
            W3 = layers.Select(l => l.W3).ToArray(),
            WGateUp = layers.Select(l => l.W1.Concat(l.W3).ToArray()).ToArray(),
            W2 = layers.Select(l => l.W2).ToArray(),
            FinalNorm = finalNorm,
            Output = output,
        };
    }

    public void Dispose() => Checkpoint.Dispose();
}
