using System;
using System.Globalization;
using System.IO;
using System.Text.Json;
using ModelCompiler.Runtime.Diagnostics;
using ModelCompiler.Runtime.Engine;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>Everything <c>bench</c> prints, with the derived figures computed once.</summary>
internal sealed record BenchReport(
    string Model, string Weights, string MatrixDTypes, int NumThreads, BenchmarkTimings Timings, ModelCost Cost,
    long PeakRssBytes, long? RunPeakRssBytes, RooflineLimits? Limits)
{
    public Distribution TimeToFirstToken { get; } = Distribution.Of(Timings.TimeToFirstTokenSeconds);
    public Distribution TimePerOutputToken { get; } = Distribution.Of(Timings.DecodeStepSeconds);
    public double PrefillFlops => Cost.PrefillFlops(Timings.Options.NumPromptTokens);
    public double PrefillFlopsPerSecond => PrefillFlops * Timings.PrefillSeconds.Length / Sum(Timings.PrefillSeconds);
    public double WeightBandwidth => Cost.WeightBytesPerDecodedToken * Timings.DecodeTokensPerSecond;
    public double MeanKvBytesPerDecodeStep => Cost.MeanKvBytesPerDecodeStep(Timings.Options.NumPromptTokens + 1, Timings.Options.NumDecodeSteps);
    public double? MemoryRooflineTokensPerSecond => Limits is null ? null : Limits.CopyBytesPerSecond / Cost.WeightBytesPerDecodedToken;
    public double? DecodePercentOfMemoryRoofline => MemoryRooflineTokensPerSecond is double roof ? 100 * Timings.DecodeTokensPerSecond / roof : null;
    public double? PrefillPercentOfComputePeak => Limits is null ? null : 100 * PrefillFlopsPerSecond / Limits.FmaFlopsPerSecond;
    // q8_0/q4_0 projections multiply in int8 (VNNI: 32 multiply-adds per 256-bit instruction against 16 per Vector512
    // f32 FMA), so their prefill is not bounded by the f32 FMA peak the percentage is taken of.
    private bool IntegerMatrices => MatrixDTypes.Contains("q8_0", StringComparison.Ordinal) || MatrixDTypes.Contains("q4_0", StringComparison.Ordinal);

    /// <summary>One JSON object (Utf8JsonWriter: no reflection, safe under Native AOT); times in ms, rates per second, sizes in bytes.</summary>
    public void WriteJson(Stream stream)
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        var o = Timings.Options;
        json.WriteStartObject();
        json.WriteString("model", Model);
        json.WriteString("weights", Weights);
        json.WriteString("matrixDTypes", MatrixDTypes);
        json.WriteNumber("threads", NumThreads);
        json.WriteString("cpuKernels", Kernels.MatMul.CpuFeatures.Level);
        json.WriteNumber("promptTokens", o.NumPromptTokens);
        json.WriteNumber("genTokens", o.NumDecodeSteps);
        json.WriteNumber("repetitions", o.NumRepetitions);
        json.WriteNumber("warmups", Timings.NumWarmupsRun);
        json.WriteNumber("prefillTokensPerSecond", Timings.PrefillTokensPerSecond);
        json.WriteNumber("decodeTokensPerSecond", Timings.DecodeTokensPerSecond);
        WriteDistributionMs(json, "timeToFirstTokenMs", TimeToFirstToken);
        WriteDistributionMs(json, "timePerOutputTokenMs", TimePerOutputToken);
        json.WriteNumber("peakRssBytes", PeakRssBytes);
        WriteNumberOrNull(json, "runPeakRssBytes", RunPeakRssBytes);
        json.WriteNumber("weightBytesPerToken", Cost.WeightBytesPerDecodedToken);
        json.WriteNumber("meanKvBytesPerDecodeStep", MeanKvBytesPerDecodeStep);
        json.WriteNumber("achievedWeightBandwidthBytesPerSecond", WeightBandwidth);
        json.WriteNumber("prefillFlops", PrefillFlops);
        json.WriteNumber("prefillFlopsPerSecond", PrefillFlopsPerSecond);
        if (Limits is { } limits)
        {
            json.WriteNumber("rooflineThreads", limits.NumThreads);
            json.WriteNumber("copyBandwidthBytesPerSecond", limits.CopyBytesPerSecond);
            json.WriteNumber("copyArrayBytes", limits.CopyArraySizeInBytes);
            json.WriteNumber("fmaPeakFlopsPerSecond", limits.FmaFlopsPerSecond);
            json.WriteNumber("fmaLanes", limits.FmaLanes);
        }
        WriteNumberOrNull(json, "memoryRooflineTokensPerSecond", MemoryRooflineTokensPerSecond);
        WriteNumberOrNull(json, "decodePercentOfMemoryRoofline", DecodePercentOfMemoryRoofline);
        WriteNumberOrNull(json, "prefillPercentOfComputePeak", PrefillPercentOfComputePeak);
        json.WriteEndObject();
        json.Flush();
    }

    /// <summary>A human-readable table.</summary>
    public void WriteTable(TextWriter w)
    {
        var ci = CultureInfo.InvariantCulture;
        var o = Timings.Options;
        w.WriteLine(string.Format(ci, "{0}: {1}; matrices {2}; {3} thread(s); {4} kernels", Model, Weights, MatrixDTypes, NumThreads, Kernels.MatMul.CpuFeatures.Level));
        w.WriteLine(string.Format(ci, "prompt {0} tokens, {1} decode steps, {2} repetitions after {3} warm-up", o.NumPromptTokens, o.NumDecodeSteps, o.NumRepetitions, Timings.NumWarmupsRun));
        w.WriteLine();
        w.WriteLine(string.Format(ci, "  prefill                {0,12:F1} tokens/s   {1,8:F1} GFLOP/s{2}",
            Timings.PrefillTokensPerSecond, PrefillFlopsPerSecond / 1e9,
            PrefillPercentOfComputePeak is double pp ? string.Format(ci, "   {0,5:F1}% of the f32 FMA peak{1}", pp, IntegerMatrices ? " (int8 dot products, which can exceed it)" : "") : ""));
        w.WriteLine(string.Format(ci, "  decode                 {0,12:F1} tokens/s   {1,8:F2} GB/s of weights{2}",
            Timings.DecodeTokensPerSecond, WeightBandwidth / 1e9,
            DecodePercentOfMemoryRoofline is double dp ? string.Format(ci, "   {0,5:F1}% of the memory roofline ({1:F1} tokens/s)", dp, MemoryRooflineTokensPerSecond) : ""));
        w.WriteLine(string.Format(ci, "  time to first token    p50 {0,9:F3} ms   p95 {1,9:F3} ms   p99 {2,9:F3} ms   (over {3} repetitions)",
            TimeToFirstToken.P50 * 1e3, TimeToFirstToken.P95 * 1e3, TimeToFirstToken.P99 * 1e3, TimeToFirstToken.Count));
        w.WriteLine(string.Format(ci, "  time per output token  p50 {0,9:F3} ms   p95 {1,9:F3} ms   p99 {2,9:F3} ms   (over {3} decode steps)",
            TimePerOutputToken.P50 * 1e3, TimePerOutputToken.P95 * 1e3, TimePerOutputToken.P99 * 1e3, TimePerOutputToken.Count));
        w.WriteLine(string.Format(ci, "  peak RSS               {0,12:F1} MiB{1}", PeakRssBytes / 1048576.0,
            RunPeakRssBytes is long run ? string.Format(ci, " (after loading: {0:F1} MiB)", run / 1048576.0) : ""));
        w.WriteLine(string.Format(ci, "  weights per token      {0,12:F2} MB (stored types; the embedding counts one row)   KV read per step {1:F2} MB (mean, not in the roofline)",
            Cost.WeightBytesPerDecodedToken / 1e6, MeanKvBytesPerDecodeStep / 1e6));
        w.WriteLine(string.Format(ci, "  prefill work           {0,12:F3} GFLOP (2 x matrix parameters x tokens + LM head once + causal attention{1})", PrefillFlops / 1e9,
            Cost.NumLogitsRowsOnlyParameters is null ? "" : "; the last layer past its KV write for the last token only"));
        if (Limits is { } limits)
        {
            w.WriteLine();
            w.WriteLine(string.Format(ci, "  machine ({0} threads)   copy {1:F1} GB/s (read + write, 2 x {2} MiB arrays, best run)   f32 FMA {3:F1} GFLOP/s ({4} lanes)",
                limits.NumThreads, limits.CopyBytesPerSecond / 1e9, limits.CopyArraySizeInBytes >> 20, limits.FmaFlopsPerSecond / 1e9, limits.FmaLanes));
        }
    }

    private static void WriteDistributionMs(Utf8JsonWriter json, string name, Distribution d)
    {
        json.WriteStartObject(name);
        json.WriteNumber("count", d.Count);
        json.WriteNumber("min", d.Min * 1e3);
        json.WriteNumber("mean", d.Mean * 1e3);
        json.WriteNumber("p50", d.P50 * 1e3);
        json.WriteNumber("p95", d.P95 * 1e3);
        json.WriteNumber("p99", d.P99 * 1e3);
        json.WriteNumber("max", d.Max * 1e3);
        json.WriteEndObject();
    }

    private static void WriteNumberOrNull(Utf8JsonWriter json, string name, double? value)
    {
        if (value is double v) json.WriteNumber(name, v);
        else json.WriteNull(name);
    }

    private static void WriteNumberOrNull(Utf8JsonWriter json, string name, long? value)
    {
        if (value is long v) json.WriteNumber(name, v);
        else json.WriteNull(name);
    }

    private static double Sum(double[] values)
    {
        double sum = 0;
        foreach (double v in values) sum += v;
        return sum;
    }
}
