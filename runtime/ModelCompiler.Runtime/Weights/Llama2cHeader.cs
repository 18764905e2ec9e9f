using System;
using System.Buffers.Binary;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// The 7-int32 header of a llama2.c checkpoint (<c>run.c</c>'s <c>Config</c>), with the sign of the
/// vocabulary size decoded: llama2.c writes it negative when the classifier is not shared with the
/// token embedding and <c>output.weight</c> follows the other tensors.
/// </summary>
/// <param name="Dim">Model width (<c>dim</c>).</param>
/// <param name="HiddenDim">MLP hidden width (<c>hidden_dim</c>).</param>
/// <param name="NumLayers">Number of transformer blocks (<c>n_layers</c>).</param>
/// <param name="NumHeads">Number of query heads (<c>n_heads</c>).</param>
/// <param name="NumKvHeads">Number of key/value heads (<c>n_kv_heads</c>).</param>
/// <param name="VocabSize">Vocabulary size, always positive here.</param>
/// <param name="MaxSeqLen">Context length the checkpoint was exported for (<c>seq_len</c>).</param>
/// <param name="SharedClassifier">True when the LM head reuses <c>tok_embeddings.weight</c>.</param>
public sealed record Llama2cHeader(int Dim, int HiddenDim, int NumLayers, int NumHeads, int NumKvHeads, int VocabSize, int MaxSeqLen, bool SharedClassifier)
{
    /// <summary>Size of the header on disk: seven little-endian int32.</summary>
    public const int SizeInBytes = 7 * sizeof(int);

    /// <summary>Any dimension above this is treated as garbage rather than a model (it also keeps size arithmetic far from overflow).</summary>
    public const int MaxReasonableDimension = 1 << 20;

    /// <summary>Width of one head: <c>Dim / NumHeads</c>.</summary>
    public int HeadDim => Dim / NumHeads;

    /// <summary>Width of the keys (and values) of one token: <c>Dim * NumKvHeads / NumHeads</c>.</summary>
    public int KvDim => Dim * NumKvHeads / NumHeads;

    /// <summary>The exact size of a checkpoint with this header: header, every tensor, freq_cis, and the classifier when untied.</summary>
    public long ExpectedFileSizeInBytes
    {
        get
        {
            // TryParse guarantees every per-layer tensor and the embedding have at most 2^31 elements and
            // at most 2^20 layers, so every term is below 2^51 and the sum cannot overflow.
            long dim = Dim, hidden = HiddenDim, layers = NumLayers, vocab = VocabSize, kvDim = KvDim;
            long numFloats =
                vocab * dim                         // tok_embeddings [vocab, dim]
                + layers * dim                      // rms_att [L, dim]
                + layers * dim * dim                // wq [L, dim, dim]
                + 2 * layers * kvDim * dim          // wk, wv [L, kvDim, dim]
                + layers * dim * dim                // wo [L, dim, dim]
                + layers * dim                      // rms_ffn [L, dim]
                + 3 * layers * hidden * dim         // w1, w3 [L, hidden, dim]; w2 [L, dim, hidden]
                + dim                               // rms_final [dim]
                + 2 * (long)MaxSeqLen * (HeadDim / 2) // freq_cis_real, freq_cis_imag [seq_len, headDim/2]
                + (SharedClassifier ? 0 : vocab * dim); // wcls [vocab, dim]
            return SizeInBytes + numFloats * sizeof(float);
        }
    }

    /// <summary>
    /// Decodes and sanity-checks a header. On failure <paramref name="problem"/> says what is wrong and
    /// echoes the raw values, so a user who passed the wrong file can see it.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> bytes, out Llama2cHeader header, out string problem)
    {
        header = null!;
        if (bytes.Length < SizeInBytes)
        {
            problem = $"{bytes.Length} bytes is shorter than the {SizeInBytes}-byte header";
            return false;
        }

        Span<int> raw = stackalloc int[7];
        for (int i = 0; i < raw.Length; i++) raw[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes.Slice(i * sizeof(int)));
        int dim = raw[0], hidden = raw[1], layers = raw[2], heads = raw[3], kvHeads = raw[4], signedVocab = raw[5], seqLen = raw[6];
        string rawText = $"dim={dim} hidden_dim={hidden} n_layers={layers} n_heads={heads} n_kv_heads={kvHeads} vocab_size={signedVocab} seq_len={seqLen}";

        string? why = null;
        // Negating int.MinValue overflows; it is absurd anyway, so compare as long.
        long vocabMagnitude = Math.Abs((long)signedVocab);
        if (!IsReasonable(dim) || !IsReasonable(hidden) || !IsReasonable(layers) || !IsReasonable(heads)
            || !IsReasonable(kvHeads) || !IsReasonable(vocabMagnitude) || !IsReasonable(seqLen))
            why = $"every size must be between 1 and {MaxReasonableDimension}";
        else if (dim % heads != 0) why = $"n_heads {heads} does not divide dim {dim}";
        else if (heads % kvHeads != 0) why = $"n_kv_heads {kvHeads} does not divide n_heads {heads}";
        else if (dim / heads % 2 != 0) why = $"head size {dim / heads} is odd, so rotary pairs do not fit";
        else if ((long)dim * Math.Max(Math.Max(dim, hidden), vocabMagnitude) > int.MaxValue)
            why = "a tensor would have more than int.MaxValue elements";

        if (why is not null)
        {
            problem = $"header {rawText}: {why}";
            return false;
        }

        header = new Llama2cHeader(dim, hidden, layers, heads, kvHeads, (int)vocabMagnitude, seqLen, SharedClassifier: signedVocab > 0);
        problem = "";
        return true;
    }

    private static bool IsReasonable(long value) => value >= 1 && value <= MaxReasonableDimension;
}
