namespace ModelCompiler.Compiler.Diagnostics;

/// <summary>
/// Where something is in a description file: a character offset and length (for editors) and the
/// 1-based line and column of its start (for people).
/// </summary>
public readonly record struct SourceSpan(int Start, int Length, int Line, int Column)
{
    /// <summary>The span of a whole file whose content is unknown.</summary>
    public static SourceSpan None => new(0, 0, 1, 1);

    /// <inheritdoc />
    public override string ToString() => $"({Line},{Column})";
}
