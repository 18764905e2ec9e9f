using System;

namespace ModelCompiler.Runtime.Interop.Cuda;

/// <summary>A failed NVRTC or driver-API call: names the call, the error code and its description.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception for <paramref name="call"/> returning <paramref name="code"/>.</summary>
    public CudaException(string call, int code, string description)
        : base($"{call} failed: {description} (error {code}).")
    {
        Call = call;
        Code = code;
    }

    /// <summary>Creates an exception with a message of its own (a library that cannot be loaded).</summary>
    public CudaException(string call, string message, Exception? inner = null) : base(message, inner)
    {
        Call = call;
        Code = -1;
    }

    /// <summary>The native function that failed.</summary>
    public string Call { get; }
    /// <summary>Its result code (-1 when the call could not be made).</summary>
    public int Code { get; }
}

/// <summary>NVRTC rejected a kernel source; <see cref="SourcePath"/> and <see cref="LogPath"/> hold the source and the compile log.</summary>
public sealed class NvrtcCompileException : Exception
{
    /// <summary>Creates the exception for a failed compile whose source and log were written to disk.</summary>
    public NvrtcCompileException(string moduleName, string sourcePath, string logPath, string log)
        : base($"NVRTC could not compile module '{moduleName}'. Source: {sourcePath}; log: {logPath}.\n{FirstLines(log, 20)}")
    {
        SourcePath = sourcePath;
        LogPath = logPath;
        Log = log;
    }

    /// <summary>The source that failed.</summary>
    public string SourcePath { get; }
    /// <summary>The compile log file.</summary>
    public string LogPath { get; }
    /// <summary>The compile log.</summary>
    public string Log { get; }

    private static string FirstLines(string text, int count)
    {
        var lines = text.Split('\n');
        return lines.Length <= count ? text : string.Join("\n", lines, 0, count) + "\n...";
    }
}
