using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Runtime;

/// <summary>The description of stories260K as a generated engine would carry it (facts from the llama2.c model card).</summary>
internal static class Stories260K
{
    public static string WeightsPath => TestPaths.Model("stories260K.bin");

    public static ModelConfig Config => new()
    {
        Name = "stories260K",
        Dim = 64,
        HiddenDim = 172,
        NumLayers = 5,
        NumHeads = 8,
        NumKvHeads = 4,
        VocabSize = 512,
        MaxSeqLen = 512,
        RopeTheta = 10000f,
        RopeStyle = RopeStyle.Interleaved,
        NormEps = 1e-5f,
        TiedEmbedding = true,
        KvBlockSize = 16,
        MaxBatchTokens = 64,
        MaxSequences = 4,
        NumKvBlocks = 64,
        WeightFormat = "llama2c",
        WeightsPath = "models/stories260K.bin",
        TokenizerFormat = "llama2c",
        TokenizerPath = "models/tok512.bin",
    };
}

public sealed class Llama2cCheckpointTests : IDisposable
{
    private const long Stories260KSizeInBytes = 1_056_540;
    private readonly string _tempDir = Directory.CreateTempSubdirectory("mc-ckpt-").FullName;

    public void Dispose() => Directory.Delete(_tempDir, recursive: true);

    [Fact]
    public void Reads_the_stories260K_header()
    {
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        Assert.Equal(new Llama2cHeader(64, 172, 5, 8, 4, 512, 512, SharedClassifier: true), checkpoint.Header);
        Assert.Equal(Stories260KSizeInBytes, checkpoint.Header.ExpectedFileSizeInBytes);
        Assert.Equal(Stories260KSizeInBytes, new FileInfo(Stories260K.WeightsPath).Length);
    }

    [Fact]
    public void Exposes_every_layer_tensor_with_its_shape_and_no_classifier_when_shared()
    {
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        // embedding + 9 per layer * 5 + final norm; freq_cis is not exposed, output.weight is shared.
        Assert.Equal(1 + 9 * 5 + 1, checkpoint.Tensors.Count);
        Assert.False(checkpoint.TryGetTensor("output.weight", out _));
        AssertShape(checkpoint, "tok_embeddings.weight", 512, 64);
        AssertShape(checkpoint, "layers.0.attention_norm.weight", 64);
        AssertShape(checkpoint, "layers.4.attention.wq.weight", 64, 64);
        AssertShape(checkpoint, "layers.4.attention.wk.weight", 32, 64);
        AssertShape(checkpoint, "layers.2.attention.wv.weight", 32, 64);
        AssertShape(checkpoint, "layers.2.attention.wo.weight", 64, 64);
        AssertShape(checkpoint, "layers.3.ffn_norm.weight", 64);
        AssertShape(checkpoint, "layers.3.feed_forward.w1.weight", 172, 64);
        AssertShape(checkpoint, "layers.3.feed_forward.w2.weight", 64, 172);
        AssertShape(checkpoint, "layers.3.feed_forward.w3.weight", 172, 64);
        AssertShape(checkpoint, "norm.weight", 64);
        Assert.All(checkpoint.Tensors, t => Assert.Equal(WeightDType.F32, t.DType));
    }

    [Fact]
    public unsafe void Tensors_point_at_the_bytes_at_their_llama2c_offsets()
    {
        byte[] file = File.ReadAllBytes(Stories260K.WeightsPath);
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);

        // Offsets in floats after the 28-byte header, summed by hand from run.c's layout.
        const int dim = 64, hidden = 172, layers = 5, kvDim = 32, vocab = 512;
        const int embedding = vocab * dim;
        const int rmsAtt = layers * dim;
        const int wq = layers * dim * dim, wk = layers * kvDim * dim, wo = layers * dim * dim;
        const int wqStart = embedding + rmsAtt;
        const int wkLayer1 = wqStart + wq + kvDim * dim;
        const int normStart = embedding + rmsAtt + wq + 2 * wk + wo + layers * dim + 3 * layers * hidden * dim;

