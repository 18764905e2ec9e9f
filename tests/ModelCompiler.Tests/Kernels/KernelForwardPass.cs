using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.KvCache;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// A whole forward pass composed by hand from <see cref="CpuKernels"/>, the way a generated engine will call
/// them. Even layers use the fused kernels, odd layers the unfused ones, so one pass exercises both.
/// </summary>
internal static class KernelForwardPass
{
    /// <summary>Runs <paramref name="batch"/> and writes <c>[batch.NumLogits, vocab]</c> logits.</summary>
    public static void Forward(TinyModel model, ForwardBatch batch, PagedKvCache cache, float[] logits)
    {
        var c = model.Config;
        int numTokens = batch.NumTokens, dim = c.Dim, hidden = c.HiddenDim, headDim = c.HeadDim;
        int qDim = c.NumHeads * headDim, kvDim = c.KvDim, qkvDim = qDim + 2 * kvDim;

        var x = new float[numTokens * dim];             // [numTokens, dim] residual stream
        var normalized = new float[numTokens * dim];    // [numTokens, dim]
        var qkv = new float[numTokens * qkvDim];        // [numTokens, qDim + 2 kvDim]   (fused layers)
        var q = new float[numTokens * qDim];            // [numTokens, numHeads, headDim] (unfused layers)
        var k = new float[numTokens * kvDim];           // [numTokens, numKvHeads, headDim]
        var v = new float[numTokens * kvDim];           // [numTokens, numKvHeads, headDim]
        var attention = new float[numTokens * qDim];    // [numTokens, numHeads, headDim]
        var projected = new float[numTokens * dim];     // [numTokens, dim]
        var gateUp = new float[numTokens * 2 * hidden]; // [numTokens, 2 hidden]
        var gate = new float[numTokens * hidden];       // [numTokens, hidden]
        var up = new float[numTokens * hidden];         // [numTokens, hidden]
        var lastRows = new float[batch.NumLogits * dim];// [numLogits, dim]
        var lastNormalized = new float[batch.NumLogits * dim];

        CpuKernels.Embedding(TestMatrix.F32(model.TokenEmbedding, dim), batch.TokenIds, numTokens, x, dim);
        for (int l = 0; l < c.NumLayers; l++)
        {
            if (l % 2 == 0)
            {
                CpuKernels.RmsNormQkvRopeKvWrite(x, numTokens, model.AttentionNorm[l], c.NormEps, TestMatrix.F32(model.Wqkv[l], dim), qkv, normalized, dim, c.NumHeads, c.NumKvHeads, headDim, batch, cache, l, c.RopeTheta, c.RopeStyle);
                CpuKernels.PagedAttention(qkv, qkvDim, 0, batch, cache, l, c.NumHeads, c.NumKvHeads, headDim, attention);
                CpuKernels.LinearAddResidual(attention, numTokens, TestMatrix.F32(model.Wo[l], qDim), x, qDim, dim);

                CpuKernels.RmsNormLinear(x, numTokens, model.FfnNorm[l], c.NormEps, TestMatrix.F32(model.WGateUp[l], dim), gateUp, dim, 2 * hidden, normalized);
                CpuKernels.SwiGlu(gateUp, numTokens, hidden, gate);
                CpuKernels.LinearAddResidual(gate, numTokens, TestMatrix.F32(model.W2[l], hidden), x, hidden, dim);
            }
            else
            {
                CpuKernels.RmsNorm(x, numTokens, dim, model.AttentionNorm[l], c.NormEps, normalized);
                CpuKernels.Linear(normalized, numTokens, TestMatrix.F32(model.Wq[l], dim), q, dim, qDim);
                CpuKernels.Linear(normalized, numTokens, TestMatrix.F32(model.Wk[l], dim), k, dim, kvDim);
                CpuKernels.Linear(normalized, numTokens, TestMatrix.F32(model.Wv[l], dim), v, dim, kvDim);
                CpuKernels.Rope(q, qDim, 0, c.NumHeads, headDim, batch, c.RopeTheta, c.RopeStyle);
                CpuKernels.Rope(k, kvDim, 0, c.NumKvHeads, headDim, batch, c.RopeTheta, c.RopeStyle);
                CpuKernels.KvWrite(k, kvDim, 0, v, kvDim, 0, batch, cache, l);
                CpuKernels.PagedAttention(q, qDim, 0, batch, cache, l, c.NumHeads, c.NumKvHeads, headDim, attention);
                CpuKernels.Linear(attention, numTokens, TestMatrix.F32(model.Wo[l], qDim), projected, qDim, dim);
                CpuKernels.Add(x, projected, x, numTokens * dim);

                CpuKernels.RmsNorm(x, numTokens, dim, model.FfnNorm[l], c.NormEps, normalized);
                CpuKernels.Linear(normalized, numTokens, TestMatrix.F32(model.W1[l], dim), gate, dim, hidden);
                CpuKernels.Linear(normalized, numTokens, TestMatrix.F32(model.W3[l], dim), up, dim, hidden);
                CpuKernels.Silu(gate, gate, numTokens * hidden);
                CpuKernels.Mul(gate, up, gate, numTokens * hidden);
                CpuKernels.Linear(gate, numTokens, TestMatrix.F32(model.W2[l], hidden), projected, hidden, dim);
                CpuKernels.Add(x, projected, x, numTokens * dim);
            }
        }
        CpuKernels.GatherRows(x, batch.LogitsTokenIndices, batch.NumLogits, lastRows, dim);
        CpuKernels.RmsNormLinear(lastRows, batch.NumLogits, model.FinalNorm, c.NormEps, TestMatrix.F32(model.Output, dim), logits, dim, c.VocabSize, lastNormalized);
    }
}
