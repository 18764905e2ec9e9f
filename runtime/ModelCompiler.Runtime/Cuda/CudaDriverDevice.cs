using System;
using System.Collections.Generic;
using System.Text;
using ModelCompiler.Runtime.Interop.Cuda;

namespace ModelCompiler.Runtime.Cuda;

/// <summary>
/// An <see cref="ICudaDevice"/> on a real GPU through the driver API (libcuda.so.1): the device's primary
/// context, modules from the cubin NVRTC compiles for the device's compute capability (through
/// <see cref="NvrtcCompiler"/>'s on-disk cache), <c>cuMemAlloc</c> memory, one non-blocking stream that
/// every copy and launch goes to, and graphs captured from that stream, instantiated and launched on it.
/// Create it with <see cref="TryCreate"/>, which probes without throwing.
/// </summary>
/// <remarks>
/// Not verified on a GPU in this repository's CI (it has none); the emulator drives the same
/// <see cref="ICudaDevice"/> contract. One caller at a time; every call makes the context current on
/// the calling thread first.
/// </remarks>
public sealed unsafe class CudaDriverDevice : ICudaDevice
{
    private readonly int _ordinal;
    private readonly nint _context;
    private readonly CudaStreamHandle _stream;
    private readonly NvrtcCompiler _compiler;
    private readonly HashSet<ulong> _allocations = [];
    private List<LaunchShape>? _captureShapes;
    private bool _disposed;

    private CudaDriverDevice(int ordinal, nint context, string name, (int, int) computeCapability, string? cacheDirectory)
    {
        _ordinal = ordinal;
        _context = context;
        Name = name;
        ComputeCapability = computeCapability;
        _compiler = new NvrtcCompiler(cacheDirectory);
        CudaDriver.Check(CudaDriver.StreamCreate(out nint stream, CudaDriver.CU_STREAM_NON_BLOCKING), "cuStreamCreate");
        _stream = new CudaStreamHandle(stream);
    }

    /// <summary>
    /// Opens GPU <paramref name="ordinal"/>: false with a one-line <paramref name="reason"/> when the driver
    /// library is missing, <c>cuInit</c> fails, there is no such device or NVRTC is missing. Never throws.
    /// </summary>
    /// <param name="device">The device, or null.</param>
    /// <param name="reason">Why no device is usable (empty on success).</param>
    /// <param name="ordinal">Which GPU (0 is the first).</param>
    /// <param name="cacheDirectory">NVRTC's cache folder (default: <see cref="NvrtcCompiler.DefaultCacheDirectory"/>).</param>
    public static bool TryCreate(out CudaDriverDevice? device, out string reason, int ordinal = 0, string? cacheDirectory = null)
    {
        device = null;
        try
        {
            if (!NativeLibraries.IsDriverAvailable())
            {
                reason = "no CUDA driver (libcuda.so.1 could not be loaded)";
                return false;
            }
            int result = CudaDriver.Init(0);
            if (result != CudaDriver.Success)
            {
                reason = $"cuInit failed ({ErrorName(result)})";
                return false;
            }
            result = CudaDriver.DeviceGetCount(out int count);
            if (result != CudaDriver.Success || count == 0)
            {
                reason = result != CudaDriver.Success ? $"cuDeviceGetCount failed ({ErrorName(result)})" : "no CUDA device found";
                return false;
            }
            if (ordinal < 0 || ordinal >= count)
            {
                reason = $"CUDA device {ordinal} does not exist ({count} found)";
                return false;
            }
            if (!NvrtcCompiler.IsAvailable(out string nvrtcReason))
            {
                reason = nvrtcReason;
                return false;
            }
            CudaDriver.Check(CudaDriver.DeviceGet(out int handle, ordinal), "cuDeviceGet");
            CudaDriver.Check(CudaDriver.DeviceGetAttribute(out int major, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, handle), "cuDeviceGetAttribute");
            CudaDriver.Check(CudaDriver.DeviceGetAttribute(out int minor, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, handle), "cuDeviceGetAttribute");
            var nameBytes = new byte[256];
            fixed (byte* p = nameBytes) CudaDriver.Check(CudaDriver.DeviceGetName(p, nameBytes.Length, handle), "cuDeviceGetName");
            int length = Array.IndexOf(nameBytes, (byte)0);
            string name = Encoding.UTF8.GetString(nameBytes, 0, length < 0 ? nameBytes.Length : length);
            CudaDriver.Check(CudaDriver.DevicePrimaryCtxRetain(out nint context, handle), "cuDevicePrimaryCtxRetain");
            try
            {
                CudaDriver.Check(CudaDriver.CtxSetCurrent(context), "cuCtxSetCurrent");
                device = new CudaDriverDevice(handle, context, name, (major, minor), cacheDirectory);
            }
            catch
            {
                CudaDriver.DevicePrimaryCtxRelease(handle);
                throw;
            }
            reason = "";
            return true;
        }
        catch (Exception e)
        {
            // DllNotFoundException, EntryPointNotFoundException (a driver older than CUDA 12), CudaException…
            device = null;
            reason = "CUDA unusable: " + e.Message.Split('\n')[0].Trim();
            return false;
        }
    }

