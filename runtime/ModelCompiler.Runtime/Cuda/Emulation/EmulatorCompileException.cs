using System;

namespace ModelCompiler.Runtime.Cuda.Emulation;

/// <summary>
/// g++ rejected a CUDA module compiled for the emulator. The source (with the emulation header beside it)
/// and the compiler's log stay on disk at the paths named in the message.
/// </summary>
public sealed class EmulatorCompileException(string message, string sourcePath, string logPath) : Exception(message)
{
    /// <summary>The CUDA source as compiled.</summary>
    public string SourcePath { get; } = sourcePath;
    /// <summary>g++'s output.</summary>
    public string LogPath { get; } = logPath;
}
