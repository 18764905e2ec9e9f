using System.Text.Json;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Hosting.ConsoleCapture;

namespace ModelCompiler.Tests.Hosting;

/// <summary>The engine host's <c>bench</c> command on Stories260K with tiny settings (the numbers are not checked, only their sanity).</summary>
[Collection(nameof(ConsoleCollection))]
public class BenchCommandTests
{
    // Tiny probes: a 4 MiB copy and 10,000 FMA iterations per thread keep the test well under a second.
    private static readonly string[] s_quick =
        ["--prompt-tokens", "8", "--gen-tokens", "8", "--repetitions", "2", "--warmup-seconds", "0", "--probe-copy-mib", "4", "--probe-fma-iterations", "10000"];

    // The quick settings, except those that args override.
    private static string[] Bench(params string[] args)
    {
        var list = new List<string> { "bench" };
        for (int i = 0; i < s_quick.Length; i += 2)
            if (!args.Contains(s_quick[i])) list.AddRange([s_quick[i], s_quick[i + 1]]);
        return [.. list, .. args];
    }

    [Fact]
    public void Json_output_is_one_object_with_every_field_and_sane_values()
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(Bench("--json", "--threads", "2"));

        Assert.True(code == 0, stderr);
        using var document = JsonDocument.Parse(stdout);
        var root = document.RootElement;
        Assert.Equal("Stories260K", root.GetProperty("model").GetString());
        Assert.Contains("stories260K.bin", root.GetProperty("weights").GetString());
        Assert.Equal("f32", root.GetProperty("matrixDTypes").GetString());
        Assert.Equal(2, root.GetProperty("threads").GetInt32());
        Assert.Equal(ModelCompiler.Runtime.Kernels.MatMul.CpuFeatures.Level, root.GetProperty("cpuKernels").GetString());
        Assert.Equal(8, root.GetProperty("promptTokens").GetInt32());
        Assert.Equal(8, root.GetProperty("genTokens").GetInt32());
        Assert.Equal(2, root.GetProperty("repetitions").GetInt32());
        Assert.Equal(1, root.GetProperty("warmups").GetInt32());
        foreach (var name in new[]
                 {
                     "prefillTokensPerSecond", "decodeTokensPerSecond", "peakRssBytes", "runPeakRssBytes", "weightBytesPerToken",
                     "meanKvBytesPerDecodeStep", "achievedWeightBandwidthBytesPerSecond", "prefillFlops", "prefillFlopsPerSecond",
                     "copyBandwidthBytesPerSecond", "copyArrayBytes", "fmaPeakFlopsPerSecond", "fmaLanes", "rooflineThreads",
                     "memoryRooflineTokensPerSecond", "decodePercentOfMemoryRoofline", "prefillPercentOfComputePeak",
                 })
        {
            Assert.True(root.GetProperty(name).GetDouble() > 0, $"{name} = {root.GetProperty(name)}");
        }
        Assert.Equal(4 << 20, root.GetProperty("copyArrayBytes").GetInt64());
        AssertDistribution(root.GetProperty("timeToFirstTokenMs"), expectedCount: 2);
        AssertDistribution(root.GetProperty("timePerOutputTokenMs"), expectedCount: 16);

