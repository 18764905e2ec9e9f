using System;
using System.Diagnostics;
using System.IO;
using System.Security.Cryptography;
using System.Text;
using System.Threading;

namespace ModelCompiler.Runtime.Cuda.Emulation;

/// <summary>
/// Compiles CUDA source into a shared library for the emulator with g++ and <c>mc_emulation.h</c>, keeping
/// the result in an on-disk cache keyed by the hash of the source, the header, the flags and the compiler
/// version, so that a second start with the same source loads the library without compiling.
/// </summary>
internal sealed class EmulatorCompiler
{
    /// <summary>The flags every module is compiled with (part of the cache key).</summary>
    internal static readonly string[] Flags =
    [
        "-O2", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing",
        // An undefined symbol (a built-in the header lacks, declared but not defined) fails the build
        // here instead of at dlopen.
        "-Wl,-z,defs",
    ];

    private static int s_numCompilations;
    private readonly string _compiler;
    private readonly Lazy<string> _compilerVersion;
    private readonly Lazy<string> _headerText = new(ReadHeader);

    /// <param name="cacheDirectory">Where sources, logs and libraries go.</param>
    /// <param name="compiler">The g++ to run.</param>
    public EmulatorCompiler(string cacheDirectory, string compiler)
    {
        CacheDirectory = cacheDirectory;
        _compiler = compiler;
        _compilerVersion = new(() => QueryVersion(compiler));
    }

    /// <summary>The cache folder.</summary>
    public string CacheDirectory { get; }

    /// <summary>How many times g++ ran in this process (tests check that the cache is used).</summary>
    public static int NumCompilations => Volatile.Read(ref s_numCompilations);

    /// <summary>The emulation header, as embedded in the runtime.</summary>
    public string HeaderText => _headerText.Value;

    /// <summary>
    /// The path of the shared library for <paramref name="cudaSource"/>, compiling it first unless the
    /// cache has it. Throws <see cref="EmulatorCompileException"/> when g++ fails.
    /// </summary>
    public string GetOrCompile(string cudaSource, string moduleName)
    {
        string header = HeaderText;
        string key = Hash(header, string.Join(' ', Flags), _compilerVersion.Value, cudaSource);
        string stem = Path.Combine(CacheDirectory, $"{Sanitize(moduleName)}-{key}");
        string libraryPath = stem + ".so";
        if (File.Exists(libraryPath)) return libraryPath;

        Directory.CreateDirectory(CacheDirectory);
        string headerPath = Path.Combine(CacheDirectory, $"mc_emulation-{Hash(header)[..16]}.h");
        string sourcePath = stem + ".cu";
        string logPath = stem + ".log";
        WriteAtomically(headerPath, header);
        WriteAtomically(sourcePath, cudaSource);

        // Compile to a private name and rename, so that concurrent processes never load half a file.
        string temporaryPath = $"{stem}.{Environment.ProcessId}.{Environment.CurrentManagedThreadId}.tmp.so";
        var start = new ProcessStartInfo(_compiler) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string flag in Flags) start.ArgumentList.Add(flag);
        foreach (string argument in new[] { "-include", headerPath, "-x", "c++", sourcePath, "-o", temporaryPath }) start.ArgumentList.Add(argument);

        Interlocked.Increment(ref s_numCompilations);
        string log;
        int exitCode;
        using (Process process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {_compiler}."))
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            string stderr = process.StandardError.ReadToEnd();
            process.WaitForExit();
            log = stdout.Result + stderr;
            exitCode = process.ExitCode;
        }
        File.WriteAllText(logPath, $"{_compiler} {string.Join(' ', start.ArgumentList)}\n{log}");
        if (exitCode != 0 || !File.Exists(temporaryPath))
        {
            File.Delete(temporaryPath);
            throw new EmulatorCompileException(
                $"g++ could not compile CUDA module '{moduleName}' for the emulator (exit code {exitCode}); source: {sourcePath}, log: {logPath}",
                sourcePath, logPath);
        }
        File.Move(temporaryPath, libraryPath, overwrite: true);
        return libraryPath;
    }

    private static string ReadHeader()
    {
        const string resourceName = "ModelCompiler.Runtime.Cuda.Emulation.mc_emulation.h";
        using Stream stream = typeof(EmulatorCompiler).Assembly.GetManifestResourceStream(resourceName)
            ?? throw new InvalidOperationException($"The runtime lacks its embedded resource {resourceName}.");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    private static string QueryVersion(string compiler)
    {
        try
        {
            var start = new ProcessStartInfo(compiler) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            start.ArgumentList.Add("-dumpfullversion");
            start.ArgumentList.Add("-dumpmachine");
            using Process process = Process.Start(start) ?? throw new InvalidOperationException();
            string output = process.StandardOutput.ReadToEnd();
            process.StandardError.ReadToEnd();
            process.WaitForExit();
            return output.Trim();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            throw new InvalidOperationException($"The CUDA emulator needs a C++ compiler; '{compiler}' could not be run: {e.Message}", e);
        }
    }

    private static string Hash(params string[] parts)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (string part in parts)
        {
            sha.AppendData(Encoding.UTF8.GetBytes(part));
            sha.AppendData([0]);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset())[..32];
    }

    private static string Sanitize(string name)
    {
        var builder = new StringBuilder(name.Length);
        foreach (char c in name) builder.Append(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' ? c : '_');
        return builder.Length == 0 ? "module" : builder.ToString();
    }

    private static void WriteAtomically(string path, string text)
    {
        if (File.Exists(path) && File.ReadAllText(path) == text) return;
        string temporaryPath = $"{path}.{Environment.ProcessId}.{Environment.CurrentManagedThreadId}.tmp";
        File.WriteAllText(temporaryPath, text);
        File.Move(temporaryPath, path, overwrite: true);
    }
}