    /// <inheritdoc/>
    public string Name { get; }

    /// <summary>What the last module was built for: <c>sm_90</c> (a cubin), or <c>compute_80</c> (PTX JIT-compiled by the driver); null before the first.</summary>
    public string? ModuleTarget { get; private set; }

    /// <inheritdoc/>
    public (int Major, int Minor) ComputeCapability { get; }

    /// <inheritdoc/>
    public DevicePointer Allocate(long sizeInBytes)
    {
        Enter();
        ArgumentOutOfRangeException.ThrowIfNegative(sizeInBytes);
        CudaDriver.Check(CudaDriver.MemAlloc(out ulong pointer, (nuint)Math.Max(sizeInBytes, 1)), "cuMemAlloc");
        _allocations.Add(pointer);
        return new DevicePointer(pointer);
    }

    /// <inheritdoc/>
    public void Free(DevicePointer pointer)
    {
        if (pointer.Address == 0) return;
        Enter();
        if (!_allocations.Remove(pointer.Address)) throw new ArgumentException($"0x{pointer.Address:x} was not allocated by this device (or was freed).", nameof(pointer));
        CudaDriver.Check(CudaDriver.StreamSynchronize(_stream.DangerousGetHandle()), "cuStreamSynchronize");
        CudaDriver.Check(CudaDriver.MemFree(pointer.Address), "cuMemFree");
    }

    /// <inheritdoc/>
    public void CopyToDevice(DevicePointer destination, ReadOnlySpan<byte> source)
    {
        Enter();
        if (source.Length == 0) return;
        // From pageable memory the call returns once the bytes are staged, so the span may go away after it.
        fixed (byte* p = source)
            CudaDriver.Check(CudaDriver.MemcpyHtoDAsync(destination.Address, p, (nuint)source.Length, _stream.DangerousGetHandle()), "cuMemcpyHtoDAsync");
    }

    /// <inheritdoc/>
    public void CopyToHost(Span<byte> destination, DevicePointer source)
    {
        Enter();
        if (destination.Length == 0) return;
        fixed (byte* p = destination)
        {
            CudaDriver.Check(CudaDriver.MemcpyDtoHAsync(p, source.Address, (nuint)destination.Length, _stream.DangerousGetHandle()), "cuMemcpyDtoHAsync");
            CudaDriver.Check(CudaDriver.StreamSynchronize(_stream.DangerousGetHandle()), "cuStreamSynchronize");
        }
    }

    /// <inheritdoc/>
    public void CopyOnDevice(DevicePointer destination, DevicePointer source, long sizeInBytes)
    {
        Enter();
        ArgumentOutOfRangeException.ThrowIfNegative(sizeInBytes);
        if (_captureShapes is not null) throw new InvalidOperationException("Device copies are not captured into graphs.");
        if (sizeInBytes == 0) return;
        CudaDriver.Check(CudaDriver.MemcpyDtoDAsync(destination.Address, source.Address, (nuint)sizeInBytes, _stream.DangerousGetHandle()), "cuMemcpyDtoDAsync");
    }

