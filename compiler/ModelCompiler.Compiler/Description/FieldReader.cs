using System.Collections.Generic;
using System.Globalization;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Json;

namespace ModelCompiler.Compiler.Description;

/// <summary>
/// Reads the fields of one JSON object of a description, reporting every problem as a diagnostic at the
/// offending node. Getters return a fallback after reporting, so parsing goes on and finds every error.
/// </summary>
internal sealed class FieldReader
{
    private readonly JsonNode _node;
    private readonly string _path;
    private readonly string _context;
    private readonly List<CompilerDiagnostic> _diagnostics;

    public FieldReader(JsonNode node, string context, string path, List<CompilerDiagnostic> diagnostics, params string[] allowedFields)
    {
        _node = node;
        _context = context;
        _path = path;
        _diagnostics = diagnostics;
        foreach (var p in node.Properties)
            if (System.Array.IndexOf(allowedFields, p.Name) < 0)
                Report(DiagnosticCatalog.UnknownField.At(path, p.NameSpan, p.Name, context, string.Join(", ", allowedFields)));
    }

    public JsonNode Node => _node;
    public bool HasErrors { get; private set; }

    public string Qualified(string field) => _context.Length == 0 ? field : _context + "." + field;

    public void Report(CompilerDiagnostic diagnostic)
    {
        if (diagnostic.Severity == Severity.Error) HasErrors = true;
        _diagnostics.Add(diagnostic);
    }

    public JsonProperty? Find(string field) => _node.Find(field);

    /// <summary>The span to blame for a missing field: the object's opening brace.</summary>
    private SourceSpan MissingSpan => new(_node.Span.Start, 1, _node.Span.Line, _node.Span.Column);

    public JsonNode? Get(string field, JsonKind kind, string expected, bool required, string purpose)
    {
        var p = _node.Find(field);
        if (p is null)
        {
            if (required) Report(DiagnosticCatalog.MissingField.At(_path, MissingSpan, Qualified(field), purpose));
            return null;
        }
        if (p.Value.Kind != kind)
        {
            Report(DiagnosticCatalog.WrongType.At(_path, p.Value.Span, Qualified(field), expected, p.Value.Describe()));
            return null;
        }
        return p.Value;
    }

    public string String(string field, bool required, string fallback, string purpose)
    {
        var n = Get(field, JsonKind.String, "a string", required, purpose);
        if (n is null) return fallback;
        if (n.Text.Length == 0)
        {
            Report(DiagnosticCatalog.OutOfRange.At(_path, n.Span, Qualified(field), "empty", "a non-empty string"));
            return fallback;
        }
        return n.Text;
    }

    /// <summary>A positive integer no larger than <paramref name="max"/>.</summary>
    public int PositiveInt(string field, bool required, int fallback, int max, string purpose)
    {
        var n = Get(field, JsonKind.Number, "a positive integer", required, purpose);
        if (n is null) return fallback;
        if (!long.TryParse(n.Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long value))
        {
            Report(DiagnosticCatalog.WrongType.At(_path, n.Span, Qualified(field), "a positive integer", n.Describe()));
            return fallback;
        }
        if (value <= 0)
        {
            Report(DiagnosticCatalog.NonPositiveSize.At(_path, n.Span, Qualified(field), n.Text));
            return fallback;
        }
        if (value > max)
        {
            Report(DiagnosticCatalog.OutOfRange.At(_path, n.Span, Qualified(field), n.Text, "at most " + max.ToString(CultureInfo.InvariantCulture)));
            return fallback;
        }
        return (int)value;
    }

    /// <summary>A number in the open interval (<paramref name="min"/>, <paramref name="max"/>).</summary>
    public double Number(string field, double fallback, double min, double max, string range)
    {
        var n = Get(field, JsonKind.Number, "a number", required: false, "");
        if (n is null) return fallback;
        n.TryGetDouble(out double value);
        if (!(value > min && value < max) || double.IsInfinity(value))
        {
            Report(DiagnosticCatalog.OutOfRange.At(_path, n.Span, Qualified(field), n.Text, range));
            return fallback;
        }
        return value;
    }

    public bool Boolean(string field, bool fallback)
    {
        var n = Get(field, JsonKind.Boolean, "true or false", required: false, "");
        return n?.Boolean ?? fallback;
    }

    /// <summary>One of <paramref name="choices"/>; reports <paramref name="kind"/> otherwise.</summary>
    public string Choice(string field, string[] choices, bool required, string fallback, DiagnosticKind kind, string purpose)
    {
        var n = Get(field, JsonKind.String, "a string", required, purpose);
        if (n is null) return fallback;
        if (System.Array.IndexOf(choices, n.Text) >= 0) return n.Text;
        string list = string.Join(", ", choices);
        Report(kind == DiagnosticCatalog.InvalidChoice
            ? kind.At(_path, n.Span, Qualified(field), n.Text, list)
            : kind.At(_path, n.Span, n.Text, Qualified(field), list));
        return fallback;
    }
}
