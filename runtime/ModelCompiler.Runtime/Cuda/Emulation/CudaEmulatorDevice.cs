using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;
using System.Threading;

namespace ModelCompiler.Runtime.Cuda.Emulation;

/// <summary>
/// An <see cref="ICudaDevice"/> that runs the generated CUDA source on the CPU: modules are compiled with
/// g++ together with <c>mc_emulation.h</c> (threads of a block as cooperative fibers, so barriers,
/// shuffles and votes behave as on a GPU), device memory is host memory, launches run synchronously on
/// the calling thread, and a captured graph is the list of its launches. It exists so that the CUDA
/// backend (launch plan, device memory, block tables, graph capture) is tested where no GPU is.
/// </summary>
/// <remarks>
/// Device memory is filled with 0xFF bytes when allocated (NaN as floats, -1 as ints), as a GPU leaves it
/// uninitialised, so that reading memory nothing wrote shows up in the results. One caller at a time.
/// </remarks>
public sealed unsafe class CudaEmulatorDevice : ICudaDevice
{
    // The emulator keeps per-library scheduler state in statics: launches from several devices or threads
    // take turns.
    private static readonly Lock s_launchLock = new();

    private readonly EmulatorCompiler _compiler;
    private readonly Dictionary<ulong, long> _allocations = [];
    private List<RecordedLaunch>? _capture;
    private bool _disposed;

    /// <summary>Creates an emulator device.</summary>
    /// <param name="cacheDirectory">Where compiled modules are cached; by default
    /// <c>$XDG_CACHE_HOME/modelcompiler/emulator</c> (or <c>~/.cache/modelcompiler/emulator</c>).</param>
    /// <param name="compiler">The C++ compiler to run (g++ 12 or later).</param>
    public CudaEmulatorDevice(string? cacheDirectory = null, string compiler = "g++")
    {
        _compiler = new EmulatorCompiler(cacheDirectory ?? DefaultCacheDirectory(), compiler);
    }

    /// <inheritdoc/>
    public string Name => "CUDA emulator (g++)";

    /// <summary>The emulator follows sm_80's rules (independent thread scheduling, exited threads leave barriers).</summary>
    public (int Major, int Minor) ComputeCapability => (8, 0);

    /// <summary>Where compiled modules (source, log, shared library) are kept.</summary>
    public string CacheDirectory => _compiler.CacheDirectory;

    /// <summary>How many modules g++ has compiled in this process, over all devices (a cached module does not count).</summary>
    public static int NumCompilations => EmulatorCompiler.NumCompilations;

    /// <summary>The emulation header that is prepended to every module (what g++ sees with <c>-include</c>).</summary>
    public string EmulationHeader => _compiler.HeaderText;

