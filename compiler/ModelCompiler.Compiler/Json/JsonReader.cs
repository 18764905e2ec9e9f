using System;
using System.Globalization;
using System.Text;
using ModelCompiler.Compiler.Diagnostics;

namespace ModelCompiler.Compiler.Json;

/// <summary>A JSON syntax error at a position.</summary>
internal sealed class JsonSyntaxException(string message, SourceSpan span) : Exception(message)
{
    public SourceSpan Span { get; } = span;
}

/// <summary>
/// A strict RFC 8259 reader (plus <c>//</c> and <c>/* */</c> comments, which descriptions may carry)
/// that builds a <see cref="JsonNode"/> tree with the position of every node. Nesting is bounded so a
/// hostile file cannot overflow the stack.
/// </summary>
internal sealed class JsonReader
{
    private const int MaxDepth = 64;
    private readonly string _text;
    private int _pos;
    private int _line = 1;
    private int _lineStart;

    private JsonReader(string text) { _text = text; }

    /// <summary>Parses <paramref name="text"/>; throws <see cref="JsonSyntaxException"/> on malformed input.</summary>
    public static JsonNode Parse(string text)
    {
        var reader = new JsonReader(text);
        reader.SkipWhitespace();
        var root = reader.ReadValue(0);
        reader.SkipWhitespace();
        if (reader._pos < text.Length) throw reader.Error("unexpected text after the end of the document");
        return root;
    }

    private SourceSpan SpanFrom(int start, int line, int column) => new(start, _pos - start, line, column);

    private JsonSyntaxException Error(string message) =>
        new(message, new SourceSpan(_pos, _pos < _text.Length ? 1 : 0, _line, _pos - _lineStart + 1));

    private JsonNode ReadValue(int depth)
    {
        if (depth > MaxDepth) throw Error($"nesting deeper than {MaxDepth} levels");
        if (_pos >= _text.Length) throw Error("unexpected end of file, expected a value");
        char c = _text[_pos];
        return c switch
        {
            '{' => ReadObject(depth),
            '[' => ReadArray(depth),
            '"' => ReadStringNode(),
            't' => ReadLiteral("true", JsonKind.Boolean, true),
            'f' => ReadLiteral("false", JsonKind.Boolean, false),
            'n' => ReadLiteral("null", JsonKind.Null, false),
            _ when c == '-' || (c >= '0' && c <= '9') => ReadNumber(),
            _ => throw Error($"unexpected character '{c}', expected a value"),
        };
    }

    private JsonNode ReadObject(int depth)
    {
        int start = _pos, line = _line, column = _pos - _lineStart + 1;
        _pos++;
        var members = new System.Collections.Generic.List<JsonProperty>();
        SkipWhitespace();
        if (Peek() == '}') { _pos++; return Finish(new JsonNode(JsonKind.Object, SpanFrom(start, line, column)), members); }
        while (true)
        {
            SkipWhitespace();
            if (Peek() != '"') throw Error("expected a property name in double quotes");
            int nameStart = _pos, nameLine = _line, nameColumn = _pos - _lineStart + 1;
            string name = ReadString();
            var nameSpan = SpanFrom(nameStart, nameLine, nameColumn);
            SkipWhitespace();
            if (Peek() != ':') throw Error($"expected ':' after property name \"{name}\"");
            _pos++;
            SkipWhitespace();
            var value = ReadValue(depth + 1);
            foreach (var m in members)
                if (m.Name == name) throw new JsonSyntaxException($"duplicate property \"{name}\"", nameSpan);
            members.Add(new JsonProperty(name, nameSpan, value));
            SkipWhitespace();
            char c = Peek();
            if (c == ',') { _pos++; continue; }
            if (c == '}') { _pos++; break; }
            throw Error("expected ',' or '}' in object");
        }
        return Finish(new JsonNode(JsonKind.Object, SpanFrom(start, line, column)), members);
    }

    private static JsonNode Finish(JsonNode node, System.Collections.Generic.List<JsonProperty> members)
    {
        node.Properties.AddRange(members);
        return node;
    }

