using System;
using System.CommandLine;
using System.IO;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// The command-line host every engine executable's <c>Program.cs</c> calls into:
/// <c>&lt;engine&gt; generate --prompt "..." [--max-tokens N] [--temperature T] ...</c>.
/// Generated text goes to stdout and nothing else does; statistics and errors go to stderr.
/// Exit codes: 0 success, 2 bad usage or unusable input files.
/// </summary>
public static class ModelHost
{
    /// <summary>Exit code for bad arguments and for files that cannot be used.</summary>
    public const int UsageOrInputError = 2;

    /// <summary>Runs the command line <paramref name="args"/> against engine <typeparamref name="TEngine"/>; returns the exit code.</summary>
    public static int Run<TEngine>(string[] args) where TEngine : CompiledModel, new()
    {
        var engine = new TEngine();
        var root = new RootCommand($"{engine.Config.Name}: an inference engine compiled by ModelCompiler.");
        root.Subcommands.Add(GenerateCommand.Create(engine));
        var backends = ServeBackendFactory.ForEngine(engine);
        var bench = BenchCommand.Create(engine);
        bench.Subcommands.Add(BenchServeCommand.Create(engine, backends));
        root.Subcommands.Add(bench);
        root.Subcommands.Add(ServeCommand.Create(engine, backends));
        root.Subcommands.Add(QuantizeCommand.Create(engine));
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors) Console.Error.WriteLine("error: " + error.Message);
            Console.Error.WriteLine("Run with --help for usage.");
            return UsageOrInputError;
        }
        try
        {
            // Our own handler below turns expected failures into one line and exit code 2.
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (ModelLoadException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return UsageOrInputError;
        }
        catch (IOException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return UsageOrInputError;
        }
    }
}
