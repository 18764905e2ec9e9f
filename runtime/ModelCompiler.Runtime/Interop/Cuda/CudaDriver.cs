using System;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime.Interop.Cuda;

/// <summary>
/// The CUDA driver API (libcuda.so.1), the subset the runtime uses: init, device and primary context,
/// modules from cubin or PTX, memory, streams, events, launches and graphs (capture, instantiate, launch,
/// exec update). Entry points are the _v2/_v3 names the driver's header maps the plain names to. Every
/// call goes through <see cref="Check"/>.
/// </summary>
internal static partial class CudaDriver
{
    static CudaDriver() => NativeLibraries.EnsureResolver();

    internal const int Success = 0;
    internal const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    internal const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    internal const int CU_STREAM_NON_BLOCKING = 1;
    internal const int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuInit")] internal static partial int Init(uint flags);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDriverGetVersion")] internal static partial int DriverGetVersion(out int version);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuGetErrorName")] internal static partial int GetErrorName(int error, out nint name);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuGetErrorString")] internal static partial int GetErrorString(int error, out nint description);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDeviceGetCount")] internal static partial int DeviceGetCount(out int count);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDeviceGet")] internal static partial int DeviceGet(out int device, int ordinal);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDeviceGetName")] internal static unsafe partial int DeviceGetName(byte* name, int length, int device);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDeviceGetAttribute")] internal static partial int DeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRetain")] internal static partial int DevicePrimaryCtxRetain(out nint context, int device);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] internal static partial int DevicePrimaryCtxRelease(int device);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuCtxSetCurrent")] internal static partial int CtxSetCurrent(nint context);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuCtxSynchronize")] internal static partial int CtxSynchronize();

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuModuleLoadData")] internal static unsafe partial int ModuleLoadData(out nint module, byte* image);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuModuleUnload")] internal static partial int ModuleUnload(nint module);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuModuleGetFunction", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int ModuleGetFunction(out nint function, nint module, string name);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemAlloc_v2")] internal static partial int MemAlloc(out ulong pointer, nuint sizeInBytes);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemFree_v2")] internal static partial int MemFree(ulong pointer);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyHtoDAsync_v2")] internal static unsafe partial int MemcpyHtoDAsync(ulong destination, void* source, nuint sizeInBytes, nint stream);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoHAsync_v2")] internal static unsafe partial int MemcpyDtoHAsync(void* destination, ulong source, nuint sizeInBytes, nint stream);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoDAsync_v2")] internal static partial int MemcpyDtoDAsync(ulong destination, ulong source, nuint sizeInBytes, nint stream);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemsetD8Async")] internal static partial int MemsetD8Async(ulong destination, byte value, nuint count, nint stream);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamCreate")] internal static partial int StreamCreate(out nint stream, uint flags);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamDestroy_v2")] internal static partial int StreamDestroy(nint stream);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamSynchronize")] internal static partial int StreamSynchronize(nint stream);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventCreate")] internal static partial int EventCreate(out nint @event, uint flags);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventRecord")] internal static partial int EventRecord(nint @event, nint stream);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventSynchronize")] internal static partial int EventSynchronize(nint @event);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventElapsedTime")] internal static partial int EventElapsedTime(out float milliseconds, nint start, nint end);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventDestroy_v2")] internal static partial int EventDestroy(nint @event);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuLaunchKernel")]
    internal static unsafe partial int LaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemoryBytes, nint stream, void** kernelParams, void** extra);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamBeginCapture_v2")] internal static partial int StreamBeginCapture(nint stream, int mode);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamEndCapture")] internal static partial int StreamEndCapture(nint stream, out nint graph);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuGraphInstantiateWithFlags")] internal static partial int GraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuGraphLaunch")] internal static partial int GraphLaunch(nint graphExec, nint stream);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuGraphExecUpdate_v2")] internal static partial int GraphExecUpdate(nint graphExec, nint graph, out GraphExecUpdateResultInfo resultInfo);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuGraphDestroy")] internal static partial int GraphDestroy(nint graph);
    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuGraphExecDestroy")] internal static partial int GraphExecDestroy(nint graphExec);

    /// <summary>CUgraphExecUpdateResultInfo (CUDA 12's cuGraphExecUpdate_v2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct GraphExecUpdateResultInfo
    {
        public int Result;
        public nint ErrorNode;
        public nint ErrorFromNode;
    }

    /// <summary>Throws a <see cref="CudaException"/> naming <paramref name="call"/> and the driver's error name and text unless success.</summary>
    internal static void Check(int result, string call)
    {
        if (result == Success) return;
        string description;
        try
        {
            string name = GetErrorName(result, out nint n) == Success ? Marshal.PtrToStringUTF8(n) ?? "" : "";
            string text = GetErrorString(result, out nint s) == Success ? Marshal.PtrToStringUTF8(s) ?? "" : "";
            description = name.Length == 0 && text.Length == 0 ? "unknown error" : name + ": " + text;
        }
        catch (Exception) { description = "unknown error"; }
        throw new CudaException(call, result, description);
    }
}

/// <summary>Device memory from cuMemAlloc, freed on dispose.</summary>
internal sealed class CudaDeviceMemoryHandle : SafeHandle
{
    public CudaDeviceMemoryHandle(ulong pointer) : base(0, ownsHandle: true) => SetHandle((nint)pointer);
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.MemFree((ulong)handle) == CudaDriver.Success;
}

/// <summary>A loaded module, unloaded on dispose.</summary>
internal sealed class CudaModuleHandle : SafeHandle
{
    public CudaModuleHandle(nint module) : base(0, ownsHandle: true) => SetHandle(module);
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.ModuleUnload(handle) == CudaDriver.Success;
}

/// <summary>A stream, destroyed on dispose.</summary>
internal sealed class CudaStreamHandle : SafeHandle
{
    public CudaStreamHandle(nint stream) : base(0, ownsHandle: true) => SetHandle(stream);
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.StreamDestroy(handle) == CudaDriver.Success;
}

/// <summary>An instantiated graph, destroyed on dispose.</summary>
internal sealed class CudaGraphExecHandle : SafeHandle
{
    public CudaGraphExecHandle(nint graphExec) : base(0, ownsHandle: true) => SetHandle(graphExec);
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => CudaDriver.GraphExecDestroy(handle) == CudaDriver.Success;
}
