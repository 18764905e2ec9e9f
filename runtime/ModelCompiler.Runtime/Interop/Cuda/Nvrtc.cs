using System;
using System.Runtime.InteropServices;
using System.Runtime.InteropServices.Marshalling;

namespace ModelCompiler.Runtime.Interop.Cuda;

/// <summary>NVRTC (CUDA C++ → PTX/cubin at run time), the subset the runtime uses. Every call goes through <see cref="Check"/>.</summary>
internal static partial class Nvrtc
{
    static Nvrtc() => NativeLibraries.EnsureResolver();

    internal const int Success = 0;
    internal const int CompilationError = 6;

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcVersion")]
    internal static partial int Version(out int major, out int minor);

    // Since NVRTC 11.2: the sm_XY targets this NVRTC can compile for, as XY numbers (35, 37, 50, …, 80, 86, 90).
    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetNumSupportedArchs")]
    internal static partial int GetNumSupportedArchs(out int count);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetSupportedArchs")]
    internal static unsafe partial int GetSupportedArchs(int* architectures);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetErrorString")]
    internal static partial nint GetErrorString(int result);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcCreateProgram", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int CreateProgram(out nint program, string source, string name, int numHeaders, nint headers, nint includeNames);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcDestroyProgram")]
    internal static partial int DestroyProgram(ref nint program);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcCompileProgram")]
    internal static unsafe partial int CompileProgram(nint program, int numOptions, byte** options);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetProgramLogSize")]
    internal static partial int GetProgramLogSize(nint program, out nuint size);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetProgramLog")]
    internal static unsafe partial int GetProgramLog(nint program, byte* log);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetPTXSize")]
    internal static partial int GetPtxSize(nint program, out nuint size);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetPTX")]
    internal static unsafe partial int GetPtx(nint program, byte* ptx);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetCUBINSize")]
    internal static partial int GetCubinSize(nint program, out nuint size);

    [LibraryImport(NativeLibraries.Nvrtc, EntryPoint = "nvrtcGetCUBIN")]
    internal static unsafe partial int GetCubin(nint program, byte* cubin);

    /// <summary>Throws a <see cref="CudaException"/> naming <paramref name="call"/> unless <paramref name="result"/> is success.</summary>
    internal static void Check(int result, string call)
    {
        if (result == Success) return;
        string description;
        try { description = Marshal.PtrToStringUTF8(GetErrorString(result)) ?? "unknown error"; }
        catch (Exception) { description = "unknown error"; }
        throw new CudaException(call, result, description);
    }
}

/// <summary>An NVRTC program handle, destroyed on dispose.</summary>
internal sealed class NvrtcProgramHandle : SafeHandle
{
    public NvrtcProgramHandle(nint handle) : base(0, ownsHandle: true) => SetHandle(handle);

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        nint h = handle;
        return Nvrtc.DestroyProgram(ref h) == Nvrtc.Success;
    }
}
