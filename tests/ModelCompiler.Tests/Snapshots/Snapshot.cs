using System.Runtime.CompilerServices;
using Xunit.Sdk;

namespace ModelCompiler.Tests.Snapshots;

/// <summary>
/// A small stand-in for Verify: compares text against <c>Snapshots/{name}.verified.txt</c> in the source
/// tree. A mismatch (or a missing verified file) writes <c>{name}.received.txt</c> beside it and fails
/// with the first differing line; with <c>MODELCOMPILER_ACCEPT_SNAPSHOTS=1</c> the verified file is
/// overwritten instead and the test passes. Line endings are normalised to <c>\n</c> on both sides.
/// </summary>
internal static class Snapshot
{
    /// <summary>The environment variable that turns mismatches into accepted baselines.</summary>
    public const string AcceptVariable = "MODELCOMPILER_ACCEPT_SNAPSHOTS";

    /// <summary>The folder of the verified files: this source file's folder, so it works from bin/ too.</summary>
    public static string Directory { get; } = Path.GetDirectoryName(ThisFile())!;

    /// <summary>True when <see cref="AcceptVariable"/> asks to accept (only "1" or "true", so a stray value cannot bless a baseline).</summary>
    public static bool IsAccepting(string? value) =>
        value is not null && (value.Trim() == "1" || value.Trim().Equals("true", StringComparison.OrdinalIgnoreCase));

    /// <summary>Compares <paramref name="actual"/> with the verified file <paramref name="name"/> in <see cref="Directory"/>.</summary>
    public static void Match(string actual, string name) =>
        Match(actual, name, Directory, IsAccepting(Environment.GetEnvironmentVariable(AcceptVariable)));

    /// <summary>As <see cref="Match(string, string)"/>, against files in <paramref name="directory"/> (tests of the helper use a temp folder).</summary>
    public static void Match(string actual, string name, string directory, bool accept)
    {
        if (name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || name.Length == 0)
            throw new ArgumentException($"'{name}' is not a usable snapshot name.", nameof(name));
        string verifiedPath = Path.Combine(directory, name + ".verified.txt");
        string receivedPath = Path.Combine(directory, name + ".received.txt");
        string received = Normalize(actual);

        string? verified = File.Exists(verifiedPath) ? Normalize(File.ReadAllText(verifiedPath)) : null;
        if (verified == received)
        {
            if (File.Exists(receivedPath)) File.Delete(receivedPath);
            return;
        }
        if (accept)
        {
            File.WriteAllText(verifiedPath, received);
            if (File.Exists(receivedPath)) File.Delete(receivedPath);
            return;
        }

        File.WriteAllText(receivedPath, received);
        string how = $"Review {receivedPath}; to accept it, rename it to {Path.GetFileName(verifiedPath)} or rerun the tests with {AcceptVariable}=1.";
        if (verified is null)
            throw new XunitException($"Snapshot '{name}' has no verified file ({verifiedPath}).\n{how}");
        throw new XunitException($"Snapshot '{name}' differs from {verifiedPath}.\n{FirstDifference(verified, received)}\n{how}");
    }

    /// <summary>Text with <c>\r\n</c> and lone <c>\r</c> turned into <c>\n</c>.</summary>
    public static string Normalize(string text) => text.Replace("\r\n", "\n").Replace('\r', '\n');

    /// <summary>Describes the first line where <paramref name="verified"/> and <paramref name="received"/> differ.</summary>
    public static string FirstDifference(string verified, string received)
    {
        string[] a = Lines(verified), b = Lines(received);
        for (int i = 0; i < Math.Max(a.Length, b.Length); i++)
        {
            string? x = i < a.Length ? a[i] : null, y = i < b.Length ? b[i] : null;
            if (x != y)
                return $"First difference at line {i + 1}:\n  verified: {Show(x)}\n  received: {Show(y)}";
        }
        return "The texts differ only in a trailing newline.";
    }

    // A final '\n' ends the last line rather than starting an empty one.
    private static string[] Lines(string text) => (text.EndsWith('\n') ? text[..^1] : text).Split('\n');

    private static string Show(string? line) => line is null ? "(end of file)" : "\"" + line + "\"";

    private static string ThisFile([CallerFilePath] string path = "") => path;
}
