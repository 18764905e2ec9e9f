using ModelCompiler.Compiler;
using Xunit;

namespace ModelCompiler.Tests.Compiler;

/// <summary>The text rendering of the kernel plan behind `modelc dump-ir`.</summary>
public class DumpPlanTests
{
    [Fact]
    public void Stories260K_plan_lists_the_graph_the_fused_kernels_the_arena_and_the_weight_sources()
    {
        var result = ModelCompilerDriver.DumpPlan(Descriptions.Stories260K, Descriptions.Stories260KPath);
        Assert.NotNull(result.Source);
        string text = result.Source!;
        Assert.Contains("k [T, 32] = linear(attn_in) weight attention.wk", text); // KV width 4 heads × 8
        Assert.Contains("kernels (1 + 6 per layer + 1)", text);
        Assert.Contains("rmsnorm 'attn_in' → linear 'q' → linear 'k' → linear 'v' → rope 'q_rot' → rope 'k_rot' → KV-cache write", text);
        Assert.Contains("arena: 296960 floats", text); // 32768 (x) + 176128 (gate_up) + 88064 (ffn_hidden), worked out by hand
        Assert.Contains("layers.N.attention.wq|attention.wk|attention.wv [128, 64] f32 <- layers.{layer}.attention.wq.weight | layers.{layer}.attention.wk.weight | layers.{layer}.attention.wv.weight", text);
    }

    [Fact]
    public void A_bad_description_gives_diagnostics_and_no_plan()
    {
        var result = ModelCompilerDriver.DumpPlan("{ \"name\": ", "bad.model.json");
        Assert.Null(result.Source);
        Assert.Contains(result.Diagnostics, d => d.Id == "MC0001");
    }
}
