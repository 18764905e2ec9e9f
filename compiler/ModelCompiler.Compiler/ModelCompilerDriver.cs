using System;
using System.Collections.Generic;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Emit;
using ModelCompiler.Compiler.Planning;

namespace ModelCompiler.Compiler;

/// <summary>The outcome of compiling a description: generated source (null when there were errors) and diagnostics.</summary>
public sealed record CompilationResult(string? Source, IReadOnlyList<CompilerDiagnostic> Diagnostics)
{
    /// <summary>True when source was produced (warnings allowed).</summary>
    public bool Succeeded => Source is not null;
}

/// <summary>
/// The compiler core's entry point: description text → parse and validate → graph IR → fusion → memory
/// plan → C# engine source. Used by the Roslyn generator and by tests; it never throws for bad input.
/// </summary>
public static class ModelCompilerDriver
{
    /// <summary>Compiles <paramref name="descriptionText"/> (read from <paramref name="descriptionPath"/>) into the engine class <paramref name="engine"/>.</summary>
    public static CompilationResult Compile(string descriptionText, string descriptionPath, EngineClassInfo engine)
    {
        var diagnostics = new List<CompilerDiagnostic>();
        try
        {
            var parsed = DescriptionParser.Parse(descriptionText, descriptionPath);
            diagnostics.AddRange(parsed.Diagnostics);
            if (parsed.Description is null) return new CompilationResult(null, diagnostics);
            var plan = Planner.Plan(parsed.Description);
            return new CompilationResult(CSharpEmitter.Emit(plan, engine), diagnostics);
        }
        catch (Exception e)
        {
            // A bug of ours, not the user's: report it as a diagnostic instead of crashing the build.
            diagnostics.Add(DiagnosticCatalog.InternalError.At(descriptionPath, SourceSpan.None, e.GetType().Name + ": " + e.Message));
            return new CompilationResult(null, diagnostics);
        }
    }

    /// <summary>
    /// Compiles <paramref name="descriptionText"/> up to the kernel plan and renders the block graph, the
    /// fused kernels, the arena layout and the weight table as text; null (with diagnostics) on errors.
    /// </summary>
    public static CompilationResult DumpPlan(string descriptionText, string descriptionPath)
    {
        var diagnostics = new List<CompilerDiagnostic>();
        try
        {
            var parsed = DescriptionParser.Parse(descriptionText, descriptionPath);
            diagnostics.AddRange(parsed.Diagnostics);
            if (parsed.Description is null) return new CompilationResult(null, diagnostics);
            return new CompilationResult(PlanPrinter.Print(Planner.Plan(parsed.Description)), diagnostics);
        }
        catch (Exception e)
        {
            diagnostics.Add(DiagnosticCatalog.InternalError.At(descriptionPath, SourceSpan.None, e.GetType().Name + ": " + e.Message));
            return new CompilationResult(null, diagnostics);
        }
    }
}
