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

    public void Dispose() => Device.Dispose();
}
