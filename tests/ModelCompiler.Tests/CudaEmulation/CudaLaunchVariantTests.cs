using System.Text.RegularExpressions;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>The weight-type and prefill variants a runner selects through the launch plan exist in the source.</summary>
public sealed class CudaLaunchVariantTests
{
    [Fact]
    public void Kernel_names_follow_the_documented_convention()
    {
        Assert.Equal("linear_1", CudaLaunchPlan.KernelFor("linear_1", WeightDType.F32));
        Assert.Equal("linear_1_f16", CudaLaunchPlan.KernelFor("linear_1", WeightDType.F16));
        Assert.Equal("linear_1_bf16", CudaLaunchPlan.KernelFor("linear_1", WeightDType.BF16));
        Assert.Equal("linear_1_q8_0", CudaLaunchPlan.KernelFor("linear_1", WeightDType.Q8_0));
        Assert.Equal("linear_1_q4_0", CudaLaunchPlan.KernelFor("linear_1", WeightDType.Q4_0));
    }

    [Theory]
    [InlineData(WeightDType.F32)]
    [InlineData(WeightDType.F16)]
    [InlineData(WeightDType.BF16)]
    public void Every_launch_of_Stories260K_selects_a_kernel_of_its_source_for_decode_and_prefill(WeightDType dtype)
    {
        CudaLaunchPlan plan = new Stories260KTestEngine().CudaPlan!;
        var kernels = Regex.Matches(plan.Source, @"^extern ""C"" __global__ void (\w+)\(", RegexOptions.Multiline).Select(m => m.Groups[1].Value).ToHashSet();
        int variants = 0, prefills = 0;
        foreach (var launch in plan.Launches)
        {
            if (launch.DTypeArg >= 0) variants++;
            foreach (int numTokens in new[] { 1, 15, 16, 64 })
            {
                CudaKernelChoice choice = plan.Select(launch, numTokens, _ => dtype, 0);
                Assert.Contains(choice.Kernel, kernels);
                bool prefill = launch.Prefill is not null && numTokens >= CudaLaunch.PrefillMinTokens && dtype != WeightDType.F32;
                Assert.Equal(prefill ? launch.Prefill!.Block : launch.Block, choice.Block);
                if (prefill) { prefills++; Assert.EndsWith("_mma_" + WeightDTypes.Name(dtype), choice.Kernel); }
            }
        }
        Assert.True(variants >= 4, $"{variants} launches with weight-type variants");
        if (dtype != WeightDType.F32) Assert.True(prefills > 0);
    }
}
