using System;

namespace ModelCompiler.Runtime.Cuda;

/// <summary>An address in device memory (a CUdeviceptr on a GPU, a host address in the emulator).</summary>
public readonly record struct DevicePointer(ulong Address)
{
    /// <summary>The pointer <paramref name="bytes"/> further on.</summary>
    public DevicePointer Offset(long bytes) => new(Address + (ulong)bytes);
}

/// <summary>Grid or block dimensions of a launch.</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1);

/// <summary>
/// One kernel argument, by value as the kernel declares it: a device pointer, an int or a float. Launches
/// pass arguments as the driver API does (an array of pointers to the values), so the emulator and the
/// GPU see the same ABI.
/// </summary>
public readonly struct KernelArg
{
    private KernelArg(ulong bits, int sizeInBytes) { Bits = bits; SizeInBytes = sizeInBytes; }

    /// <summary>The value's bits (little-endian, low bytes used).</summary>
    public ulong Bits { get; }
    /// <summary>4 or 8.</summary>
    public int SizeInBytes { get; }

    /// <summary>A pointer argument (<c>T*</c>).</summary>
    public static KernelArg Pointer(DevicePointer p) => new(p.Address, 8);
    /// <summary>An <c>int</c> argument.</summary>
    public static KernelArg Int(int value) => new((uint)value, 4);
    /// <summary>A <c>float</c> argument.</summary>
    public static KernelArg Float(float value) => new(BitConverter.SingleToUInt32Bits(value), 4);
}

/// <summary>A compiled module (a cubin/PTX on a GPU, a shared library in the emulator).</summary>
public interface ICudaModule : IDisposable
{
    /// <summary>True when the module has a kernel of that name.</summary>
    bool HasKernel(string name);
}

/// <summary>A captured sequence of launches that can be replayed (a CUDA graph, or a recorded launch list).</summary>
public interface ICudaGraph : IDisposable;

/// <summary>
/// What the CUDA backend needs from a device, implemented twice: over the driver API (libcuda) on a real
/// GPU, and over the CPU emulator that runs the same generated CUDA source compiled with g++. Everything
/// above this interface (weight upload, the launch plan, block tables, graph capture) is shared.
/// </summary>
public interface ICudaDevice : IDisposable
{
    /// <summary>For messages: the GPU's name, or "CUDA emulator (g++)".</summary>
    string Name { get; }
    /// <summary>Compute capability (major, minor) the modules are compiled for.</summary>
    (int Major, int Minor) ComputeCapability { get; }

    /// <summary>Allocates device memory (256-byte aligned).</summary>
    DevicePointer Allocate(long sizeInBytes);
    /// <summary>Frees memory from <see cref="Allocate"/>.</summary>
    void Free(DevicePointer pointer);
    /// <summary>Host → device copy.</summary>
    void CopyToDevice(DevicePointer destination, ReadOnlySpan<byte> source);
    /// <summary>Device → host copy (waits for preceding work).</summary>
    void CopyToHost(Span<byte> destination, DevicePointer source);
    /// <summary>
    /// Device → device copy of <paramref name="sizeInBytes"/> bytes, enqueued in order with the launches
    /// (the KV pool's copy-on-write block copies); not allowed during a capture.
    /// </summary>
    void CopyOnDevice(DevicePointer destination, DevicePointer source, long sizeInBytes);
    /// <summary>Sets <paramref name="sizeInBytes"/> bytes to <paramref name="value"/>.</summary>
    void Memset(DevicePointer destination, byte value, long sizeInBytes);

    /// <summary>Compiles (or takes from the on-disk cache) <paramref name="cudaSource"/> and loads it.</summary>
    ICudaModule LoadModule(string cudaSource, string moduleName);

    /// <summary>Enqueues kernel <paramref name="kernel"/> of <paramref name="module"/> on the device's stream.</summary>
    void Launch(ICudaModule module, string kernel, Dim3 grid, Dim3 block, int sharedMemoryBytes, ReadOnlySpan<KernelArg> args);

    /// <summary>Waits for all enqueued work.</summary>
    void Synchronize();

    /// <summary>Starts recording launches instead of running them.</summary>
    void BeginCapture();
    /// <summary>Stops recording; the launches become a graph.</summary>
    ICudaGraph EndCapture();
    /// <summary>Replays a captured graph (device pointers inside it are fixed; inputs change through the memory they point to).</summary>
    void Replay(ICudaGraph graph);
}
