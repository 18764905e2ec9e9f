using System;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Reference;

/// <summary>
/// The readable reference forward pass of a Llama-architecture model, in the spirit of llama2.c's
/// <c>forward()</c>: scalar loops, every activation stored and accumulated in double, one sequence, one
/// token per call, its own contiguous KV cache. Every optimised path (generated CPU code, CUDA kernels)
/// is tested against it; it is meant to be obviously right, not fast.
/// </summary>
/// <remarks>
/// Weights are read by the llama2.c / Meta checkpoint names (<c>tok_embeddings.weight</c>,
/// <c>layers.{i}.attention.wq.weight</c>, ...) as f32 and copied, so the source may be disposed afterwards.
/// </remarks>
public sealed class ReferenceTransformer
{
    private readonly ModelConfig _config;

    private readonly float[] _tokenEmbedding;     // [vocab, dim]
    private readonly float[][] _attentionNorm;    // [numLayers][dim]
    private readonly float[][] _wq;               // [numLayers][numHeads * headDim, dim]
    private readonly float[][]? _qkvBias;         // [numLayers][qDim + 2 * kvDim] q, k, v biases (Qwen2), or null
    private readonly float[][] _wk;               // [numLayers][kvDim, dim]
    private readonly float[][] _wv;               // [numLayers][kvDim, dim]
    private readonly float[][] _wo;               // [numLayers][dim, numHeads * headDim]
    private readonly float[][] _ffnNorm;          // [numLayers][dim]
    private readonly float[][] _w1;               // [numLayers][hidden, dim]  gate
    private readonly float[][] _w2;               // [numLayers][dim, hidden]  down
    private readonly float[][] _w3;               // [numLayers][hidden, dim]  up
    private readonly float[] _finalNorm;          // [dim]
    private readonly float[] _output;             // [vocab, dim] (the embedding when tied)

    private readonly double[] _keyCache;          // [numLayers, maxSeqLen, kvDim]
    private readonly double[] _valueCache;        // [numLayers, maxSeqLen, kvDim]
    private int _numPositions;

    /// <summary>Reads the weights of a model shaped like <paramref name="config"/> from <paramref name="weights"/>.</summary>
    /// <exception cref="ModelLoadException">A tensor is missing, not f32, or has the wrong shape.</exception>
    public ReferenceTransformer(ModelConfig config, IWeightSource weights)
    {
        _config = config;
        int dim = config.Dim, hidden = config.HiddenDim, vocab = config.VocabSize;
        int qDim = config.NumHeads * config.HeadDim, kvDim = config.KvDim;
        if (qDim != dim) throw new ModelLoadException($"{config.Name}: {config.NumHeads} heads of {config.HeadDim} do not make the model width {dim}.");
        if (config.NumHeads % config.NumKvHeads != 0) throw new ModelLoadException($"{config.Name}: {config.NumHeads} query heads cannot be grouped over {config.NumKvHeads} KV heads.");

        _tokenEmbedding = Read(weights, "tok_embeddings.weight", vocab, dim);
        _attentionNorm = new float[config.NumLayers][];
        _wq = new float[config.NumLayers][];
        _wk = new float[config.NumLayers][];
        _wv = new float[config.NumLayers][];
        _wo = new float[config.NumLayers][];
        _ffnNorm = new float[config.NumLayers][];
        _w1 = new float[config.NumLayers][];
        _w2 = new float[config.NumLayers][];
        _w3 = new float[config.NumLayers][];
        for (int l = 0; l < config.NumLayers; l++)
        {
            _attentionNorm[l] = Read(weights, $"layers.{l}.attention_norm.weight", dim);
            _wq[l] = Read(weights, $"layers.{l}.attention.wq.weight", qDim, dim);
            _wk[l] = Read(weights, $"layers.{l}.attention.wk.weight", kvDim, dim);
            _wv[l] = Read(weights, $"layers.{l}.attention.wv.weight", kvDim, dim);
            _wo[l] = Read(weights, $"layers.{l}.attention.wo.weight", dim, qDim);
            _ffnNorm[l] = Read(weights, $"layers.{l}.ffn_norm.weight", dim);
            _w1[l] = Read(weights, $"layers.{l}.feed_forward.w1.weight", hidden, dim);
            _w2[l] = Read(weights, $"layers.{l}.feed_forward.w2.weight", dim, hidden);
            _w3[l] = Read(weights, $"layers.{l}.feed_forward.w3.weight", hidden, dim);
        }
        if (config.QkvBias)
        {
            _qkvBias = new float[config.NumLayers][];
            for (int l = 0; l < config.NumLayers; l++)
                _qkvBias[l] = [.. Read(weights, $"layers.{l}.attention.wq.bias", qDim), .. Read(weights, $"layers.{l}.attention.wk.bias", kvDim),
                               .. Read(weights, $"layers.{l}.attention.wv.bias", kvDim)];
        }
        _finalNorm = Read(weights, "norm.weight", dim);
        _output = config.TiedEmbedding ? _tokenEmbedding : Read(weights, "output.weight", vocab, dim);

        _keyCache = new double[(long)config.NumLayers * config.MaxSeqLen * kvDim];
        _valueCache = new double[(long)config.NumLayers * config.MaxSeqLen * kvDim];
    }

