using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using ModelCompiler.Compiler;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Tests.Compiler;
using Xunit;
using Xunit.Abstractions;

namespace ModelCompiler.Tests.Cuda;

/// <summary>
/// The generated CUDA source of every shipped model (and of the explicit test graphs, which use the
/// unfused kernels, and of the Qwen2-shaped TinyQwen) compiles with NVRTC for sm_80 and sm_90 without spills
/// (or to PTX where the NVRTC found does not know the architecture; the printed table says which). NVRTC must be installed: CI
/// installs Debian's libnvrtc11.2; a missing library fails the tests instead of skipping them.
/// </summary>
public sealed class CudaKernelCompileTests(ITestOutputHelper output)
{
    public static TheoryData<string, int> Models()
    {
        var data = new TheoryData<string, int>();
        foreach (var model in new[] { "Stories260K", "Llama15M", "Llama110M", "TinyExplicit", "ParallelBlock", "TinyQwen", "Stories260KF16Kv" })
            foreach (int arch in new[] { 80, 90 })
                data.Add(model, arch);
        return data;
    }

    internal static string DescriptionPath(string model) => model switch
    {
        "Stories260K" => Descriptions.Stories260KPath,
        "TinyExplicit" => Descriptions.TinyExplicitPath,
        "ParallelBlock" => Descriptions.ParallelBlockPath,
        "TinyQwen" => Path.Combine(Descriptions.RepoRoot, "tests", "ModelCompiler.Tests", "TestModels", "tiny_qwen.model.json"),
        "Stories260KF16Kv" => Path.Combine(Descriptions.RepoRoot, "tests", "ModelCompiler.Tests", "TestModels", "stories260K_f16kv.model.json"),
        _ => Path.Combine(Descriptions.RepoRoot, "models", model, model.ToLowerInvariant() + ".model.json"),
    };

    internal static string CudaSource(string model)
    {
        string path = DescriptionPath(model);
        var result = ModelCompilerDriver.CompileCuda(Descriptions.Read(path), Path.GetFileName(path));
        Assert.Empty(result.Diagnostics);
        Assert.NotNull(result.Source);
        return result.Source!;
    }

    internal static void RequireNvrtc()
    {
        if (!NvrtcCompiler.IsAvailable(out string reason))
            Assert.Fail("The CUDA tests need NVRTC and do not skip without it. " + reason +
                        " (scripts/test.sh installs libnvrtc11.2 when run as root.)");
    }

    private static string FreshCacheDirectory() =>
        Path.Combine(Path.GetTempPath(), "mc-nvrtc-tests", Guid.NewGuid().ToString("N"));

    private static IEnumerable<string> KernelNames(string source) =>
        Regex.Matches(source, @"^extern ""C"" __global__ void (\w+)\(", RegexOptions.Multiline).Select(m => m.Groups[1].Value);

