using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Hosting;

namespace ModelCompiler.Tests.Hosting;

/// <summary>Runs the engine host in-process with stdout and stderr captured (callers belong to the ConsoleCollection).</summary>
internal static class ConsoleCapture
{
    public static (int ExitCode, string Stdout, string Stderr) Run<TEngine>(params string[] args) where TEngine : CompiledModel, new()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var (oldOut, oldError) = (Console.Out, Console.Error);
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            int code = ModelHost.Run<TEngine>(args);
            return (code, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldError);
        }
    }
}