    /// <inheritdoc/>
    public void Memset(DevicePointer destination, byte value, long sizeInBytes)
    {
        Enter();
        CudaDriver.Check(CudaDriver.MemsetD8Async(destination.Address, value, (nuint)sizeInBytes, _stream.DangerousGetHandle()), "cuMemsetD8Async");
    }

    /// <summary>
    /// Compiles <paramref name="cudaSource"/> with NVRTC for this device's compute capability (or takes it from
    /// the cache) and loads it: a cubin for <c>sm_XY</c>, or, when the NVRTC found predates this GPU, PTX for the
    /// newest <c>compute_XY</c> it knows, which the driver JIT-compiles (<see cref="ModuleTarget"/> says which).
    /// </summary>
    public ICudaModule LoadModule(string cudaSource, string moduleName)
    {
        Enter();
        CompiledCudaModule compiled = _compiler.Compile(cudaSource, moduleName, ComputeCapability.Major, ComputeCapability.Minor);
        nint module;
        // A cubin, or PTX (NUL-terminated) when NVRTC does not know this GPU: then the driver JIT-compiles it here.
        fixed (byte* image = compiled.Image) CudaDriver.Check(CudaDriver.ModuleLoadData(out module, image), "cuModuleLoadData");
        ModuleTarget = compiled.Architecture;
        return new DriverModule(moduleName, new CudaModuleHandle(module));
    }