    /// <summary>
    /// sm_80 and sm_90: a cubin with zero spills where this NVRTC knows the architecture (Debian's libnvrtc11.2
    /// package is NVRTC 11.8, which knows sm_90). Where it does not (NVRTC 11.2–11.7 and sm_90), the test
    /// compiles what the runtime would load instead — PTX for compute_XY, JIT-compiled by the driver — checks
    /// that every kernel is in it, and says in the printed table that registers and spills were not verified.
    /// </summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Every_kernel_compiles_for_the_architecture_without_spills_or_to_ptx_where_nvrtc_lacks_it(string model, int arch)
    {
        RequireNvrtc();
        string source = CudaSource(model);
        var compiler = new NvrtcCompiler(FreshCacheDirectory());
        var nvrtc = NvrtcCompiler.Version();
        if (!NvrtcCompiler.SupportsArchitecture(arch / 10, arch % 10))
        {
            var ptx = compiler.CompilePtx(source, model, arch / 10, arch % 10);
            Assert.True(ptx.IsPtx);
            Assert.Equal($"compute_{arch}", ptx.Architecture);
            string text = System.Text.Encoding.ASCII.GetString(ptx.Image, 0, ptx.Image.Length - 1);
            Assert.Equal(0, ptx.Image[^1]);
            Assert.Contains($".target sm_{arch}", text);
            foreach (var name in KernelNames(source)) Assert.Contains($".entry {name}(", text);
            output.WriteLine($"{model} compute_{arch} PTX (NVRTC {nvrtc.Major}.{nvrtc.Minor} has no sm_{arch}; knows {string.Join(",", NvrtcCompiler.SupportedArchitectures())}): " +
                $"{KernelNames(source).Count()} kernels compiled to PTX, which the driver JIT-compiles on the GPU; registers and spills NOT verified for sm_{arch}.");
            return;
        }

        var compiled = compiler.Compile(source, model, arch / 10, arch % 10);
        Assert.False(compiled.FromCache);
        Assert.False(compiled.IsPtx);
        Assert.Equal($"sm_{arch}", compiled.Architecture);
        Assert.NotEmpty(compiled.Image);

        var table = new StringBuilder();
        table.AppendLine(CultureInfo.InvariantCulture, $"{model} sm_{arch} cubin (NVRTC {nvrtc.Major}.{nvrtc.Minor}; ptxas report: registers, shared memory, spills verified)");
        table.AppendLine(CultureInfo.InvariantCulture, $"{"kernel",-48} {"regs",5} {"smem B",7} {"stack B",8} {"spill st/ld",12}");
        foreach (var r in compiled.Resources)
            table.AppendLine(CultureInfo.InvariantCulture,
                $"{(r.IsKernel ? r.Name : "  (" + r.Name + ")"),-48} {(r.IsKernel ? r.Registers.ToString(CultureInfo.InvariantCulture) : ""),5} {(r.IsKernel ? r.SharedMemoryBytes.ToString(CultureInfo.InvariantCulture) : ""),7} {r.StackFrameBytes,8} {r.SpillStoreBytes + "/" + r.SpillLoadBytes,12}");
        output.WriteLine(table.ToString());

        var kernels = compiled.Resources.Where(r => r.IsKernel).Select(r => r.Name).ToHashSet();
        foreach (var name in KernelNames(source)) Assert.Contains(name, kernels);
        foreach (var r in compiled.Resources)
        {
            Assert.True(r.SpillStoreBytes == 0 && r.SpillLoadBytes == 0, $"{r.Name} spills ({r.SpillStoreBytes} B stores, {r.SpillLoadBytes} B loads) on sm_{arch}.");
            if (r.IsKernel) Assert.InRange(r.Registers, 1, 128);
        }
    }

    [Fact]
    public void A_gpu_newer_than_nvrtc_gets_ptx_for_the_newest_architecture_nvrtc_knows()
    {
        RequireNvrtc();
        var supported = NvrtcCompiler.SupportedArchitectures();
        Assert.Contains(80, supported);
        int newest = supported[^1];
        // One major version past everything this NVRTC knows: the runtime cannot have a cubin for it.
        int futureMajor = newest / 10 + 1;
        Assert.False(NvrtcCompiler.SupportsArchitecture(futureMajor, 0));
        string source = CudaSource("Stories260K");
        var compiler = new NvrtcCompiler(FreshCacheDirectory());
        var compiled = compiler.Compile(source, "Stories260K", futureMajor, 0);
        Assert.True(compiled.IsPtx);
        Assert.Equal($"compute_{newest}", compiled.Architecture);
        Assert.Empty(compiled.Resources);   // no ptxas ran
        Assert.Equal(0, compiled.Image[^1]); // NUL-terminated, as cuModuleLoadData reads PTX
        string text = System.Text.Encoding.ASCII.GetString(compiled.Image, 0, compiled.Image.Length - 1);
        foreach (var name in KernelNames(source)) Assert.Contains($".entry {name}(", text);
        Assert.True(compiler.Compile(source, "Stories260K", futureMajor, 0).FromCache);
        // A known architecture still gets its cubin.
        Assert.False(compiler.Compile(source, "Stories260K", 8, 0).IsPtx);
        Assert.Throws<NotSupportedException>(() => compiler.Compile(source, "Stories260K", 1, 0));
    }

