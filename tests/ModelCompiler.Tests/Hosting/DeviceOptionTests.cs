using System.Text.Json;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Hosting.ConsoleCapture;

namespace ModelCompiler.Tests.Hosting;

/// <summary><c>--device auto|cpu|cuda</c> (and the hidden <c>emulator</c>) on generate, bench and serve, on a machine without libcuda.</summary>
[Collection(nameof(ConsoleCollection))]
public sealed class DeviceOptionTests
{
    private static readonly string[] s_generate = ["generate", "--prompt", "Once upon a time", "--max-tokens", "40", "--temperature", "0"];

    private static bool GpuUsable(out string reason)
    {
        bool usable = CudaDriverDevice.TryCreate(out var device, out reason);
        device?.Dispose();
        return usable;
    }

    [Fact]
    public void The_probe_never_throws_and_gives_a_one_line_reason()
    {
        if (GpuUsable(out string reason)) return; // a machine with a GPU: nothing to check here
        Assert.False(string.IsNullOrWhiteSpace(reason));
        Assert.DoesNotContain('\n', reason);
    }

    [Fact]
    public void Auto_without_a_gpu_falls_back_to_the_cpu_and_says_why_in_one_line()
    {
        if (GpuUsable(out string reason)) return;
        var cpu = Run<Stories260KTestEngine>([.. s_generate, "--device", "cpu"]);
        var auto = Run<Stories260KTestEngine>([.. s_generate, "--device", "auto"]);
        var byDefault = Run<Stories260KTestEngine>(s_generate);

        Assert.Equal(0, auto.ExitCode);
        Assert.Equal(cpu.Stdout, auto.Stdout);
        Assert.Equal(cpu.Stdout, byDefault.Stdout);
        Assert.DoesNotContain("running on the CPU", cpu.Stderr);
        string[] notes = auto.Stderr.Split('\n').Where(l => l.StartsWith("note: running on the CPU: ", StringComparison.Ordinal)).ToArray();
        Assert.Single(notes);
        Assert.Contains(reason, notes[0]);
        Assert.Contains("note: running on the CPU: ", byDefault.Stderr);
    }

    [Theory]
    [InlineData("generate")]
    [InlineData("bench")]
    [InlineData("serve")]
    public void Cuda_without_a_gpu_is_one_error_line_and_exit_code_2(string command)
    {
        if (GpuUsable(out string reason)) return;
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(command, "--device", "cuda");
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Equal($"error: --device cuda: {reason}\n", stderr.ReplaceLineEndings("\n"));
    }

    [Fact]
    public void Serve_falls_back_to_the_cpu_without_a_gpu_and_refuses_an_unknown_device()
    {
        var (code, _, stderr) = Run<Stories260KTestEngine>("serve", "--device", "tpu", "--port", "0");
        Assert.Equal(2, code);
        Assert.Equal("error: --device must be auto, cpu or cuda; got 'tpu'\n", stderr.ReplaceLineEndings("\n"));
    }

    [Fact]
    public void Bench_serve_runs_the_serving_engine_on_the_emulator()
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(
            "bench", "serve", "--device", "emulator", "--concurrency", "2", "--requests", "3", "--prompt-tokens", "6", "--gen-tokens", "4", "--json");
        Assert.True(code == 0, stderr);
        Assert.Contains("note: running on CUDA emulator", stderr);
        var root = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(3, root.GetProperty("succeeded").GetInt32());
        Assert.Equal(0, root.GetProperty("failed").GetInt32());
        Assert.Equal(12, root.GetProperty("generated_tokens").GetInt32());
        Assert.Equal(0, root.GetProperty("after").GetProperty("kv_blocks_used").GetInt32());
    }

    [Fact]
    public void Unknown_device_is_an_error()
    {
        var (code, _, stderr) = Run<Stories260KTestEngine>("generate", "--device", "tpu");
        Assert.Equal(2, code);
        Assert.StartsWith("error: --device must be auto, cpu or cuda", stderr);
    }

    [Theory]
    [InlineData("0.8", "40", "0.9")]
    [InlineData("1.1", "0", "1")]
    public void Seeded_sampled_generate_on_the_emulator_prints_the_cpus_text(string temperature, string topK, string topP)
    {
        string[] generate = ["generate", "--prompt", "Once upon a time", "--max-tokens", "40", "--temperature", temperature, "--top-k", topK, "--top-p", topP, "--seed", "1234"];
        var cpu = Run<Stories260KTestEngine>([.. generate, "--device", "cpu"]);
        var emulated = Run<Stories260KTestEngine>([.. generate, "--device", "emulator"]);
        Assert.True(emulated.ExitCode == 0, emulated.Stderr);
        Assert.True(cpu.Stdout.Length > "Once upon a time\n".Length + 20);
        Assert.Equal(cpu.Stdout, emulated.Stdout);
        var greedy = Run<Stories260KTestEngine>([.. s_generate, "--device", "cpu"]);
        Assert.NotEqual(greedy.Stdout, cpu.Stdout);   // it did sample
    }

    [Fact]
    public void Greedy_generate_on_the_emulator_prints_the_cpus_text()
    {
        var cpu = Run<Stories260KTestEngine>([.. s_generate, "--device", "cpu"]);
        var emulated = Run<Stories260KTestEngine>([.. s_generate, "--device", "emulator"]);
        Assert.True(emulated.ExitCode == 0, emulated.Stderr);
        Assert.StartsWith("Once upon a time", cpu.Stdout);
        Assert.True(cpu.Stdout.Length > "Once upon a time\n".Length + 40);
        Assert.Equal(cpu.Stdout, emulated.Stdout);
        Assert.Contains("note: running on CUDA emulator", emulated.Stderr);
    }

    [Fact]
    public void Bench_runs_on_the_emulator()
    {
        var (code, stdout, stderr) = Run<Stories260KTestEngine>(
            "bench", "--device", "emulator", "--prompt-tokens", "6", "--gen-tokens", "3", "--repetitions", "1", "--warmup", "0", "--json");
        Assert.True(code == 0, stderr);
        var root = JsonDocument.Parse(stdout).RootElement;
        Assert.StartsWith("f32 on CUDA emulator", root.GetProperty("matrixDTypes").GetString());
        Assert.True(root.GetProperty("decodeTokensPerSecond").GetDouble() > 0);
        Assert.Equal(JsonValueKind.Null, root.GetProperty("decodePercentOfMemoryRoofline").ValueKind);
    }
}
