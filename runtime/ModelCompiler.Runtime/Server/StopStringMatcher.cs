using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// Applies OpenAI <c>stop</c> strings to streamed text. A stop string may span several tokens, so text
/// that could be the start of one is held back until the next piece decides; the text before the
/// first complete stop string is released and the stop string itself never is.
/// One instance per choice; not thread-safe.
/// </summary>
internal sealed class StopStringMatcher
{
    private readonly string[] _stops;
    private string _held = "";

    public StopStringMatcher(IReadOnlyList<string> stops)
    {
        foreach (var stop in stops)
            if (string.IsNullOrEmpty(stop)) throw new ArgumentException("Stop strings must not be empty.", nameof(stops));
        _stops = [.. stops];
    }

    /// <summary>True once a stop string was seen; later text is ignored.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds <paramref name="text"/>; returns the text that can be shown now.</summary>
    public string Push(string text)
    {
        if (Stopped) return "";
        if (_stops.Length == 0) return text;
        string buffer = _held + text;
        int first = -1;
        foreach (var stop in _stops)
        {
            int at = buffer.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (first >= 0)
        {
            Stopped = true;
            _held = "";
            return buffer[..first];
        }
        // Everything before the longest suffix that begins some stop string is safe to show.
        int keep = LongestPartialStop(buffer);
        _held = buffer[(buffer.Length - keep)..];
        return buffer[..(buffer.Length - keep)];
    }

    /// <summary>Ends the text: what was held back is released (it did not become a stop string).</summary>
    public string Flush()
    {
        string rest = Stopped ? "" : _held;
        _held = "";
        return rest;
    }

    private int LongestPartialStop(string buffer)
    {
        int longest = 0;
        foreach (var stop in _stops)
        {
            for (int length = Math.Min(stop.Length - 1, buffer.Length); length > longest; length--)
            {
                if (buffer.AsSpan(buffer.Length - length).SequenceEqual(stop.AsSpan(0, length)))
                {
                    longest = length;
                    break;
                }
            }
        }
        return longest;
    }
}
