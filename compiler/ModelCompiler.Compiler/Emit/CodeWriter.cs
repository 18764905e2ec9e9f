using System.Globalization;
using System.Text;

namespace ModelCompiler.Compiler.Emit;

/// <summary>An indenting text writer with '\n' line endings on every platform, so output is byte-identical everywhere.</summary>
internal sealed class CodeWriter
{
    private readonly StringBuilder _sb = new();
    private int _indent;

    public void Line(string text = "")
    {
        if (text.Length > 0) _sb.Append(' ', _indent * 4).Append(text);
        _sb.Append('\n');
    }

    public void Open(string text) { Line(text); Line("{"); _indent++; }
    public void Close(string suffix = "") { _indent--; Line("}" + suffix); }

    public override string ToString() => _sb.ToString();

    /// <summary>A C# float literal that round-trips.</summary>
    public static string Float(double value) =>
        ((float)value).ToString("R", CultureInfo.InvariantCulture) + "f";

    public static string Int(int value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A C# string literal.</summary>
    public static string Str(string value)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in value)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < ' ') sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    /// <summary>A valid, readable C# identifier for a buffer or value name.</summary>
    public static string Identifier(string name)
    {
        var sb = new StringBuilder();
        foreach (char c in name) sb.Append(char.IsLetterOrDigit(c) || c == '_' ? c : '_');
        if (sb.Length == 0 || char.IsDigit(sb[0])) sb.Insert(0, '_');
        return sb.ToString();
    }
}
