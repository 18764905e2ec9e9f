using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using ModelCompiler.Runtime.Interop.Cuda;

namespace ModelCompiler.Runtime.Cuda;

/// <summary>What ptxas reported for one function: registers, shared memory, stack, spills.</summary>
/// <param name="Name">The function (a kernel, or an internal function such as a slow-path helper).</param>
/// <param name="IsKernel">True for an entry function (a kernel).</param>
/// <param name="Registers">Registers per thread.</param>
/// <param name="SharedMemoryBytes">Static shared memory per block.</param>
/// <param name="StackFrameBytes">Local stack frame per thread.</param>
/// <param name="SpillStoreBytes">Bytes of register spill stores.</param>
/// <param name="SpillLoadBytes">Bytes of register spill loads.</param>
public sealed record KernelResources(string Name, bool IsKernel, int Registers, int SharedMemoryBytes, int StackFrameBytes, int SpillStoreBytes, int SpillLoadBytes);

/// <summary>
/// A compiled module: a cubin for one GPU architecture (<c>sm_XY</c>, with ptxas's report per function), or
/// PTX for a virtual one (<c>compute_XY</c>, which the driver JIT-compiles for the GPU it loads on; no ptxas
/// ran, so <see cref="Resources"/> is empty and registers and spills are not known here).
/// </summary>
/// <param name="Image">The cubin, or the PTX text with its terminating NUL: either loads with cuModuleLoadData.</param>
/// <param name="Architecture">The target: <c>sm_80</c> for a cubin, <c>compute_80</c> for PTX.</param>
/// <param name="Log">NVRTC's log (for a cubin, ptxas's <c>-v</c> report).</param>
/// <param name="Resources">Per function, parsed from <paramref name="Log"/> (empty for PTX).</param>
/// <param name="FromCache">True when it came from the on-disk cache instead of a compile.</param>
public sealed record CompiledCudaModule(byte[] Image, string Architecture, string Log, IReadOnlyList<KernelResources> Resources, bool FromCache)
{
    /// <summary>True when <see cref="Image"/> is PTX (a <c>compute_XY</c> target) rather than a cubin.</summary>
    public bool IsPtx => Architecture.StartsWith("compute_", StringComparison.Ordinal);
}

/// <summary>
/// Compiles generated CUDA source with NVRTC for one architecture — a cubin, or PTX for the driver to JIT
/// when the GPU is newer than the NVRTC — with an on-disk cache keyed by the source's hash, the target,
/// the options and NVRTC's version (a second start does not recompile).
/// A compile error writes the source and the log next to the cache and names both in the exception.
/// </summary>
public sealed class NvrtcCompiler
{
    /// <summary>Options besides the architecture: C++17 (NVRTC 11's default is older), ptxas's report, no host code.</summary>
    public static readonly IReadOnlyList<string> CommonOptions = new[] { "--std=c++17", "--ptxas-options=-v", "--device-as-default-execution-space" };

    /// <summary>Creates a compiler caching in <paramref name="cacheDirectory"/> (default: <see cref="DefaultCacheDirectory"/>).</summary>
    public NvrtcCompiler(string? cacheDirectory = null) => CacheDirectory = cacheDirectory ?? DefaultCacheDirectory();

    /// <summary>Where compiled modules, and the source and log of failed compiles, are written.</summary>
    public string CacheDirectory { get; }

    /// <summary><c>$MODELCOMPILER_CUDA_CACHE</c>, else <c>~/.cache/modelcompiler/cuda</c>.</summary>
    public static string DefaultCacheDirectory()
    {
        string? fromEnvironment = Environment.GetEnvironmentVariable("MODELCOMPILER_CUDA_CACHE");
        if (!string.IsNullOrEmpty(fromEnvironment)) return fromEnvironment;
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(string.IsNullOrEmpty(home) ? Path.GetTempPath() : home, ".cache", "modelcompiler", "cuda");
    }

    /// <summary>True when an NVRTC library loads here; <paramref name="reason"/> says what to install when not.</summary>
    public static bool IsAvailable(out string reason)
    {
        if (NativeLibraries.IsNvrtcAvailable()) { reason = ""; return true; }
        reason = "NVRTC (libnvrtc.so) is not installed: on Debian, enable the non-free component and `apt-get install libnvrtc11.2`; " +
                 "elsewhere install the CUDA toolkit's NVRTC (11.2–12.x).";
        return false;
    }

    /// <summary>NVRTC's version, e.g. (11, 8).</summary>
    public static (int Major, int Minor) Version()
    {
        Nvrtc.Check(Nvrtc.Version(out int major, out int minor), "nvrtcVersion");
        return (major, minor);
    }