    /// <inheritdoc/>
    public void Launch(ICudaModule module, string kernel, Dim3 grid, Dim3 block, int sharedMemoryBytes, ReadOnlySpan<KernelArg> args)
    {
        Enter();
        if (module is not DriverModule driverModule) throw new ArgumentException("The module was not loaded by this CUDA device.", nameof(module));
        nint function = driverModule.Function(kernel);
        // The driver API's ABI: an array of pointers, each at one parameter's value (4-byte values in the
        // low bytes of an 8-byte slot). cuLaunchKernel copies the values, also into a captured graph.
        int n = args.Length;
        ulong* values = stackalloc ulong[Math.Max(n, 1)];
        void** pointers = stackalloc void*[Math.Max(n, 1)];
        for (int i = 0; i < n; i++)
        {
            values[i] = args[i].Bits;
            pointers[i] = &values[i];
        }
        CudaDriver.Check(CudaDriver.LaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedMemoryBytes,
            _stream.DangerousGetHandle(), pointers, null), "cuLaunchKernel(" + kernel + ")");
        _captureShapes?.Add(new LaunchShape(function, grid, block, sharedMemoryBytes));
    }

    /// <inheritdoc/>
    public void Synchronize()
    {
        Enter();
        CudaDriver.Check(CudaDriver.StreamSynchronize(_stream.DangerousGetHandle()), "cuStreamSynchronize");
    }

    /// <summary>Starts capturing the stream's work (thread-local capture mode).</summary>
    public void BeginCapture()
    {
        Enter();
        if (_captureShapes is not null) throw new InvalidOperationException("A capture is already in progress.");
        CudaDriver.Check(CudaDriver.StreamBeginCapture(_stream.DangerousGetHandle(), CudaDriver.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
        _captureShapes = [];
    }

    /// <summary>Ends the capture and instantiates the graph.</summary>
    public ICudaGraph EndCapture() => EndCapture(reuse: null);

    /// <summary>
    /// Ends the capture. When <paramref name="reuse"/> (a graph from this device) was captured with the same
    /// launch shapes (kernels, grids, blocks, shared memory), its executable graph is updated in place with
    /// the new capture's arguments (<c>cuGraphExecUpdate</c>) and <paramref name="reuse"/> is returned;
    /// otherwise the capture is instantiated as a new graph.
    /// </summary>
    public ICudaGraph EndCapture(ICudaGraph? reuse)
    {
        Enter();
        List<LaunchShape> shapes = _captureShapes ?? throw new InvalidOperationException("EndCapture without BeginCapture.");
        _captureShapes = null;
        CudaDriver.Check(CudaDriver.StreamEndCapture(_stream.DangerousGetHandle(), out nint graph), "cuStreamEndCapture");
        try
        {
            if (reuse is DriverGraph old && !old.IsDisposed && SameShapes(old.Shapes, shapes)
                && CudaDriver.GraphExecUpdate(old.Exec.DangerousGetHandle(), graph, out _) == CudaDriver.Success)
                return old;
            CudaDriver.Check(CudaDriver.GraphInstantiateWithFlags(out nint exec, graph, 0), "cuGraphInstantiateWithFlags");
            return new DriverGraph(new CudaGraphExecHandle(exec), shapes);
        }
        finally
        {
            CudaDriver.GraphDestroy(graph);
        }
    }

    /// <inheritdoc/>
    public void Replay(ICudaGraph graph)
    {
        Enter();
        if (graph is not DriverGraph driverGraph) throw new ArgumentException("The graph was not captured by this CUDA device.", nameof(graph));
        ObjectDisposedException.ThrowIf(driverGraph.IsDisposed, graph);
        CudaDriver.Check(CudaDriver.GraphLaunch(driverGraph.Exec.DangerousGetHandle(), _stream.DangerousGetHandle()), "cuGraphLaunch");
    }

    /// <summary>Waits for the stream, frees what is still allocated, destroys the stream and releases the primary context.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        CudaDriver.CtxSetCurrent(_context);
        CudaDriver.StreamSynchronize(_stream.DangerousGetHandle());
        foreach (ulong p in _allocations) CudaDriver.MemFree(p);
        _allocations.Clear();
        _stream.Dispose();
        CudaDriver.DevicePrimaryCtxRelease(_ordinal);
        _disposed = true;
    }

    private void Enter()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CudaDriver.Check(CudaDriver.CtxSetCurrent(_context), "cuCtxSetCurrent");
    }

    private static bool SameShapes(List<LaunchShape> a, List<LaunchShape> b)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++) if (a[i] != b[i]) return false;
        return true;
    }

    private static string ErrorName(int result)
    {
        try
        {
            return CudaDriver.GetErrorName(result, out nint name) == CudaDriver.Success
                ? System.Runtime.InteropServices.Marshal.PtrToStringUTF8(name) ?? $"error {result}"
                : $"error {result}";
        }
        catch (Exception)
        {
            return $"error {result}";
        }
    }

    private readonly record struct LaunchShape(nint Function, Dim3 Grid, Dim3 Block, int SharedMemoryBytes);

    private sealed class DriverModule(string name, CudaModuleHandle handle) : ICudaModule
    {
        private readonly Dictionary<string, nint> _functions = new(StringComparer.Ordinal);

        public string Name { get; } = name;

        public bool HasKernel(string kernel) => TryGetFunction(kernel, out _);

        public nint Function(string kernel) =>
            TryGetFunction(kernel, out nint f) ? f : throw new ArgumentException($"Module '{Name}' has no kernel '{kernel}'.", nameof(kernel));

        private bool TryGetFunction(string kernel, out nint function)
        {
            ObjectDisposedException.ThrowIf(handle.IsClosed, this);
            if (_functions.TryGetValue(kernel, out function)) return true;
            if (CudaDriver.ModuleGetFunction(out function, handle.DangerousGetHandle(), kernel) != CudaDriver.Success) return false;
            _functions[kernel] = function;
            return true;
        }

        public void Dispose() => handle.Dispose();
    }

    private sealed class DriverGraph(CudaGraphExecHandle exec, List<LaunchShape> shapes) : ICudaGraph
    {
        public CudaGraphExecHandle Exec { get; } = exec;
        public List<LaunchShape> Shapes { get; } = shapes;
        public bool IsDisposed => Exec.IsClosed;
        public void Dispose() => Exec.Dispose();
    }
}