        Assert.Equal(FloatAt(file, 0), First(checkpoint, "tok_embeddings.weight"));
        Assert.Equal(FloatAt(file, embedding + dim), First(checkpoint, "layers.1.attention_norm.weight"));
        Assert.Equal(FloatAt(file, wqStart + 2 * dim * dim), First(checkpoint, "layers.2.attention.wq.weight"));
        Assert.Equal(FloatAt(file, wkLayer1), First(checkpoint, "layers.1.attention.wk.weight"));
        Assert.Equal(FloatAt(file, normStart), First(checkpoint, "norm.weight"));
        // The last w3 element sits just before the final norm.
        checkpoint.TryGetTensor("layers.4.feed_forward.w3.weight", out var w3);
        Assert.Equal(FloatAt(file, normStart - 1), ((float*)w3.Data)[w3.NumElements - 1]);
        // A trained RMSNorm gain is positive; the values at this offset are (2.458, 1.367, ...).
        Assert.Equal(2.4583089f, First(checkpoint, "norm.weight"));
    }

    [Fact]
    public void Missing_file_is_named()
    {
        string path = Path.Combine(_tempDir, "nope.bin");
        var e = Assert.Throws<ModelLoadException>(() => Llama2cCheckpoint.Open(path));
        Assert.Equal($"weights file not found: {path}", e.Message);
    }

    [Fact]
    public void File_shorter_than_the_header_is_rejected()
    {
        string path = Write("short.bin", new byte[10]);
        var e = Assert.Throws<ModelLoadException>(() => Llama2cCheckpoint.Open(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("not a llama2.c checkpoint", e.Message);
        Assert.Contains("shorter than the 28-byte header", e.Message);
    }

    [Theory]
    [InlineData(new[] { 0, 172, 5, 8, 4, 512, 512 }, "between 1 and")]
    [InlineData(new[] { 64, 172, -5, 8, 4, 512, 512 }, "between 1 and")]
    [InlineData(new[] { 64, 172, 5, 8, 4, 512, 1 << 21 }, "between 1 and")]
    [InlineData(new[] { 64, 172, 5, 8, 4, int.MinValue, 512 }, "between 1 and")]
    [InlineData(new[] { 64, 172, 5, 7, 7, 512, 512 }, "n_heads 7 does not divide dim 64")]
    [InlineData(new[] { 64, 172, 5, 8, 3, 512, 512 }, "n_kv_heads 3 does not divide n_heads 8")]
    [InlineData(new[] { 64, 172, 5, 64, 64, 512, 512 }, "head size 1 is odd")]
    [InlineData(new[] { 1 << 20, 1 << 20, 1, 2, 2, 512, 512 }, "more than int.MaxValue elements")]
    public void Absurd_headers_are_not_llama2c_checkpoints(int[] header, string why)
    {
        string path = Write("bad-header.bin", HeaderBytes(header).Concat(new byte[4096]).ToArray());
        var e = Assert.Throws<ModelLoadException>(() => Llama2cCheckpoint.Open(path));
        Assert.StartsWith($"{path}: not a llama2.c checkpoint (header dim={header[0]}", e.Message);
        Assert.Contains(why, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Truncated_copy_reports_expected_and_found_sizes()
    {
        byte[] file = File.ReadAllBytes(Stories260K.WeightsPath);
        string path = Write("truncated.bin", file[..^100]);
        var e = Assert.Throws<ModelLoadException>(() => Llama2cCheckpoint.Open(path));
        Assert.Equal($"{path}: truncated llama2.c checkpoint (expected 1056540 bytes, found 1056440)", e.Message);
    }

    [Fact]
    public void Trailing_bytes_are_reported()
    {
        byte[] file = File.ReadAllBytes(Stories260K.WeightsPath);
        string path = Write("trailing.bin", file.Concat(new byte[12]).ToArray());
        var e = Assert.Throws<ModelLoadException>(() => Llama2cCheckpoint.Open(path));
        Assert.Equal($"{path}: llama2.c checkpoint has 12 trailing bytes (expected 1056540 bytes, found 1056552)", e.Message);
    }

    [Fact]
    public void Untied_checkpoint_exposes_output_weight_appended_at_the_end()
    {
        // A tiny hand-built untied model: dim 4, hidden 6, 1 layer, 2 heads, 1 kv head, vocab 3, seq 2.
        // head size 2, kv dim 2. Floats: emb 12, rms_att 4, wq 16, wk 8, wv 8, wo 16, rms_ffn 4,
        // w1 24, w2 24, w3 24, rms_final 4, freq_cis 2*2*1 = 4, wcls 12 → 160 floats.
        const int numFloats = 160;
        var floats = Enumerable.Range(0, numFloats).Select(i => (float)i).ToArray();
        string path = Write("untied.bin", HeaderBytes([4, 6, 1, 2, 1, -3, 2]).Concat(FloatBytes(floats)).ToArray());

        using var checkpoint = Llama2cCheckpoint.Open(path);
        Assert.False(checkpoint.Header.SharedClassifier);
        Assert.Equal(3, checkpoint.Header.VocabSize);
        Assert.Equal(28 + 4 * numFloats, checkpoint.Header.ExpectedFileSizeInBytes);
        AssertShape(checkpoint, "output.weight", 3, 4);
        Assert.Equal(148f, First(checkpoint, "output.weight"));  // 160 - 12
        Assert.Equal(140f, First(checkpoint, "norm.weight"));    // then 4 freq_cis floats (144..147)
        Assert.Equal(12f, First(checkpoint, "layers.0.attention_norm.weight"));
        Assert.Equal(32f, First(checkpoint, "layers.0.attention.wk.weight"));
        Assert.Equal(40f, First(checkpoint, "layers.0.attention.wv.weight"));
    }

    [Fact]
    public void Matching_description_passes_the_check()
    {
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        checkpoint.CheckAgainst(Stories260K.Config);
        checkpoint.CheckAgainst(Stories260K.Config with { MaxSeqLen = 256 });
    }

    [Fact]
    public void Check_against_names_every_differing_field()
    {
        using var checkpoint = Llama2cCheckpoint.Open(Stories260K.WeightsPath);
        var config = Stories260K.Config with { Dim = 128, NumKvHeads = 8, MaxSeqLen = 1024, TiedEmbedding = false };
        var e = Assert.Throws<ModelLoadException>(() => checkpoint.CheckAgainst(config));
        Assert.StartsWith(Stories260K.WeightsPath + ": ", e.Message);
        Assert.Contains("header says dim 64 but the description says 128", e.Message);
        Assert.Contains("header says n_kv_heads 4 but the description says 8", e.Message);
        Assert.Contains("header says seq_len 512 but the description says 1024", e.Message);
        Assert.Contains("classifier is shared but the description says tiedEmbedding false", e.Message);
        Assert.DoesNotContain("hidden_dim", e.Message);
    }

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_tempDir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] HeaderBytes(int[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();

    private static byte[] FloatBytes(float[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();

    private static float FloatAt(byte[] file, int floatIndexAfterHeader) => BitConverter.ToSingle(file, 28 + 4 * floatIndexAfterHeader);

    private static unsafe float First(Llama2cCheckpoint checkpoint, string name)
    {
        Assert.True(checkpoint.TryGetTensor(name, out var tensor), name);
        return *(float*)tensor.Data;
    }

    private static void AssertShape(Llama2cCheckpoint checkpoint, string name, params long[] shape)
    {
        Assert.True(checkpoint.TryGetTensor(name, out var tensor), $"no tensor {name}");
        Assert.Equal(shape, tensor.Shape);
        Assert.Equal(shape.Aggregate(4L, (a, b) => a * b), tensor.SizeInBytes);
    }
}
