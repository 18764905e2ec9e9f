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

/// <summary>A compiled module: the cubin for one architecture, ptxas's log and what it reported per function.</summary>
/// <param name="Cubin">The cubin (load it with cuModuleLoadData).</param>
/// <param name="Architecture">The target, e.g. <c>sm_80</c>.</param>
/// <param name="Log">NVRTC's log (ptxas's <c>-v</c> report).</param>
/// <param name="Resources">Per function, parsed from <paramref name="Log"/>.</param>
/// <param name="FromCache">True when it came from the on-disk cache instead of a compile.</param>
public sealed record CompiledCudaModule(byte[] Cubin, string Architecture, string Log, IReadOnlyList<KernelResources> Resources, bool FromCache);

/// <summary>
/// Compiles generated CUDA source with NVRTC for one architecture, with an on-disk cache keyed by the
/// source's hash, the architecture, the options and NVRTC's version (a second start does not recompile).
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

    /// <summary>Compiles <paramref name="source"/> for <c>sm_{major}{minor}</c>, or takes it from the cache.</summary>
    public CompiledCudaModule Compile(string source, string moduleName, int major, int minor)
    {
        string architecture = "sm_" + major.ToString(CultureInfo.InvariantCulture) + minor.ToString(CultureInfo.InvariantCulture);
        var (nvrtcMajor, nvrtcMinor) = Version();
        var options = new List<string>(CommonOptions) { "--gpu-architecture=" + architecture };
        string key = CacheKey(source, architecture, options, nvrtcMajor, nvrtcMinor);
        string cubinPath = Path.Combine(CacheDirectory, $"{moduleName}-{architecture}-{key}.cubin");
        string logPath = Path.ChangeExtension(cubinPath, ".log");
        if (File.Exists(cubinPath) && File.Exists(logPath))
        {
            string cachedLog = File.ReadAllText(logPath);
            return new CompiledCudaModule(File.ReadAllBytes(cubinPath), architecture, cachedLog, ParseResources(cachedLog), FromCache: true);
        }

        var (cubin, log, ok) = CompileUncached(source, moduleName, options);
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
        string temporary = cubinPath + "." + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + ".tmp";
        File.WriteAllBytes(temporary, cubin);
        File.WriteAllText(temporary + ".log", log);
        File.Move(temporary + ".log", logPath, overwrite: true);
        File.Move(temporary, cubinPath, overwrite: true);
        return new CompiledCudaModule(cubin, architecture, log, ParseResources(log), FromCache: false);
    }

    private static string CacheKey(string source, string architecture, IEnumerable<string> options, int nvrtcMajor, int nvrtcMinor)
    {
        var text = new StringBuilder(source).Append('\n').Append(architecture).Append('\n')
            .Append(string.Join(" ", options)).Append('\n').Append(nvrtcMajor).Append('.').Append(nvrtcMinor);
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
        return Convert.ToHexStringLower(hash.AsSpan(0, 12));
    }

    private static unsafe (byte[] Cubin, string Log, bool Ok) CompileUncached(string source, string moduleName, List<string> options)
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
