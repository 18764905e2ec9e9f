using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Cuda.Emulation;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>Emulator tests run one after another: the compile counter and the launch lock are process-wide.</summary>
[CollectionDefinition(Name)]
public sealed class EmulatorCollection
{
    public const string Name = "CUDA emulator";
}

/// <summary>A device with a cache folder under the temp directory, so that a second test run reuses the compiled modules.</summary>
public sealed class EmulatorFixture : IDisposable
{
    public static string SharedCacheDirectory => Path.Combine(Path.GetTempPath(), "modelcompiler-tests", "emulator");

    public CudaEmulatorDevice Device { get; } = new(SharedCacheDirectory);

    public DevicePointer Upload<T>(T[] data) where T : unmanaged
    {
        ReadOnlySpan<byte> bytes = MemoryMarshal.AsBytes(data.AsSpan());
        DevicePointer pointer = Device.Allocate(bytes.Length);
        Device.CopyToDevice(pointer, bytes);
        return pointer;
    }

    public void Write<T>(DevicePointer pointer, T[] data) where T : unmanaged => Device.CopyToDevice(pointer, MemoryMarshal.AsBytes(data.AsSpan()));

    public DevicePointer Allocate<T>(int count) where T : unmanaged => Device.Allocate((long)count * Marshal.SizeOf<T>());

    public T[] Download<T>(DevicePointer pointer, int count) where T : unmanaged
    {
        var result = new T[count];
        Device.CopyToHost(MemoryMarshal.AsBytes(result.AsSpan()), pointer);
        return result;
    }

    public void Free(params DevicePointer[] pointers)
    {
        foreach (var p in pointers) Device.Free(p);
    }

    /// <summary>Uniform values in [-scale, scale), the same for a seed on every run.</summary>
    public static float[] Random(int n, int seed, float scale)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

    /// <summary>The plan's only launch whose kernel name starts with <paramref name="prefix"/> and ends with <paramref name="suffix"/>, with exactly these argument kinds.</summary>
    public static CudaLaunch FindLaunch(CudaLaunchPlan plan, string prefix, string suffix, params CudaArgKind[] kinds) =>
        WithKinds(plan.Launches.Single(l => Matches(l, prefix, suffix)), kinds);

    /// <summary>The first of several such launches (a kernel the plan launches once per layer or block).</summary>
    public static CudaLaunch FirstLaunch(CudaLaunchPlan plan, string prefix, string suffix, params CudaArgKind[] kinds) =>
        WithKinds(plan.Launches.First(l => Matches(l, prefix, suffix)), kinds);

    private static bool Matches(CudaLaunch launch, string prefix, string suffix) =>
        launch.Kernel.StartsWith(prefix, StringComparison.Ordinal) && launch.Kernel.EndsWith(suffix, StringComparison.Ordinal);

    private static CudaLaunch WithKinds(CudaLaunch launch, CudaArgKind[] kinds)
    {
        Assert.Equal(kinds, launch.Args.Select(a => a.Kind).ToArray());
        return launch;
    }

    public void Dispose() => Device.Dispose();
}
