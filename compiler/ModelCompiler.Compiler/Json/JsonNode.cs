using System.Collections.Generic;
using System.Globalization;
using ModelCompiler.Compiler.Diagnostics;

namespace ModelCompiler.Compiler.Json;

/// <summary>JSON value kinds.</summary>
internal enum JsonKind { Object, Array, String, Number, Boolean, Null }

/// <summary>A property of a JSON object, with the span of its name for diagnostics.</summary>
internal sealed record JsonProperty(string Name, SourceSpan NameSpan, JsonNode Value);

/// <summary>
/// A parsed JSON value that remembers where it came from. System.Text.Json's document model drops
/// positions, and every diagnostic must point at the offending node, hence this small tree.
/// </summary>
internal sealed class JsonNode
{
    public JsonNode(JsonKind kind, SourceSpan span) { Kind = kind; Span = span; }

    public JsonKind Kind { get; }
    public SourceSpan Span { get; }
    /// <summary>Object members in file order (Object only).</summary>
    public List<JsonProperty> Properties { get; } = new();
    /// <summary>Array items (Array only).</summary>
    public List<JsonNode> Items { get; } = new();
    /// <summary>String value, or the raw text of a number.</summary>
    public string Text { get; set; } = "";
    /// <summary>Boolean value.</summary>
    public bool Boolean { get; set; }

    public JsonProperty? Find(string name)
    {
        foreach (var p in Properties)
            if (p.Name == name) return p;
        return null;
    }

    /// <summary>How the kind reads in a message.</summary>
    public string Describe() => Kind switch
    {
        JsonKind.Object => "an object",
        JsonKind.Array => "an array",
        JsonKind.String => $"the string \"{Text}\"",
        JsonKind.Number => $"the number {Text}",
        JsonKind.Boolean => Boolean ? "true" : "false",
        _ => "null",
    };

    public bool TryGetDouble(out double value) =>
        double.TryParse(Text, NumberStyles.Float, CultureInfo.InvariantCulture, out value);
}
