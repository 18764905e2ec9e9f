using System.Runtime.Intrinsics;
using ModelCompiler.Runtime.Diagnostics;
using ModelCompiler.Runtime.Kernels.MatMul;
using ModelCompiler.Runtime.Weights;
using Xunit;

namespace ModelCompiler.Tests.Kernels;

/// <summary>
/// The instruction level the kernels run, checked against <c>MODELCOMPILER_EXPECT_ISA</c> when it is set: the runs of
/// <c>scripts/test.sh</c> that disable instruction sets with <c>DOTNET_Enable*</c> knobs set it, so a knob that
/// stops working (as <c>DOTNET_EnableAVX512F</c> did in .NET 10, which folded the AVX-512 subsets into
/// <c>DOTNET_EnableAVX512</c>) fails the run instead of quietly testing AVX-512 again.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class CpuPathTests
{
    private static readonly string[] s_levels =
        ["avx512+vnni", "avx512", "avx2+vnni", "avx2", "portable", "scalar"];

    [Fact]
    public void The_kernels_run_the_expected_instruction_level()
    {
        Assert.Contains(CpuFeatures.Level, s_levels);
        string? expected = Environment.GetEnvironmentVariable("MODELCOMPILER_EXPECT_ISA");
        if (string.IsNullOrEmpty(expected)) return;
        Assert.Contains(expected, s_levels);
        Assert.Equal(expected, CpuFeatures.Level);
    }

    [Fact]
    public void The_load_time_layouts_are_those_of_the_level()
    {
        // Packing a matrix into a layout that the level's kernels cannot read would be wrong at every call.
        // Float panels: read by the AVX-512 kernels and by the AVX2 ones (FloatPanel256); below AVX2 the rows stay.
        bool panels = CpuFeatures.Level.StartsWith("avx512", StringComparison.Ordinal) || CpuFeatures.Level.StartsWith("avx2", StringComparison.Ordinal);
        foreach (var dtype in new[] { WeightDType.F32, WeightDType.F16, WeightDType.BF16 })
            Assert.Equal(panels, FloatPanelLayout.Supports(dtype));
        // Engines pack f32 only with AVX-512 (on AVX2 its decode measured faster from rows); bf16/f16 wherever supported.
        Assert.Equal(CpuFeatures.Level.StartsWith("avx512", StringComparison.Ordinal), FloatPanelLayout.ShouldPack(WeightDType.F32, 1024, 1024));
        Assert.Equal(panels, FloatPanelLayout.ShouldPack(WeightDType.BF16, 1024, 1024));
        Assert.Equal(CpuFeatures.Level.EndsWith("+vnni", StringComparison.Ordinal), PackedQuantizedLayout.IsSupported);
        Assert.Equal(CpuFeatures.Level is "avx512" or "avx512+vnni", Vector512.IsHardwareAccelerated);
        Assert.Equal(CpuFeatures.Level is not "scalar", Vector128.IsHardwareAccelerated);
    }

    [Fact]
    public void The_roofline_probe_is_as_wide_as_the_kernels()
    {
        // A 512-bit FMA peak where the kernels run 256-bit code (AVX-512F present but Vector512 off, as .NET
        // chooses on Skylake-X and Cascade Lake) would report every prefill at half its share of the peak.
        Assert.True(CpuFeatures.UseVector512 == (Roofline.FmaLanes == 16),
            $"the kernels {(CpuFeatures.UseVector512 ? "use" : "do not use")} Vector512, the roofline probe has {Roofline.FmaLanes} lanes");
    }
}