    /// <summary>Number of positions fed since construction or the last <see cref="Reset"/>: the next position expected.</summary>
    public int NumPositions => _numPositions;

    /// <summary>Forgets the sequence so the next call starts again at position 0.</summary>
    public void Reset() => _numPositions = 0;

    /// <summary>
    /// Runs <paramref name="token"/> at <paramref name="position"/> through the model and returns its
    /// <c>[vocab]</c> logits. Positions must come in order 0, 1, 2, ... (the cache holds the earlier ones).
    /// </summary>
    public float[] Forward(int token, int position)
    {
        var c = _config;
        int dim = c.Dim, hidden = c.HiddenDim, headDim = c.HeadDim, numHeads = c.NumHeads;
        int kvDim = c.KvDim, qDim = numHeads * headDim;
        int headsPerKvHead = c.NumHeads / c.NumKvHeads;
        if (position != _numPositions) throw new InvalidOperationException($"The reference expects position {_numPositions} next; got {position}.");
        if (position >= c.MaxSeqLen) throw new InvalidOperationException($"Position {position} is past the maximum context of {c.MaxSeqLen}.");
        if ((uint)token >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(token), $"Token id {token} is outside the vocabulary of {c.VocabSize}.");

        var x = new double[dim];                  // [dim] residual stream
        var xb = new double[dim];                 // [dim] normalized residual (input of a projection)
        var q = new double[qDim];                 // [numHeads, headDim] queries
        var k = new double[kvDim];                // [numKvHeads, headDim] keys of this position
        var v = new double[kvDim];                // [numKvHeads, headDim] values of this position
        var attention = new double[qDim];         // [numHeads, headDim] attention output
        var scores = new double[position + 1];    // [position + 1] one head's scores over the context
        var projected = new double[dim];          // [dim] output of wo or w2
        var gate = new double[hidden];            // [hidden] w1 x
        var up = new double[hidden];              // [hidden] w3 x
        var logits = new double[c.VocabSize];     // [vocab]

        for (int i = 0; i < dim; i++) x[i] = _tokenEmbedding[token * dim + i];

        for (int l = 0; l < c.NumLayers; l++)
        {
            // Attention block: x += wo · attention(rope(wq·n), rope(wk·n), wv·n), n = rmsnorm(x).
            RmsNorm(x, _attentionNorm[l], c.NormEps, xb);
            MatVec(_wq[l], xb, q);
            MatVec(_wk[l], xb, k);
            MatVec(_wv[l], xb, v);
            if (_qkvBias is not null)
            {
                // q += bq, k += bk, v += bv, before the rotation (Qwen2).
                for (int i = 0; i < q.Length; i++) q[i] += _qkvBias[l][i];
                for (int i = 0; i < kvDim; i++) k[i] += _qkvBias[l][q.Length + i];
                for (int i = 0; i < kvDim; i++) v[i] += _qkvBias[l][q.Length + kvDim + i];
            }
            RotateHeads(q, numHeads, headDim, position, c.RopeTheta, c.RopeStyle);
            RotateHeads(k, c.NumKvHeads, headDim, position, c.RopeTheta, c.RopeStyle);

            long cacheRow = ((long)l * c.MaxSeqLen + position) * kvDim;   // [layer, position, :]
            Array.Copy(k, 0, _keyCache, cacheRow, kvDim);
            Array.Copy(v, 0, _valueCache, cacheRow, kvDim);

            for (int h = 0; h < numHeads; h++)
            {
                int kvHead = h / headsPerKvHead;   // grouped-query attention: heads share K/V in groups
                double scale = 1.0 / Math.Sqrt(headDim);
                for (int p = 0; p <= position; p++)
                {
                    long keyRow = ((long)l * c.MaxSeqLen + p) * kvDim + kvHead * headDim;
                    double score = 0;
                    for (int i = 0; i < headDim; i++) score += q[h * headDim + i] * _keyCache[keyRow + i];
                    scores[p] = score * scale;
                }
                Softmax(scores);
                for (int i = 0; i < headDim; i++) attention[h * headDim + i] = 0;
                for (int p = 0; p <= position; p++)
                {
                    long valueRow = ((long)l * c.MaxSeqLen + p) * kvDim + kvHead * headDim;
                    for (int i = 0; i < headDim; i++) attention[h * headDim + i] += scores[p] * _valueCache[valueRow + i];
                }
            }
            MatVec(_wo[l], attention, projected);
            for (int i = 0; i < dim; i++) x[i] += projected[i];

            // MLP block: x += w2 · (silu(w1·n) * w3·n), n = rmsnorm(x).
            RmsNorm(x, _ffnNorm[l], c.NormEps, xb);
            MatVec(_w1[l], xb, gate);
            MatVec(_w3[l], xb, up);
            var gated = gate;                     // [hidden] silu(gate) * up, in place
            for (int i = 0; i < hidden; i++) gated[i] = gate[i] / (1.0 + Math.Exp(-gate[i])) * up[i];
            MatVec(_w2[l], gated, projected);
            for (int i = 0; i < dim; i++) x[i] += projected[i];
        }

        RmsNorm(x, _finalNorm, c.NormEps, xb);
        MatVec(_output, xb, logits);
        _numPositions++;

        var result = new float[c.VocabSize];
        for (int i = 0; i < result.Length; i++) result[i] = (float)logits[i];
        return result;
    }