        // Consistency of the derived figures.
        double decode = root.GetProperty("decodeTokensPerSecond").GetDouble();
        double bytesPerToken = root.GetProperty("weightBytesPerToken").GetDouble();
        Assert.Equal(bytesPerToken * decode, root.GetProperty("achievedWeightBandwidthBytesPerSecond").GetDouble(), 6);
        double roof = root.GetProperty("copyBandwidthBytesPerSecond").GetDouble() / bytesPerToken;
        Assert.Equal(roof, root.GetProperty("memoryRooflineTokensPerSecond").GetDouble(), 6);
        Assert.Equal(100 * decode / roof, root.GetProperty("decodePercentOfMemoryRoofline").GetDouble(), 6);
        double tpotMeanMs = root.GetProperty("timePerOutputTokenMs").GetProperty("mean").GetDouble();
        Assert.Equal(1000 / tpotMeanMs, decode, 3);
    }

    private static void AssertDistribution(JsonElement d, int expectedCount)
    {
        Assert.Equal(expectedCount, d.GetProperty("count").GetInt32());
        double min = d.GetProperty("min").GetDouble(), p50 = d.GetProperty("p50").GetDouble(), p95 = d.GetProperty("p95").GetDouble();
        double p99 = d.GetProperty("p99").GetDouble(), max = d.GetProperty("max").GetDouble(), mean = d.GetProperty("mean").GetDouble();
        Assert.True(min > 0, $"min {min}");
        Assert.True(min <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max, $"{min} {p50} {p95} {p99} {max}");
        Assert.InRange(mean, min, max);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("q8_0")]
    public void Default_output_is_a_table_on_stdout(string? dtype)
    {
        string[] weights = dtype is null ? [] : ["--random-weights", "1", "--dtype", dtype];
        var (code, stdout, stderr) = Run<Stories260KTestEngine>([.. Bench(), "--device", "cpu", .. weights]);
        Assert.True(code == 0, stderr);
        Assert.Contains("prefill", stdout);
        Assert.Contains("tokens/s", stdout);
        Assert.Contains("% of the memory roofline", stdout);
        Assert.Contains("% of the f32 FMA peak", stdout);
        // int8 matrices are not bounded by the f32 peak, and the line says so; f32 ones are.
        Assert.Equal(dtype is not null, stdout.Contains("int8 dot products, which can exceed it", StringComparison.Ordinal));
        Assert.Contains("time per output token", stdout);
        Assert.Contains("peak RSS", stdout);
        // Stories260K's 172-wide rows are not whole q8_0 blocks: those matrices stay f32, with a note on stderr.
        if (dtype is null) Assert.Equal("", stderr);
    }

    [Fact]
    public void Warmup_seconds_extend_the_warmup_until_they_have_passed_and_warmup_0_turns_it_off()
    {
        // A tiny repetition takes milliseconds, so 0.3 s of warm-up needs more than the one requested repetition.
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(Bench("--warmup-seconds", "0.3", "--no-roofline", "--json"));
        Assert.True(code == 0, stderr);
        Assert.True(JsonDocument.Parse(stdout).RootElement.GetProperty("warmups").GetInt32() > 1);

        (code, stdout, stderr) = Run<Stories260KTestEngine>(Bench("--warmup", "0", "--warmup-seconds", "5", "--no-roofline", "--json"));
        Assert.True(code == 0, stderr);
        Assert.Equal(0, JsonDocument.Parse(stdout).RootElement.GetProperty("warmups").GetInt32());
    }

    [Theory]
    [InlineData("f32")]
    [InlineData("f16")]
    [InlineData("bf16")]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void Random_weights_run_in_every_dtype(string dtype)
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(
            "bench", "--random-weights", "7", "--dtype", dtype, "--prompt-tokens", "4", "--gen-tokens", "2", "--repetitions", "1", "--warmup", "0", "--no-roofline", "--json");

        Assert.True(code == 0, stderr);
        var root = JsonDocument.Parse(stdout).RootElement;
        Assert.Contains(dtype, root.GetProperty("matrixDTypes").GetString());
        Assert.Contains("random", root.GetProperty("weights").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("decodePercentOfMemoryRoofline").ValueKind);
        Assert.True(root.GetProperty("decodeTokensPerSecond").GetDouble() > 0);
        if (dtype is "q8_0" or "q4_0")
        {
            // Stories260K's w2 rows hold 172 weights, not whole blocks of 32: those stay f32, and a note says so.
            Assert.Equal("f32 x 5, " + dtype + " x 16", root.GetProperty("matrixDTypes").GetString());
            Assert.StartsWith("note: 5 matrices", stderr);
        }
    }

    [Fact]
    public void Weight_bytes_per_token_count_every_matrix_in_its_stored_type_and_one_embedding_row()
    {
        // Stories260K: per layer q|k|v [128, 64], o [64, 64], gate|up [344, 64], down [64, 172]; 11 norms of 64;
        // the tied LM head [512, 64] read in full; the embedding one row of 64.
        const long layerFloats = 128 * 64 + 64 * 64 + 344 * 64 + 64 * 172;
        const long floats = 5 * layerFloats + 11 * 64 + 512 * 64 + 64;
        var (_, stdout, _) = Run<Stories260KTestEngine>(Bench("--random-weights", "1", "--no-roofline", "--json"));
        var root = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(floats * 4, root.GetProperty("weightBytesPerToken").GetInt64());
        // 2 FLOPs per matrix parameter per prompt token, the head once, attention 4 x dim x (1 + ... + 8) per layer; the
        // last layer's attention, o, gate|up and down for the last of the 8 tokens only.
        const long afterAttention = 64 * 64 + 344 * 64 + 64 * 172;
        double flops = 2.0 * 5 * layerFloats * 8 - 2.0 * afterAttention * 7 + 2.0 * 512 * 64 + 4.0 * 64 * (36 * 4 + 8);
        Assert.Equal(flops, root.GetProperty("prefillFlops").GetDouble(), 6);
    }

    [Theory]
    [InlineData("--repetitions", "0")]
    [InlineData("--prompt-tokens", "0")]
    [InlineData("--gen-tokens", "-1")]
    [InlineData("--prompt-tokens", "510")] // 510 + 8 exceeds the context of 512
    [InlineData("--dtype", "q3_k")]
    [InlineData("--threads", "0")]
    [InlineData("--warmup-seconds", "-1")]
    public void Bad_options_exit_2_with_one_error_line(string option, string value)
    {
        string[] args = option == "--dtype" ? ["--random-weights", "1", option, value] : [option, value];
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(Bench(args));
        AssertOneErrorLine(code, stdout, stderr);
        Assert.Contains(option, stderr);
    }

    [Fact]
    public void Weights_and_random_weights_together_exit_2_with_one_error_line()
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(Bench("--weights", TestPaths.Model("stories260K.bin"), "--random-weights", "1"));
        AssertOneErrorLine(code, stdout, stderr);
        Assert.Contains("--random-weights", stderr);
    }

    [Fact]
    public void Dtype_without_random_weights_exits_2_with_one_error_line()
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(Bench("--dtype", "q8_0"));
        AssertOneErrorLine(code, stdout, stderr);
        Assert.Contains("--dtype", stderr);
    }

    private static void AssertOneErrorLine(int code, string stdout, string stderr)
    {
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error: ", stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
    }
}