    /// <inheritdoc/>
    public DevicePointer Allocate(long sizeInBytes)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(sizeInBytes);
        nuint size = (nuint)Math.Max(sizeInBytes, 1);
        void* memory = NativeMemory.AlignedAlloc(size, 256);
        if (memory == null) throw new OutOfMemoryException($"The CUDA emulator could not allocate {sizeInBytes} bytes.");
        NativeMemory.Fill(memory, size, 0xFF);
        _allocations.Add((ulong)memory, sizeInBytes);
        return new DevicePointer((ulong)memory);
    }

    /// <inheritdoc/>
    public void Free(DevicePointer pointer)
    {
        if (pointer.Address == 0) return;
        if (!_allocations.Remove(pointer.Address)) throw new ArgumentException($"0x{pointer.Address:x} was not allocated by this device (or was freed).", nameof(pointer));
        NativeMemory.AlignedFree((void*)pointer.Address);
    }

    /// <inheritdoc/>
    public void CopyToDevice(DevicePointer destination, ReadOnlySpan<byte> source)
    {
        CheckPointer(destination);
        source.CopyTo(new Span<byte>((void*)destination.Address, source.Length));
    }

    /// <inheritdoc/>
    public void CopyToHost(Span<byte> destination, DevicePointer source)
    {
        CheckPointer(source);
        new ReadOnlySpan<byte>((void*)source.Address, destination.Length).CopyTo(destination);
    }

    /// <inheritdoc/>
    public void CopyOnDevice(DevicePointer destination, DevicePointer source, long sizeInBytes)
    {
        CheckPointer(destination);
        CheckPointer(source);
        ArgumentOutOfRangeException.ThrowIfNegative(sizeInBytes);
        if (_capture is not null) throw new InvalidOperationException("Device copies are not captured into graphs.");
        // Launches run synchronously, so the copy is ordered after every earlier launch already.
        Buffer.MemoryCopy((void*)source.Address, (void*)destination.Address, sizeInBytes, sizeInBytes);
    }

    /// <inheritdoc/>
    public void Memset(DevicePointer destination, byte value, long sizeInBytes)
    {
        CheckPointer(destination);
        NativeMemory.Fill((void*)destination.Address, (nuint)sizeInBytes, value);
    }

    /// <inheritdoc/>
    public ICudaModule LoadModule(string cudaSource, string moduleName)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        string libraryPath = _compiler.GetOrCompile(cudaSource, moduleName);
        return new EmulatorModule(moduleName, libraryPath);
    }

    /// <inheritdoc/>
    public void Launch(ICudaModule module, string kernel, Dim3 grid, Dim3 block, int sharedMemoryBytes, ReadOnlySpan<KernelArg> args)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (module is not EmulatorModule emulatorModule) throw new ArgumentException("The module was not loaded by the CUDA emulator.", nameof(module));
        EmulatorKernel found = emulatorModule.TryGetKernel(kernel)
            ?? throw new ArgumentException($"Module '{emulatorModule.Name}' has no kernel '{kernel}' (no MC_EXPORT({kernel}) in its source?).", nameof(kernel));
        CheckArguments(found, args);
        ArgumentOutOfRangeException.ThrowIfNegative(sharedMemoryBytes);
        if (_capture is not null)
        {
            _capture.Add(new RecordedLaunch(found, grid, block, sharedMemoryBytes, args.ToArray()));
            return;
        }
        Run(found, grid, block, sharedMemoryBytes, args);
    }

    /// <summary>Launches run synchronously: nothing to wait for.</summary>
    public void Synchronize() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <inheritdoc/>
    public void BeginCapture()
    {
        if (_capture is not null) throw new InvalidOperationException("A capture is already in progress.");
        _capture = [];
    }

    /// <inheritdoc/>
    public ICudaGraph EndCapture()
    {
        List<RecordedLaunch> launches = _capture ?? throw new InvalidOperationException("EndCapture without BeginCapture.");
        _capture = null;
        return new EmulatorGraph(launches);
    }

    /// <inheritdoc/>
    public void Replay(ICudaGraph graph)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (graph is not EmulatorGraph emulatorGraph) throw new ArgumentException("The graph was not captured by the CUDA emulator.", nameof(graph));
        ObjectDisposedException.ThrowIf(emulatorGraph.IsDisposed, graph);
        if (_capture is not null) throw new InvalidOperationException("Replaying a graph during a capture is not supported.");
        foreach (RecordedLaunch launch in emulatorGraph.Launches)
        {
            ObjectDisposedException.ThrowIf(launch.Kernel.Module.IsDisposed, launch.Kernel.Module);
            Run(launch.Kernel, launch.Grid, launch.Block, launch.SharedMemoryBytes, launch.Args);
        }
    }

    /// <summary>Frees every allocation that is still live.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        foreach (ulong address in _allocations.Keys) NativeMemory.AlignedFree((void*)address);
        _allocations.Clear();
        _disposed = true;
    }

    // The driver API's ABI: an array of pointers, each at the value of one parameter. A 4-byte value sits
    // in the low bytes of its 8-byte slot (little-endian), so the kernel reads it from the slot's address.
    private static void Run(EmulatorKernel kernel, Dim3 grid, Dim3 block, int sharedMemoryBytes, ReadOnlySpan<KernelArg> args)
    {
        int n = args.Length;
        ulong* values = stackalloc ulong[Math.Max(n, 1)];
        void** pointers = stackalloc void*[Math.Max(n, 1)];
        for (int i = 0; i < n; i++)
        {
            values[i] = args[i].Bits;
            pointers[i] = &values[i];
        }
        var launcher = (delegate* unmanaged[Cdecl]<void**, uint, uint, uint, uint, uint, uint, uint, void>)kernel.Launcher;
        string? error;
        lock (s_launchLock)
        {
            launcher(pointers, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedMemoryBytes);
            error = kernel.Module.LastError();
        }
        if (error is not null)
            throw new InvalidOperationException($"Emulated launch of {kernel.Name} (grid {grid.X}x{grid.Y}x{grid.Z}, block {block.X}x{block.Y}x{block.Z}, {sharedMemoryBytes} B shared) failed: {error}");
    }

    private static void CheckArguments(EmulatorKernel kernel, ReadOnlySpan<KernelArg> args)
    {
        string parameters = kernel.Parameters;
        if (parameters.Length != args.Length)
            throw new ArgumentException($"Kernel {kernel.Name} takes {parameters.Length} arguments ({parameters}), the launch passes {args.Length}.", nameof(args));
        for (int i = 0; i < args.Length; i++)
        {
            int expected = parameters[i] switch { 'p' => 8, 'i' or 'u' or 'f' => 4, _ => 0 };
            if (expected == 0) throw new ArgumentException($"Parameter {i} of kernel {kernel.Name} has a type the launch ABI does not carry (only pointers, int, unsigned and float).", nameof(args));
            if (args[i].SizeInBytes != expected)
                throw new ArgumentException($"Argument {i} of kernel {kernel.Name} is {args[i].SizeInBytes} bytes; the parameter ('{parameters[i]}') takes {expected}.", nameof(args));
        }
    }

    private void CheckPointer(DevicePointer pointer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (pointer.Address == 0) throw new ArgumentException("Null device pointer.", nameof(pointer));
    }

    private static string DefaultCacheDirectory()
    {
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "modelcompiler", "emulator");
    }
}
