using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime.Cuda.Emulation;

/// <summary>
/// A CUDA module compiled by g++ for the emulator: a shared library exporting, per kernel,
/// <c>mc_launch_NAME</c> (driver-API argument array, grid, block, dynamic shared bytes) and
/// <c>mc_signature_NAME</c> (one letter per parameter), plus <c>mc_emulation_last_error</c>.
/// </summary>
internal sealed unsafe class EmulatorModule : ICudaModule
{
    private readonly Dictionary<string, EmulatorKernel?> _kernels = new(StringComparer.Ordinal);
    private readonly delegate* unmanaged[Cdecl]<byte*> _lastError;
    private nint _library;

    public EmulatorModule(string name, string libraryPath)
    {
        Name = name;
        LibraryPath = libraryPath;
        _library = NativeLibrary.Load(libraryPath);
        if (!NativeLibrary.TryGetExport(_library, "mc_emulation_last_error", out nint lastError))
        {
            NativeLibrary.Free(_library);
            throw new InvalidOperationException($"{libraryPath} is not an emulator module (no mc_emulation_last_error).");
        }
        _lastError = (delegate* unmanaged[Cdecl]<byte*>)lastError;
    }

    /// <summary>The module name given to LoadModule (for messages).</summary>
    public string Name { get; }

    /// <summary>The compiled library.</summary>
    public string LibraryPath { get; }

    public bool HasKernel(string name) => TryGetKernel(name) is not null;

    /// <summary>The kernel's launcher and signature, or null when the module does not export it.</summary>
    public EmulatorKernel? TryGetKernel(string name)
    {
        ObjectDisposedException.ThrowIf(_library == 0, this);
        if (_kernels.TryGetValue(name, out EmulatorKernel? kernel)) return kernel;
        kernel = null;
        if (NativeLibrary.TryGetExport(_library, "mc_launch_" + name, out nint launcher)
            && NativeLibrary.TryGetExport(_library, "mc_signature_" + name, out nint signature))
        {
            string parameters = Marshal.PtrToStringUTF8(((delegate* unmanaged[Cdecl]<nint>)signature)()) ?? "";
            kernel = new EmulatorKernel(this, name, launcher, parameters);
        }
        _kernels[name] = kernel;
        return kernel;
    }

    /// <summary>The error of the last launch in this module, or null.</summary>
    public string? LastError()
    {
        byte* message = _lastError();
        return message == null ? null : Marshal.PtrToStringUTF8((nint)message);
    }

    public void Dispose()
    {
        if (_library == 0) return;
        NativeLibrary.Free(_library);
        _library = 0;
    }

    /// <summary>True once disposed (recorded graphs check it before replaying).</summary>
    public bool IsDisposed => _library == 0;
}

/// <summary>One kernel of an <see cref="EmulatorModule"/>.</summary>
/// <param name="Module">The module that exports it.</param>
/// <param name="Name">The kernel's name.</param>
/// <param name="Launcher">Address of <c>mc_launch_NAME</c>.</param>
/// <param name="Parameters">One letter per parameter: p pointer, i int, u unsigned, f float, ? other.</param>
internal sealed record EmulatorKernel(EmulatorModule Module, string Name, nint Launcher, string Parameters);