    /// <summary>
    /// The GPU architectures this NVRTC compiles cubins for, as <c>10 · major + minor</c>, ascending (NVRTC 11.8
    /// knows up to 90; 11.2–11.7 stop at 86 or 87, so an H100/H200 needs 11.8 or newer for a cubin).
    /// </summary>
    public static IReadOnlyList<int> SupportedArchitectures() => Architectures();

    private static unsafe int[] Architectures()
    {
        Nvrtc.Check(Nvrtc.GetNumSupportedArchs(out int count), "nvrtcGetNumSupportedArchs");
        var architectures = new int[count];
        fixed (int* p = architectures) Nvrtc.Check(Nvrtc.GetSupportedArchs(p), "nvrtcGetSupportedArchs");
        Array.Sort(architectures);
        return architectures;
    }

    /// <summary>True when this NVRTC can compile a cubin for <c>sm_{major}{minor}</c>.</summary>
    public static bool SupportsArchitecture(int major, int minor) => Array.IndexOf(Architectures(), 10 * major + minor) >= 0;

    /// <summary>
    /// Compiles <paramref name="source"/> for a GPU of compute capability <paramref name="major"/>.<paramref name="minor"/>,
    /// or takes it from the cache: a cubin for <c>sm_{major}{minor}</c> when this NVRTC knows that architecture;
    /// otherwise (a GPU newer than the NVRTC) PTX for the newest <c>compute_XY</c> it knows that the GPU can run
    /// (not newer than the GPU), which the driver JIT-compiles when the module is loaded.
    /// </summary>
    /// <exception cref="NotSupportedException">The GPU is older than every architecture this NVRTC knows.</exception>
    public CompiledCudaModule Compile(string source, string moduleName, int major, int minor)
    {
        int device = 10 * major + minor;
        int[] supported = Architectures();
        if (Array.IndexOf(supported, device) >= 0) return Compile(source, moduleName, "sm_" + device.ToString(CultureInfo.InvariantCulture));
        int newest = -1;
        foreach (int architecture in supported) if (architecture <= device) newest = architecture;
        if (newest < 0)
            throw new NotSupportedException($"NVRTC {Version().Major}.{Version().Minor} compiles for sm_{supported[0]} and newer; this GPU is sm_{device}.");
        return CompilePtx(source, moduleName, newest / 10, newest % 10);
    }

    /// <summary>
    /// Compiles <paramref name="source"/> to PTX for the virtual architecture <c>compute_{major}{minor}</c> (no
    /// ptxas: no register or spill report), or takes it from the cache. Any GPU of that compute capability or
    /// newer loads it, the driver compiling it for the GPU.
    /// </summary>
    public CompiledCudaModule CompilePtx(string source, string moduleName, int major, int minor) =>
        Compile(source, moduleName, "compute_" + major.ToString(CultureInfo.InvariantCulture) + minor.ToString(CultureInfo.InvariantCulture));

    private CompiledCudaModule Compile(string source, string moduleName, string architecture)
    {
        bool ptx = architecture.StartsWith("compute_", StringComparison.Ordinal);
        var (nvrtcMajor, nvrtcMinor) = Version();
        var options = new List<string>(CommonOptions) { "--gpu-architecture=" + architecture };
        // ptxas does not run for a virtual architecture, so its report option has nothing to report.
        if (ptx) options.Remove("--ptxas-options=-v");
        string key = CacheKey(source, architecture, options, nvrtcMajor, nvrtcMinor);
        string imagePath = Path.Combine(CacheDirectory, $"{moduleName}-{architecture}-{key}.{(ptx ? "ptx" : "cubin")}");
        string logPath = Path.ChangeExtension(imagePath, ".log");
        if (File.Exists(imagePath) && File.Exists(logPath))
        {
            string cachedLog = File.ReadAllText(logPath);
            return new CompiledCudaModule(File.ReadAllBytes(imagePath), architecture, cachedLog, ParseResources(cachedLog), FromCache: true);
        }

        var (image, log, ok) = CompileUncached(source, moduleName, options, ptx);
        Directory.CreateDirectory(CacheDirectory);
        if (!ok)
        {
            string failedSource = Path.Combine(CacheDirectory, $"failed-{moduleName}-{architecture}-{key}.cu");
            string failedLog = Path.ChangeExtension(failedSource, ".log");
            File.WriteAllText(failedSource, source);
            File.WriteAllText(failedLog, log);
            throw new NvrtcCompileException(moduleName, failedSource, failedLog, log);
        }
        // Write to temporary names first so that a concurrent start never reads half a file.
        string temporary = imagePath + "." + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + ".tmp";
        File.WriteAllBytes(temporary, image);
        File.WriteAllText(temporary + ".log", log);
        File.Move(temporary + ".log", logPath, overwrite: true);
        File.Move(temporary, imagePath, overwrite: true);
        return new CompiledCudaModule(image, architecture, log, ParseResources(log), FromCache: false);
    }

