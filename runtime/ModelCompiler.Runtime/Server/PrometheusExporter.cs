using System;
using System.Collections.Generic;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Linq;
using System.Text;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// Collects one <see cref="Meter"/>'s instruments with a <see cref="MeterListener"/> and writes them in
/// the Prometheus text exposition format (version 0.0.4): per metric a <c># HELP</c> and a <c># TYPE</c>
/// line, then its samples. Counters get the <c>_total</c> suffix; histograms write cumulative
/// <c>_bucket{le="…"}</c> samples ending in <c>le="+Inf"</c>, then <c>_sum</c> and <c>_count</c>, with the
/// bucket boundaries the instrument advises. Observable instruments are read at each scrape.
/// </summary>
public sealed class PrometheusExporter : IDisposable
{
    /// <summary>The Content-Type of the text format.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private static readonly double[] s_defaultBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly MeterListener _listener = new();
    private readonly List<Metric> _metrics = [];
    private readonly object _lock = new();

    /// <summary>Starts listening to every instrument of <paramref name="meter"/> (and only that meter instance).</summary>
    public PrometheusExporter(Meter meter)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (!ReferenceEquals(instrument.Meter, meter)) return;
            var metric = new Metric(instrument);
            lock (_lock) _metrics.Add(metric);
            listener.EnableMeasurementEvents(instrument, metric);
        };
        _listener.SetMeasurementEventCallback<long>((i, value, tags, state) => ((Metric)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<int>((i, value, tags, state) => ((Metric)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<double>((i, value, tags, state) => ((Metric)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<float>((i, value, tags, state) => ((Metric)state!).Record(value, tags));
        _listener.Start();
    }

    /// <summary>Reads the observable instruments and returns every metric as exposition text.</summary>
    public string Scrape()
    {
        _listener.RecordObservableInstruments();
        var text = new StringBuilder();
        Metric[] metrics;
        lock (_lock) metrics = [.. _metrics.OrderBy(m => m.Name, StringComparer.Ordinal)];
        foreach (var metric in metrics) metric.WriteTo(text);
        return text.ToString();
    }

    /// <summary>Stops listening.</summary>
    public void Dispose() => _listener.Dispose();

    /// <summary>A Prometheus metric name from an instrument name: characters outside <c>[a-zA-Z0-9_:]</c> become '_'.</summary>
    internal static string SanitizeName(string name)
    {
        var chars = name.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
        {
            char c = chars[i];
            bool ok = c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or '_' or ':' || (i > 0 && c is >= '0' and <= '9');
            if (!ok) chars[i] = '_';
        }
        return new string(chars);
    }

    /// <summary>A sample value: shortest round-trip invariant form, or <c>+Inf</c>, <c>-Inf</c>, <c>NaN</c>.</summary>
    internal static string FormatValue(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf" : double.IsNegativeInfinity(value) ? "-Inf" : double.IsNaN(value) ? "NaN" : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A label value with backslash, double quote and line feed escaped.</summary>
    internal static string EscapeLabelValue(string value) => value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    private enum Kind { Counter, Gauge, Histogram }

    /// <summary>One instrument's series, keyed by their formatted label set.</summary>
    private sealed class Metric
    {
        private readonly Kind _kind;
        private readonly bool _cumulative;     // observable: the callback reports the current total, not a delta
        private readonly double[] _buckets = [];
        private readonly SortedDictionary<string, Series> _series = new(StringComparer.Ordinal);

        public Metric(Instrument instrument)
        {
            string type = instrument.GetType().Name;   // e.g. "Counter`1", "ObservableGauge`1"; stable public type names
            _cumulative = type.StartsWith("Observable", StringComparison.Ordinal);
            _kind = type.Contains("Histogram", StringComparison.Ordinal) ? Kind.Histogram
                : type.Contains("Gauge", StringComparison.Ordinal) || type.Contains("UpDownCounter", StringComparison.Ordinal) ? Kind.Gauge
                : Kind.Counter;
            string name = SanitizeName(instrument.Name);
            Name = _kind == Kind.Counter && !name.EndsWith("_total", StringComparison.Ordinal) ? name + "_total" : name;
            Help = instrument.Description ?? instrument.Name;
            if (_kind == Kind.Histogram)
            {
                _buckets = (instrument as Histogram<double>)?.Advice?.HistogramBucketBoundaries?.ToArray()
                    ?? (instrument as Histogram<long>)?.Advice?.HistogramBucketBoundaries?.Select(b => (double)b).ToArray()
                    ?? s_defaultBuckets;
                _series[""] = new Series(_buckets.Length);   // an empty histogram still shows its buckets
            }
        }

        public string Name { get; }
        private string Help { get; }

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            string labels = FormatLabels(tags);
            lock (_series)
            {
                if (!_series.TryGetValue(labels, out var series)) _series[labels] = series = new Series(_buckets.Length);
                switch (_kind)
                {
                    case Kind.Histogram:
                        int bucket = Array.FindIndex(_buckets, b => value <= b);
                        if (bucket >= 0) series.BucketCounts[bucket]++;
                        series.Count++;
                        series.Sum += value;
                        break;
                    case Kind.Counter when !_cumulative:
                        series.Sum += value;
                        break;
                    default:
                        series.Sum = value;
                        break;
                }
            }
        }

        public void WriteTo(StringBuilder text)
        {
            text.Append("# HELP ").Append(Name).Append(' ').Append(Help.Replace("\\", "\\\\").Replace("\n", "\\n")).Append('\n');
            text.Append("# TYPE ").Append(Name).Append(' ').Append(_kind switch { Kind.Counter => "counter", Kind.Gauge => "gauge", _ => "histogram" }).Append('\n');
            lock (_series)
            {
                foreach (var (labels, series) in _series)
                {
                    if (_kind != Kind.Histogram)
                    {
                        Sample(text, Name, labels, null, series.Sum);
                        continue;
                    }
                    long cumulative = 0;
                    for (int i = 0; i < _buckets.Length; i++)
                    {
                        cumulative += series.BucketCounts[i];
                        Sample(text, Name + "_bucket", labels, FormatValue(_buckets[i]), cumulative);
                    }
                    Sample(text, Name + "_bucket", labels, "+Inf", series.Count);
                    Sample(text, Name + "_sum", labels, null, series.Sum);
                    Sample(text, Name + "_count", labels, null, series.Count);
                }
            }
        }

        private static void Sample(StringBuilder text, string name, string labels, string? le, double value)
        {
            text.Append(name);
            if (labels.Length > 0 || le is not null)
            {
                text.Append('{').Append(labels);
                if (le is not null) text.Append(labels.Length > 0 ? "," : "").Append("le=\"").Append(le).Append('"');
                text.Append('}');
            }
            text.Append(' ').Append(FormatValue(value)).Append('\n');
        }

        private static string FormatLabels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            if (tags.Length == 0) return "";
            var sorted = tags.ToArray();
            Array.Sort(sorted, (a, b) => string.CompareOrdinal(a.Key, b.Key));
            var text = new StringBuilder();
            foreach (var tag in sorted)
            {
                if (text.Length > 0) text.Append(',');
                text.Append(SanitizeName(tag.Key)).Append("=\"")
                    .Append(EscapeLabelValue(Convert.ToString(tag.Value, CultureInfo.InvariantCulture) ?? "")).Append('"');
            }
            return text.ToString();
        }
    }

    private sealed class Series(int numBuckets)
    {
        public readonly long[] BucketCounts = new long[numBuckets];
        public long Count;
        public double Sum;
    }
}