    [Theory]
    [InlineData("Stories260K")]
    [InlineData("Llama15M")]
    [InlineData("Llama110M")]
    [InlineData("TinyExplicit")]
    [InlineData("ParallelBlock")]
    [InlineData("TinyQwen")]
    [InlineData("Stories260KF16Kv")]
    public void The_source_is_self_contained_and_every_kernel_follows_its_comment_and_precedes_its_export(string model)
    {
        string source = CudaSource(model);
        Assert.DoesNotMatch(new Regex(@"^\s*#\s*include", RegexOptions.Multiline), source);
        var lines = source.Split('\n');
        int kernels = 0;
        for (int i = 0; i < lines.Length; i++)
        {
            var m = Regex.Match(lines[i], @"^extern ""C"" __global__ void (\w+)\(");
            if (!m.Success) continue;
            kernels++;
            string name = m.Groups[1].Value;
            int first = i - 1;
            while (first > 0 && lines[first - 1].StartsWith("//", StringComparison.Ordinal)) first--;
            Assert.True(lines[i - 1].StartsWith("//", StringComparison.Ordinal), $"{name} has no comment before it.");
            Assert.StartsWith($"// Kernel {name}: ", lines[first]);
            int close = Array.IndexOf(lines, "}", i);
            Assert.Equal($"MC_EXPORT({name})", lines[close + 1]);
        }
        Assert.True(kernels >= 5, $"only {kernels} kernels");
        Assert.StartsWith("// CUDA kernels of model", source);
        Assert.Contains("#ifndef MC_EMULATION", source);
    }

    [Fact]
    public void A_second_compile_comes_from_the_cache()
    {
        RequireNvrtc();
        string source = CudaSource("Stories260K");
        var compiler = new NvrtcCompiler(FreshCacheDirectory());
        var first = compiler.Compile(source, "Stories260K", 8, 0);
        var second = compiler.Compile(source, "Stories260K", 8, 0);
        Assert.False(first.FromCache);
        Assert.True(second.FromCache);
        Assert.Equal(first.Image, second.Image);
        Assert.Equal(first.Resources, second.Resources);
        // A different architecture is a different entry.
        Assert.False(compiler.Compile(source, "Stories260K", 9, 0).FromCache);
    }

    [Fact]
    public void A_compile_error_writes_the_source_and_the_log_and_names_them()
    {
        RequireNvrtc();
        const string broken = "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }\n";
        var e = Assert.Throws<ModelCompiler.Runtime.Interop.Cuda.NvrtcCompileException>(() => new NvrtcCompiler(FreshCacheDirectory()).Compile(broken, "broken", 8, 0));
        Assert.Contains(e.SourcePath, e.Message);
        Assert.Contains(e.LogPath, e.Message);
        Assert.Equal(broken, File.ReadAllText(e.SourcePath));
        Assert.Contains("undefined_name", File.ReadAllText(e.LogPath));
        Assert.Contains("undefined_name", e.Message);
    }

    [Fact]
    public void Ptxas_reports_are_parsed_per_function()
    {
        const string log = """
            ptxas info    : Compiling entry function 'k1' for 'sm_80'
            ptxas info    : Function properties for k1
            ptxas         .     48 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
            ptxas info    : Used 24 registers, 1584 bytes smem, 372 bytes cmem[0]
            ptxas info    : Function properties for __internal_trig_reduction_slowpathd
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Compiling entry function 'k2' for 'sm_90'
            ptxas info    : Function properties for k2
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 40 registers
            """;
        var r = NvrtcCompiler.ParseResources(log);
        Assert.Equal(new KernelResources("k1", true, 24, 1584, 48, 8, 4), r[0]);
        Assert.Equal(new KernelResources("__internal_trig_reduction_slowpathd", false, 0, 0, 0, 0, 0), r[1]);
        Assert.Equal(new KernelResources("k2", true, 40, 0, 0, 0, 0), r[2]);
    }
}
