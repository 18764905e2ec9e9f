using System;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Diagnostics;

/// <summary>
/// What one forward pass of a compiled model must read and compute, from its bound weights: the numbers
/// the measured speeds are divided by to get a fraction of the memory and compute roofs.
/// </summary>
/// <param name="WeightBytesPerDecodedToken">
/// Bytes of weights one decode step reads, in their stored types: every matrix in full (q|k|v, o, gate|up,
/// down of every layer and the LM head, which for a tied model is the embedding table read in full), every
/// norm vector (f32), and one row of the token embedding (a gather, not a full read).
/// </param>
/// <param name="NumMatrixParametersPerToken">Weights of the per-token projections (every layer's matrices), each used by one multiply-add per token.</param>
/// <param name="NumLmHeadParameters">Weights of the LM head, used only for tokens that need logits (the last of a prompt).</param>
/// <param name="NumLayers">Transformer blocks.</param>
/// <param name="AttentionWidth">Query width (numHeads × headDim): each (query, key) pair costs this many multiply-adds for q·k and again for p·v.</param>
/// <param name="KvBytesPerTokenPosition">Bytes of K and V (in the cache's type, f32 or f16) one cached token position holds over all layers; a decode step at context n reads n of them.</param>
/// <param name="NumLogitsRowsOnlyParameters">
/// Of <paramref name="NumMatrixParametersPerToken"/>, the weights the last layer multiplies only for the tokens that need
/// logits (<see cref="CompiledModel.LastLayerLogitsRowsWeights"/>); null when the forward pass computes every row (its
/// last layer's attention then also runs for every token).
/// </param>
public sealed record ModelCost(long WeightBytesPerDecodedToken, long NumMatrixParametersPerToken, long NumLmHeadParameters, int NumLayers, int AttentionWidth, long KvBytesPerTokenPosition,
    long? NumLogitsRowsOnlyParameters = null)
{
    /// <summary>The graph weight name of the token embedding (a gather per token).</summary>
    public const string EmbeddingWeightName = "tok_embeddings";
    /// <summary>The graph weight name of the LM head (computed only for tokens that need logits).</summary>
    public const string LmHeadWeightName = "output";

    /// <summary>Computes the cost of <paramref name="model"/> with <paramref name="weights"/> bound.</summary>
    /// <param name="model">The compiled model.</param>
    /// <param name="weights">Its bound weights.</param>
    /// <param name="everyRow">Count every row of the last layer, as the CUDA pass computes them, instead of the generated CPU pass's rows.</param>
    public static ModelCost Of(CompiledModel model, ModelWeights weights, bool everyRow = false)
    {
        long bytes = 0, matrixParameters = 0, headParameters = 0;
        foreach (var spec in model.WeightSpecs)
        {
            var matrix = weights.Matrix(spec.Index);
            long size = (long)matrix.Rows * matrix.RowSizeInBytes;
            if (spec.Name == EmbeddingWeightName)
            {
                bytes += matrix.RowSizeInBytes;
                continue;
            }
            bytes += size;
            if (spec.Shape.Length != 2) continue;
            if (spec.Name == LmHeadWeightName) headParameters += spec.NumElements;
            else matrixParameters += spec.NumElements;
        }
        long? logitsRowsOnly = null;
        if (!everyRow && model.LastLayerLogitsRowsWeights is { } lastLayer)
        {
            logitsRowsOnly = 0;
            foreach (int index in lastLayer) logitsRowsOnly += model.WeightSpecs[index].NumElements;
        }
        var c = model.Config;
        return new ModelCost(bytes, matrixParameters, headParameters, c.NumLayers, c.NumHeads * c.HeadDim, (long)c.NumLayers * 2 * c.KvDim * KvCacheDTypes.ElementSizeInBytes(c.KvCacheDType), logitsRowsOnly);
    }

    /// <summary>
    /// FLOPs of a prefill of <paramref name="numTokens"/> tokens from position 0 with logits for the last:
    /// 2 × matrix parameters × tokens (projections), 2 × LM-head parameters (one row of logits), and causal
    /// attention, where token i attends to i + 1 positions with 2 × 2 × <see cref="AttentionWidth"/> FLOPs
    /// each (q·k and p·v), in every layer. Softmax, norms, RoPE and SwiGLU are left out (a few per mille). Work the
    /// pass does not do is not counted: with <see cref="NumLogitsRowsOnlyParameters"/> set, the last layer's
    /// attention and the projections after it run for the last token only.
    /// </summary>
    public double PrefillFlops(int numTokens)
    {
        double projections = 2.0 * NumMatrixParametersPerToken * numTokens + 2.0 * NumLmHeadParameters;
        double pairs = numTokens * (numTokens + 1.0) / 2;
        double attention = 4.0 * AttentionWidth * pairs * NumLayers;
        if (NumLogitsRowsOnlyParameters is long lastLayer && numTokens > 0)
        {
            projections -= 2.0 * lastLayer * (numTokens - 1);
            attention -= 4.0 * AttentionWidth * (pairs - numTokens);
        }
        return projections + attention;
    }

    /// <summary>Mean bytes of K/V a decode step reads when the context grows from <paramref name="firstContext"/> to <paramref name="firstContext"/> + <paramref name="numSteps"/> − 1 tokens.</summary>
    public double MeanKvBytesPerDecodeStep(int firstContext, int numSteps) =>
        numSteps <= 0 ? 0 : KvBytesPerTokenPosition * (firstContext + (numSteps - 1) / 2.0);

    /// <summary>
    /// The stored types of the matrices the forward pass multiplies by (the embedding is left out): one
    /// name when they agree (<c>q8_0</c>), else each with its count (<c>q8_0 x 26, f32 x 5</c>).
    /// </summary>
    public static string MatrixDTypes(CompiledModel model, ModelWeights weights)
    {
        var counts = new int[Enum.GetValues<WeightDType>().Length];
        foreach (var spec in model.WeightSpecs)
            if (spec.Shape.Length == 2 && spec.Name != EmbeddingWeightName) counts[(int)weights.DType(spec.Index)]++;
        var parts = new System.Collections.Generic.List<string>();
        for (int d = 0; d < counts.Length; d++)
            if (counts[d] > 0) parts.Add($"{WeightDTypes.Name((WeightDType)d)} x {counts[d]}");
        return parts.Count == 1 ? parts[0].Split(' ')[0] : string.Join(", ", parts);
    }
}
