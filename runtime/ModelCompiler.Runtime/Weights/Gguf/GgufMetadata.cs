using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Weights.Gguf;

/// <summary>The type tag of a GGUF metadata value (<c>gguf_metadata_value_type</c>).</summary>
public enum GgufValueType : uint
{
    /// <summary>byte</summary>
    UInt8 = 0,
    /// <summary>sbyte</summary>
    Int8 = 1,
    /// <summary>ushort</summary>
    UInt16 = 2,
    /// <summary>short</summary>
    Int16 = 3,
    /// <summary>uint</summary>
    UInt32 = 4,
    /// <summary>int</summary>
    Int32 = 5,
    /// <summary>float</summary>
    Float32 = 6,
    /// <summary>bool (one byte, 0 or 1)</summary>
    Bool = 7,
    /// <summary>UTF-8 string with a u64 length</summary>
    String = 8,
    /// <summary>array: element type, u64 count, elements</summary>
    Array = 9,
    /// <summary>ulong</summary>
    UInt64 = 10,
    /// <summary>long</summary>
    Int64 = 11,
    /// <summary>double</summary>
    Float64 = 12,
}

/// <summary>
/// A GGUF array value. <see cref="Values"/> is a typed CLR array: <c>byte[]</c>, <c>sbyte[]</c>, <c>ushort[]</c>,
/// <c>short[]</c>, <c>uint[]</c>, <c>int[]</c>, <c>float[]</c>, <c>bool[]</c>, <c>string[]</c>, <c>ulong[]</c>,
/// <c>long[]</c>, <c>double[]</c> or <c>GgufArray[]</c> (nested arrays), by <see cref="ElementType"/>.
/// </summary>
public sealed record GgufArray(GgufValueType ElementType, Array Values)
{
    /// <summary>Number of elements.</summary>
    public int Count => Values.Length;
}

/// <summary>
/// GGUF key/value metadata in file order, with typed accessors. Values are boxed CLR values of the stored
/// type (<see cref="GgufValueType"/>): integers keep their width and signedness, arrays are <see cref="GgufArray"/>.
/// </summary>
public sealed class GgufMetadata
{
    private readonly Dictionary<string, (GgufValueType Type, object Value)> _values = new(StringComparer.Ordinal);
    private readonly List<string> _keys = new();

    /// <summary>Keys in file order.</summary>
    public IReadOnlyList<string> Keys => _keys;

    internal bool TryAdd(string key, GgufValueType type, object value)
    {
        if (!_values.TryAdd(key, (type, value))) return false;
        _keys.Add(key);
        return true;
    }

    /// <summary>The raw value and its stored type.</summary>
    public bool TryGetValue(string key, out GgufValueType type, out object value)
    {
        if (_values.TryGetValue(key, out var entry)) { type = entry.Type; value = entry.Value; return true; }
        type = default;
        value = null!;
        return false;
    }

    /// <summary>A string value; false when missing or not a string.</summary>
    public bool TryGetString(string key, out string value)
    {
        value = "";
        if (!_values.TryGetValue(key, out var e) || e.Value is not string s) return false;
        value = s;
        return true;
    }

    /// <summary>An integer value of any integer type; false when missing, not an integer or above <see cref="long.MaxValue"/>.</summary>
    public bool TryGetInteger(string key, out long value)
    {
        value = 0;
        if (!_values.TryGetValue(key, out var e)) return false;
        switch (e.Value)
        {
            case byte v: value = v; return true;
            case sbyte v: value = v; return true;
            case ushort v: value = v; return true;
            case short v: value = v; return true;
            case uint v: value = v; return true;
            case int v: value = v; return true;
            case ulong v when v <= long.MaxValue: value = (long)v; return true;
            case long v: value = v; return true;
            default: return false;
        }
    }

    /// <summary>A number of any numeric type (integers included) as a double; false when missing or not numeric.</summary>
    public bool TryGetNumber(string key, out double value)
    {
        value = 0;
        if (!_values.TryGetValue(key, out var e)) return false;
        switch (e.Value)
        {
            case float f: value = f; return true;
            case double d: value = d; return true;
            case ulong u: value = u; return true;
            default:
                if (!TryGetInteger(key, out long i)) return false;
                value = i;
                return true;
        }
    }

    /// <summary>A boolean value; false when missing or not a bool.</summary>
    public bool TryGetBool(string key, out bool value)
    {
        value = false;
        if (!_values.TryGetValue(key, out var e) || e.Value is not bool b) return false;
        value = b;
        return true;
    }

    /// <summary>An array value; false when missing or not an array.</summary>
    public bool TryGetArray(string key, out GgufArray value)
    {
        value = null!;
        if (!_values.TryGetValue(key, out var e) || e.Value is not GgufArray a) return false;
        value = a;
        return true;
    }
}
