using System;
using System.IO;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// Resolves the default weight and tokenizer paths of a description. Relative paths are relative to the
/// shared data folder: <c>$MODELCOMPILER_SHARED</c> when set, else <c>../shared</c> beside the repository
/// root (the folder holding ModelCompiler.sln, found by walking up from the executable and from the
/// working directory).
/// </summary>
public static class SharedPaths
{
    /// <summary>The environment variable that overrides the shared folder.</summary>
    public const string EnvironmentVariable = "MODELCOMPILER_SHARED";

    /// <summary>Absolute path for <paramref name="path"/> (returned as is when already absolute).</summary>
    public static string Resolve(string path)
    {
        if (Path.IsPathRooted(path)) return path;
        string? shared = SharedFolder();
        return shared is null ? Path.GetFullPath(path) : Path.GetFullPath(Path.Combine(shared, path));
    }

    /// <summary>The shared data folder, or null when neither the variable nor a repository root is found.</summary>
    public static string? SharedFolder()
    {
        string? fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrEmpty(fromEnvironment)) return fromEnvironment;
        foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "ModelCompiler.sln")))
                    return Path.Combine(dir.Parent?.FullName ?? dir.FullName, "shared");
            }
        }
        return null;
    }
}
