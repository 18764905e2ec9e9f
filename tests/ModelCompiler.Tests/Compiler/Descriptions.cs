using System.Runtime.CompilerServices;
using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Emit;

namespace ModelCompiler.Tests.Compiler;

/// <summary>The model descriptions of the repository, and small helpers to compile edited copies.</summary>
internal static class Descriptions
{
    /// <summary>The repository root, found from this source file (works from bin/ and from worktrees).</summary>
    public static string RepoRoot { get; } = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(ThisFile())!, "..", "..", ".."));

    public static string Stories260KPath => Path.Combine(RepoRoot, "models", "Stories260K", "stories260K.model.json");
    public static string TinyExplicitPath => Path.Combine(RepoRoot, "tests", "ModelCompiler.Tests", "TestModels", "tiny_explicit.model.json");
    public static string ParallelBlockPath => Path.Combine(RepoRoot, "tests", "ModelCompiler.Tests", "TestModels", "parallel_block.model.json");

    public static string Stories260K => Read(Stories260KPath);
    public static string TinyExplicit => Read(TinyExplicitPath);
    public static string ParallelBlock => Read(ParallelBlockPath);

    /// <summary>The file with '\n' line endings, so line/column arithmetic in tests is the same on every checkout.</summary>
    public static string Read(string path) => File.ReadAllText(path).Replace("\r\n", "\n");

    /// <summary>Compiles <paramref name="text"/> as <c>test.model.json</c> into <c>Test.TestEngine</c>.</summary>
    public static CompilationResult Compile(string text, string fileName = "test.model.json") =>
        ModelCompilerDriver.Compile(text, fileName, new EngineClassInfo("Test", "TestEngine", fileName));

    /// <summary><paramref name="text"/> with exactly one occurrence of <paramref name="find"/> replaced (fails loudly if it is not there exactly once).</summary>
    public static string Edit(string text, string find, string replace)
    {
        int first = text.IndexOf(find, StringComparison.Ordinal);
        if (first < 0) throw new ArgumentException($"'{find}' is not in the text.");
        if (text.IndexOf(find, first + 1, StringComparison.Ordinal) >= 0) throw new ArgumentException($"'{find}' occurs more than once.");
        return text.Substring(0, first) + replace + text.Substring(first + find.Length);
    }

    /// <summary>The 1-based line and column of character <paramref name="offset"/>, counted here rather than by the reader under test.</summary>
    public static (int Line, int Column) LineColumn(string text, int offset)
    {
        int line = 1, lineStart = 0;
        for (int i = 0; i < offset; i++)
            if (text[i] == '\n') { line++; lineStart = i + 1; }
        return (line, offset - lineStart + 1);
    }

    /// <summary>Offset of the single occurrence of <paramref name="marker"/> plus <paramref name="delta"/>.</summary>
    public static int OffsetOf(string text, string marker, int delta = 0)
    {
        int first = text.IndexOf(marker, StringComparison.Ordinal);
        if (first < 0) throw new ArgumentException($"'{marker}' is not in the text.");
        if (text.IndexOf(marker, first + 1, StringComparison.Ordinal) >= 0) throw new ArgumentException($"'{marker}' occurs more than once.");
        return first + delta;
    }

    private static string ThisFile([CallerFilePath] string path = "") => path;
}
