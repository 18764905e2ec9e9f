using System;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Threading;

namespace ModelCompiler.Runtime.Interop.Cuda;

/// <summary>
/// Resolves the logical library names of the declarations in this folder ("nvrtc", "cuda") to the files a
/// machine has: NVRTC's soname changes with every CUDA release (libnvrtc.so.11.2 for all of 11.x,
/// libnvrtc.so.12 for 12.x), and the driver ships only libcuda.so.1 without a development link.
/// </summary>
internal static class NativeLibraries
{
    internal const string Nvrtc = "nvrtc";
    internal const string Driver = "cuda";

    /// <summary>Candidates tried in order; the first that loads wins.</summary>
    internal static readonly string[] NvrtcCandidates =
    {
        "libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so.11.1", "libnvrtc.so.11.0",
        "/usr/local/cuda/lib64/libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.12", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll",
    };

    internal static readonly string[] DriverCandidates = { "libcuda.so.1", "libcuda.so", "nvcuda.dll" };

    private static int s_registered;

    /// <summary>Installs the resolver once for this assembly (the runtime allows one per assembly).</summary>
    internal static void EnsureResolver()
    {
        if (Interlocked.Exchange(ref s_registered, 1) == 1) return;
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        string[]? candidates = name == Nvrtc ? NvrtcCandidates : name == Driver ? DriverCandidates : null;
        if (candidates is null) return 0;
        return TryLoadAny(candidates, out nint handle) ? handle : 0;
    }

    /// <summary>Loads the first of <paramref name="candidates"/> that exists.</summary>
    internal static bool TryLoadAny(string[] candidates, out nint handle)
    {
        foreach (var candidate in candidates)
            if (NativeLibrary.TryLoad(candidate, out handle)) return true;
        handle = 0;
        return false;
    }

    /// <summary>True when some NVRTC library loads on this machine.</summary>
    internal static bool IsNvrtcAvailable() => TryLoadAny(NvrtcCandidates, out _);

    /// <summary>True when the driver library loads (a GPU may still be absent).</summary>
    internal static bool IsDriverAvailable() => TryLoadAny(DriverCandidates, out _);
}
