namespace ModelCompiler.Tests;

/// <summary>Finds the shared folder beside the repository (real models and tokenizers) from wherever the tests run.</summary>
internal static class TestPaths
{
    private static readonly Lazy<string> s_sharedDir = new(FindSharedDir);

    /// <summary>The repository's sibling <c>shared/</c> folder.</summary>
    public static string SharedDir => s_sharedDir.Value;

    /// <summary><c>shared/models/</c>: stories260K.bin, tok512.bin, tokenizer.bin.</summary>
    public static string ModelsDir => Path.Combine(SharedDir, "models");

    /// <summary>A file in <see cref="ModelsDir"/>.</summary>
    public static string Model(string fileName) => Path.Combine(ModelsDir, fileName);

    // Walks up from the test binaries to the directory holding ModelCompiler.sln; shared/ is its sibling.
    // Works from a worktree too, as long as the worktree sits beside shared/.
    private static string FindSharedDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ModelCompiler.sln")))
            {
                string shared = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared"));
                if (!Directory.Exists(shared)) throw new DirectoryNotFoundException($"The shared folder is not beside the repository: {shared}");
                return shared;
            }
        }
        throw new DirectoryNotFoundException($"No ModelCompiler.sln above {AppContext.BaseDirectory}.");
    }
}
