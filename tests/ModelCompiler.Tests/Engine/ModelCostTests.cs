using ModelCompiler.Runtime.Diagnostics;
using ModelCompiler.Runtime.Engine;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.Engine;

/// <summary>The cost model's prefill work against the same count done by hand from Stories260K's shapes.</summary>
public class ModelCostTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(128)]
    public void Prefill_work_counts_the_last_layer_past_its_kv_write_for_the_last_token_only(int numTokens)
    {
        var engine = new Stories260KTestEngine();
        using var runner = new ModelRunner(engine, OpenStories());
        var c = engine.Config;
        int qDim = c.NumHeads * c.HeadDim;
        // Per layer: q|k|v, then (after the attention) o, gate|up and down.
        double qkv = (double)(qDim + 2 * c.KvDim) * c.Dim, afterAttention = (double)c.Dim * qDim + 2.0 * c.HiddenDim * c.Dim + (double)c.Dim * c.HiddenDim;
        double head = (double)c.VocabSize * c.Dim;
        double pairs = numTokens * (numTokens + 1.0) / 2;
        double everyRow = 2 * (qkv + afterAttention) * c.NumLayers * numTokens + 2 * head + 4.0 * qDim * pairs * c.NumLayers;
        double lastTokenOnly = everyRow - 2 * afterAttention * (numTokens - 1) - 4.0 * qDim * (pairs - numTokens);

        Assert.NotNull(engine.LastLayerLogitsRowsWeights);
        Assert.Equal(lastTokenOnly, ModelCost.Of(engine, runner.Weights).PrefillFlops(numTokens), 6);
        Assert.Equal(everyRow, ModelCost.Of(engine, runner.Weights, everyRow: true).PrefillFlops(numTokens), 6);
    }
}
