namespace ModelCompiler.Compiler.Diagnostics;

/// <summary>Severity of a diagnostic.</summary>
public enum Severity
{
    /// <summary>Suspicious but compilable.</summary>
    Warning,
    /// <summary>The description cannot be compiled.</summary>
    Error,
}

/// <summary>One problem found in a description: a stable ID, a message and its location.</summary>
public sealed record CompilerDiagnostic(string Id, Severity Severity, string Message, string FilePath, SourceSpan Span)
{
    /// <summary>Formats like the C# compiler: <c>path(line,col): error MC0001: message</c>.</summary>
    public override string ToString() =>
        $"{FilePath}{Span}: {(Severity == Severity.Error ? "error" : "warning")} {Id}: {Message}";
}