    /// <summary>y = x / sqrt(mean(x²) + eps) * weight.</summary>
    private static void RmsNorm(double[] x, float[] weight, float eps, double[] y)
    {
        double sumOfSquares = 0;
        for (int i = 0; i < x.Length; i++) sumOfSquares += x[i] * x[i];
        double inverseRms = 1.0 / Math.Sqrt(sumOfSquares / x.Length + eps);
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * inverseRms * weight[i];
    }

    /// <summary>y = W x with W <c>[y.Length, x.Length]</c> row-major (nn.Linear's layout).</summary>
    private static void MatVec(float[] w, double[] x, double[] y)
    {
        for (int o = 0; o < y.Length; o++)
        {
            double sum = 0;
            for (int i = 0; i < x.Length; i++) sum += w[(long)o * x.Length + i] * x[i];
            y[o] = sum;
        }
    }

    /// <summary>In-place softmax, the max subtracted first so exp cannot overflow.</summary>
    private static void Softmax(double[] values)
    {
        double max = double.NegativeInfinity;
        foreach (double value in values) max = Math.Max(max, value);
        double sum = 0;
        for (int i = 0; i < values.Length; i++) sum += values[i] = Math.Exp(values[i] - max);
        for (int i = 0; i < values.Length; i++) values[i] /= sum;
    }

    /// <summary>
    /// RoPE on <c>[numHeads, headDim]</c>: pair i turns by position * theta^(-2i/headDim). Interleaved pairs are
    /// (x[2i], x[2i+1]) (Meta, llama2.c); Half pairs are (x[i], x[i + headDim/2]) (Hugging Face, NeoX).
    /// </summary>
    private static void RotateHeads(double[] heads, int numHeads, int headDim, int position, float theta, RopeStyle style)
    {
        int numPairs = headDim / 2;
        for (int h = 0; h < numHeads; h++)
        {
            for (int i = 0; i < numPairs; i++)
            {
                double angle = position * Math.Pow(theta, -2.0 * i / headDim);
                double cos = Math.Cos(angle), sin = Math.Sin(angle);
                int first = h * headDim + (style == RopeStyle.Interleaved ? 2 * i : i);
                int second = first + (style == RopeStyle.Interleaved ? 1 : numPairs);
                double x0 = heads[first], x1 = heads[second];
                heads[first] = x0 * cos - x1 * sin;
                heads[second] = x0 * sin + x1 * cos;
            }
        }
    }

    /// <summary>Copies an f32 tensor of the given shape out of the source.</summary>
    private static unsafe float[] Read(IWeightSource weights, string name, params int[] shape)
    {
        if (!weights.TryGetTensor(name, out var tensor)) throw new ModelLoadException($"{weights.Description}: tensor '{name}' is missing.");
        if (tensor.DType != WeightDType.F32) throw new ModelLoadException($"{weights.Description}: tensor '{name}' is {tensor.DType}; the reference reads f32 only.");
        bool shapeMatches = tensor.Shape.Length == shape.Length;
        for (int i = 0; shapeMatches && i < shape.Length; i++) shapeMatches = tensor.Shape[i] == shape[i];
        if (!shapeMatches) throw new ModelLoadException($"{weights.Description}: tensor '{name}' has shape [{string.Join(", ", tensor.Shape)}]; expected [{string.Join(", ", shape)}].");
        long numElements = tensor.NumElements;
        if (tensor.SizeInBytes < numElements * sizeof(float)) throw new ModelLoadException($"{weights.Description}: tensor '{name}' holds {tensor.SizeInBytes} bytes, fewer than its {numElements} f32 elements.");
        // Weight files are little-endian f32, as is every machine this runs on.
        return new ReadOnlySpan<float>((void*)tensor.Data, checked((int)numElements)).ToArray();
    }
}