    private JsonNode ReadArray(int depth)
    {
        int start = _pos, line = _line, column = _pos - _lineStart + 1;
        _pos++;
        var items = new System.Collections.Generic.List<JsonNode>();
        SkipWhitespace();
        if (Peek() == ']') { _pos++; }
        else
        {
            while (true)
            {
                SkipWhitespace();
                items.Add(ReadValue(depth + 1));
                SkipWhitespace();
                char c = Peek();
                if (c == ',') { _pos++; continue; }
                if (c == ']') { _pos++; break; }
                throw Error("expected ',' or ']' in array");
            }
        }
        var node = new JsonNode(JsonKind.Array, SpanFrom(start, line, column));
        node.Items.AddRange(items);
        return node;
    }

    private JsonNode ReadStringNode()
    {
        int start = _pos, line = _line, column = _pos - _lineStart + 1;
        string s = ReadString();
        return new JsonNode(JsonKind.String, SpanFrom(start, line, column)) { Text = s };
    }

    private string ReadString()
    {
        _pos++; // opening quote
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= _text.Length) throw Error("unterminated string");
            char c = _text[_pos];
            if (c == '"') { _pos++; return sb.ToString(); }
            if (c == '\n' || c < ' ') throw Error("control character in string (strings cannot span lines)");
            if (c != '\\') { sb.Append(c); _pos++; continue; }
            _pos++;
            if (_pos >= _text.Length) throw Error("unterminated string");
            char e = _text[_pos++];
            switch (e)
            {
                case '"': sb.Append('"'); break;
                case '\\': sb.Append('\\'); break;
                case '/': sb.Append('/'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'u':
                    if (_pos + 4 > _text.Length ||
                        !int.TryParse(_text.Substring(_pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code))
                        throw Error("invalid \\u escape");
                    sb.Append((char)code);
                    _pos += 4;
                    break;
                default:
                    _pos--;
                    throw Error($"invalid escape '\\{e}'");
            }
        }
    }

    private JsonNode ReadNumber()
    {
        int start = _pos, line = _line, column = _pos - _lineStart + 1;
        if (Peek() == '-') _pos++;
        if (!IsDigit(Peek())) throw Error("invalid number");
        if (Peek() == '0') _pos++;
        else while (IsDigit(Peek())) _pos++;
        if (Peek() == '.')
        {
            _pos++;
            if (!IsDigit(Peek())) throw Error("invalid number: digits expected after '.'");
            while (IsDigit(Peek())) _pos++;
        }
        if (Peek() == 'e' || Peek() == 'E')
        {
            _pos++;
            if (Peek() == '+' || Peek() == '-') _pos++;
            if (!IsDigit(Peek())) throw Error("invalid number: digits expected in exponent");
            while (IsDigit(Peek())) _pos++;
        }
        return new JsonNode(JsonKind.Number, SpanFrom(start, line, column)) { Text = _text.Substring(start, _pos - start) };
    }

    private JsonNode ReadLiteral(string literal, JsonKind kind, bool value)
    {
        int start = _pos, line = _line, column = _pos - _lineStart + 1;
        if (string.CompareOrdinal(_text, _pos, literal, 0, literal.Length) != 0)
            throw Error($"unexpected token, expected '{literal}'");
        _pos += literal.Length;
        return new JsonNode(kind, SpanFrom(start, line, column)) { Boolean = value };
    }

    private char Peek() => _pos < _text.Length ? _text[_pos] : '\0';

    private static bool IsDigit(char c) => c >= '0' && c <= '9';

    private void SkipWhitespace()
    {
        while (_pos < _text.Length)
        {
            char c = _text[_pos];
            if (c == '\n') { _pos++; _line++; _lineStart = _pos; }
            else if (c == ' ' || c == '\t' || c == '\r' || c == '\uFEFF') _pos++;
            else if (c == '/' && _pos + 1 < _text.Length && _text[_pos + 1] == '/')
            {
                while (_pos < _text.Length && _text[_pos] != '\n') _pos++;
            }
            else if (c == '/' && _pos + 1 < _text.Length && _text[_pos + 1] == '*')
            {
                int end = _text.IndexOf("*/", _pos + 2, StringComparison.Ordinal);
                if (end < 0) throw Error("unterminated comment");
                for (int i = _pos; i < end; i++)
                    if (_text[i] == '\n') { _line++; _lineStart = i + 1; }
                _pos = end + 2;
            }
            else break;
        }
    }
}
