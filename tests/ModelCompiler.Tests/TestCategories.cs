using ModelCompiler.Tests.Kernels;

namespace ModelCompiler.Tests;

/// <summary>Trait values of the tests (<c>dotnet test --filter Category=...</c>).</summary>
internal static class TestCategories
{
    /// <summary>
    /// Tests of everything whose code path depends on the CPU's instruction sets (the kernels against naive loops,
    /// the engines against the float64 reference, sampling, the KV cache). <c>scripts/test.sh</c> runs them again
    /// under each lower instruction level (AVX-512 without AVX-VNNI, AVX2 with and without it, Vector128 only, no
    /// intrinsics), set with the runtime's <c>DOTNET_Enable*</c> knobs, with <c>MODELCOMPILER_EXPECT_ISA</c> naming the
    /// level that <see cref="CpuPathTests"/> must then find.
    /// </summary>
    public const string CpuPaths = "CpuPaths";
}
