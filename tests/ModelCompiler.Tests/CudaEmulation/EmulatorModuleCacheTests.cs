using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Cuda.Emulation;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>The on-disk module cache and the compile-error path, each in a fresh cache folder.</summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatorModuleCacheTests : IDisposable
{
    private readonly string _cacheDirectory = Path.Combine(Path.GetTempPath(), "modelcompiler-tests", "emulator-cache-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_cacheDirectory)) Directory.Delete(_cacheDirectory, recursive: true);
    }

    [Fact]
    public void A_second_load_of_the_same_source_takes_the_cached_library()
    {
        string source = """
            extern "C" __global__ void fill(float* out, float value) { out[threadIdx.x] = value; }
            MC_EXPORT(fill)
            """ + $"// {Guid.NewGuid()}\n";   // never cached before this test

        int before = CudaEmulatorDevice.NumCompilations;
        using (var device = new CudaEmulatorDevice(_cacheDirectory))
        using (ICudaModule module = device.LoadModule(source, "cache test"))
            Assert.True(module.HasKernel("fill"));
        Assert.Equal(before + 1, CudaEmulatorDevice.NumCompilations);
        string library = Assert.Single(Directory.GetFiles(_cacheDirectory, "*.so"));
        Assert.StartsWith("cache_test-", Path.GetFileName(library));
        DateTime written = File.GetLastWriteTimeUtc(library);

        using (var device = new CudaEmulatorDevice(_cacheDirectory))   // "a second start"
        using (ICudaModule module = device.LoadModule(source, "cache test"))
        {
            DevicePointer p = device.Allocate(4 * 4);
            device.Launch(module, "fill", new Dim3(1), new Dim3(4), 0, [KernelArg.Pointer(p), KernelArg.Float(1.5f)]);
            var values = new float[4];
            device.CopyToHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), p);
            Assert.All(values, v => Assert.Equal(1.5f, v));
        }
        Assert.Equal(before + 1, CudaEmulatorDevice.NumCompilations);
        Assert.Equal(written, File.GetLastWriteTimeUtc(library));
        Assert.Single(Directory.GetFiles(_cacheDirectory, "*.so"));
    }

    [Fact]
    public void A_compile_error_names_the_source_and_the_log()
    {
        using var device = new CudaEmulatorDevice(_cacheDirectory);
        const string source = """
            extern "C" __global__ void broken(float* out) { out[threadIdx.x] = undeclared_name; }
            MC_EXPORT(broken)
            """;
        var e = Assert.Throws<EmulatorCompileException>(() => device.LoadModule(source, "broken"));
        Assert.Contains(e.LogPath, e.Message);
        Assert.Contains(e.SourcePath, e.Message);
        Assert.Contains("undeclared_name", File.ReadAllText(e.LogPath));
        Assert.Equal(source, File.ReadAllText(e.SourcePath));
        Assert.Empty(Directory.GetFiles(_cacheDirectory, "*.so"));
    }
}
