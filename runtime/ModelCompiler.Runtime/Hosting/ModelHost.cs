namespace ModelCompiler.Runtime.Hosting;

/// <summary>The command-line host every engine executable's <c>Program.cs</c> calls into.</summary>
public static class ModelHost
{
    /// <summary>Runs the command line <paramref name="args"/> against engine <typeparamref name="TEngine"/>; returns the exit code.</summary>
    public static int Run<TEngine>(string[] args) where TEngine : CompiledModel, new()
    {
        _ = args;
        return 0;
    }
}
