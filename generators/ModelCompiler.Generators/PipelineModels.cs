using System;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Text;

namespace ModelCompiler.Generators;

/// <summary>A location as plain values (no syntax trees), so pipeline records stay equatable and cacheable.</summary>
internal sealed record LocationInfo(string FilePath, TextSpan Span, LinePositionSpan LineSpan)
{
    public Location ToLocation() => Location.Create(FilePath, Span, LineSpan);

    public static LocationInfo? From(Location? location) =>
        location is null || location.SourceTree is null
            ? null
            : new LocationInfo(location.SourceTree.FilePath, location.SourceSpan, location.GetLineSpan().Span);
}

/// <summary>A diagnostic as plain values.</summary>
internal sealed record DiagnosticInfo(string Id, bool IsError, string Title, string Message, LocationInfo? Location);

/// <summary>Stage 1 output: a class carrying [ModelEngine], described by names only.</summary>
internal sealed record EngineRequest(
    string? Namespace, string ClassName, string DescriptionPath, bool IsPartial, bool IsSupportedShape,
    LocationInfo? ClassLocation, LocationInfo? AttributeLocation);

/// <summary>Stage 2 output: the text of one <c>*.model.json</c> additional file.</summary>
internal sealed record DescriptionFile(string Path, string Text);

/// <summary>Generated source for one engine.</summary>
internal sealed record GeneratedSource(string HintName, string Text);

/// <summary>Stage 3 output: what compiling one engine produced. Sources and diagnostics are reported by separate outputs.</summary>
internal sealed record CompiledEngine(GeneratedSource? Source, EquatableArray<DiagnosticInfo> Diagnostics, GeneratedSource? CudaSource = null);

internal static class PathMatching
{
    /// <summary>True when <paramref name="filePath"/> is <paramref name="requested"/> or ends with it as whole path segments.</summary>
    public static bool Matches(string filePath, string requested)
    {
        string file = filePath.Replace('\\', '/');
        string wanted = requested.Replace('\\', '/').TrimStart('.', '/');
        if (wanted.Length == 0) return false;
        return string.Equals(file, wanted, StringComparison.Ordinal) ||
               file.EndsWith("/" + wanted, StringComparison.Ordinal);
    }
}
