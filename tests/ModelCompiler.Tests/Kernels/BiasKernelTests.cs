using ModelCompiler.Runtime.Kernels;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>The bias add of Qwen2's q/k/v projections, and the checkpoint names its biases bind from.</summary>
[Trait("Category", TestCategories.CpuPaths)]
public class BiasKernelTests
{
    [Theory]
    [InlineData(1, 5)]
    [InlineData(3, 37)]   // not a multiple of any vector width: the scalar tail runs
    public void AddBias_adds_the_bias_to_every_row(int numTokens, int width)
    {
        var y = Enumerable.Range(0, numTokens * width).Select(i => (float)i).ToArray();
        var bias = Enumerable.Range(0, width).Select(i => 0.5f * i - 3).ToArray();
        CpuKernels.AddBias(y, numTokens, bias, width);
        for (int t = 0; t < numTokens; t++)
            for (int i = 0; i < width; i++)
                Assert.Equal(t * width + i + (0.5f * i - 3), y[t * width + i]);
    }

    [Theory]
    [InlineData("model.layers.3.self_attn.q_proj.bias", "layers.3.attention.wq.bias")]
    [InlineData("model.layers.0.self_attn.v_proj.bias", "layers.0.attention.wv.bias")]
    public void Hugging_Face_bias_names_map_to_ours(string hf, string ours) => Assert.Equal(ours, TensorNames.FromHuggingFace(hf));

    [Fact]
    public void Query_and_key_biases_are_reordered_with_their_projections() =>
        Assert.True(TensorNames.IsQuery("layers.1.attention.wq.bias") && TensorNames.IsKey("layers.1.attention.wk.bias") && !TensorNames.IsQuery("layers.1.attention.wv.bias"));
}