    private static string CacheKey(string source, string architecture, IEnumerable<string> options, int nvrtcMajor, int nvrtcMinor)
    {
        var text = new StringBuilder(source).Append('\n').Append(architecture).Append('\n')
            .Append(string.Join(" ", options)).Append('\n').Append(nvrtcMajor).Append('.').Append(nvrtcMinor);
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
        return Convert.ToHexStringLower(hash.AsSpan(0, 12));
    }

    private static unsafe (byte[] Image, string Log, bool Ok) CompileUncached(string source, string moduleName, List<string> options, bool ptx)
    {
        Nvrtc.Check(Nvrtc.CreateProgram(out nint raw, source, moduleName + ".cu", 0, 0, 0), "nvrtcCreateProgram");
        using var program = new NvrtcProgramHandle(raw);
        var optionPointers = new nint[options.Count];
        try
        {
            for (int i = 0; i < options.Count; i++) optionPointers[i] = Marshal.StringToCoTaskMemUTF8(options[i]);
            int result;
            fixed (nint* p = optionPointers) result = Nvrtc.CompileProgram(program.DangerousGetHandle(), options.Count, (byte**)p);
            string log = ReadLog(program.DangerousGetHandle());
            if (result == Nvrtc.CompilationError) return (Array.Empty<byte>(), log, false);
            Nvrtc.Check(result, "nvrtcCompileProgram");
            if (ptx)
            {
                // The size counts the terminating NUL, which cuModuleLoadData needs to see the end of the text.
                Nvrtc.Check(Nvrtc.GetPtxSize(program.DangerousGetHandle(), out nuint ptxSize), "nvrtcGetPTXSize");
                var text = new byte[(int)ptxSize];
                fixed (byte* t = text) Nvrtc.Check(Nvrtc.GetPtx(program.DangerousGetHandle(), t), "nvrtcGetPTX");
                return (text, log, true);
            }
            Nvrtc.Check(Nvrtc.GetCubinSize(program.DangerousGetHandle(), out nuint size), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)size];
            fixed (byte* c = cubin) Nvrtc.Check(Nvrtc.GetCubin(program.DangerousGetHandle(), c), "nvrtcGetCUBIN");
            return (cubin, log, true);
        }
        finally
        {
            foreach (var p in optionPointers) if (p != 0) Marshal.FreeCoTaskMem(p);
        }
    }

    private static unsafe string ReadLog(nint program)
    {
        Nvrtc.Check(Nvrtc.GetProgramLogSize(program, out nuint size), "nvrtcGetProgramLogSize");
        if (size <= 1) return "";
        var bytes = new byte[(int)size];
        fixed (byte* b = bytes) Nvrtc.Check(Nvrtc.GetProgramLog(program, b), "nvrtcGetProgramLog");
        return Encoding.UTF8.GetString(bytes, 0, bytes.Length - 1);
    }

    private static readonly Regex s_entry = new(@"Compiling entry function '([^']+)'", RegexOptions.CultureInvariant);
    private static readonly Regex s_properties = new(@"Function properties for (\S+)", RegexOptions.CultureInvariant);
    private static readonly Regex s_stack = new(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", RegexOptions.CultureInvariant);
    private static readonly Regex s_used = new(@"Used (\d+) registers(?:, (\d+) bytes smem)?", RegexOptions.CultureInvariant);

    /// <summary>Parses ptxas's <c>-v</c> report into one record per function, in the order reported.</summary>
    public static IReadOnlyList<KernelResources> ParseResources(string log)
    {
        var order = new List<string>();
        var byName = new Dictionary<string, KernelResources>(StringComparer.Ordinal);
        KernelResources Get(string name)
        {
            if (!byName.TryGetValue(name, out var r)) { r = new KernelResources(name, false, 0, 0, 0, 0, 0); byName[name] = r; order.Add(name); }
            return r;
        }
        string? entry = null, properties = null;
        static int I(Group g) => g.Success ? int.Parse(g.Value, CultureInfo.InvariantCulture) : 0;
        foreach (var line in log.Split('\n'))
        {
            Match m;
            if ((m = s_entry.Match(line)).Success) { entry = m.Groups[1].Value; byName[entry] = Get(entry) with { IsKernel = true }; }
            else if ((m = s_properties.Match(line)).Success) { properties = m.Groups[1].Value; Get(properties); }
            else if ((m = s_stack.Match(line)).Success && properties is not null)
                byName[properties] = Get(properties) with { StackFrameBytes = I(m.Groups[1]), SpillStoreBytes = I(m.Groups[2]), SpillLoadBytes = I(m.Groups[3]) };
            else if ((m = s_used.Match(line)).Success && entry is not null)
                byName[entry] = Get(entry) with { Registers = I(m.Groups[1]), SharedMemoryBytes = I(m.Groups[2]) };
        }
        var result = new List<KernelResources>();
        foreach (var name in order) result.Add(byName[name]);
        return result;
    }
}
