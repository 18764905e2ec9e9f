using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Hosting.ConsoleCapture;

namespace ModelCompiler.Tests.Hosting;

/// <summary>The serving engine's own options on <c>serve</c> and <c>bench serve</c>: checked before anything loads or listens.</summary>
[Collection(nameof(ConsoleCollection))]
public sealed class ServeOptionTests
{
    [Theory]
    [InlineData("serve", "8")]
    [InlineData("serve", "513")]
    [InlineData("bench serve", "0")]
    public void A_step_budget_the_model_cannot_run_is_one_error_line_and_exit_code_2(string command, string budget)
    {
        string[] listen = command == "serve" ? ["--port", "0"] : [];   // were it accepted, serve would listen on a free port
        var (code, stdout, stderr) = Run<Stories260KTestEngine>([.. command.Split(' '), "--max-batch-tokens", budget, .. listen]);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Equal($"error: --max-batch-tokens must be between 16 and 512 (the description's maxBatchTokens), got {budget}\n", stderr.ReplaceLineEndings("\n"));
    }

    [Theory]
    [InlineData("--random-weights", "1")]
    [InlineData("--max-batch-tokens", "64")]
    [InlineData("--device", "cpu")]
    public void Bench_serve_against_a_url_refuses_the_in_process_servers_options(string option, string value)
    {
        // Nothing listens on port 9: the check must come before any connection.
        var (code, stdout, stderr) = Run<Stories260KTestEngine>("bench", "serve", "--url", "http://127.0.0.1:9", option, value);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Equal($"error: {option} configures the in-process server; with --url, give it to that server's serve command instead\n", stderr.ReplaceLineEndings("\n"));
    }
}
