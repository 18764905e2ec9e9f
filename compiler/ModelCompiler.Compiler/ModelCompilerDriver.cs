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

    /// <summary>The engine's CUDA part (<c>{Class}.Cuda.g.cs</c>: kernel source and launch plan), produced with <see cref="Source"/>.</summary>
    public string? CudaEngineSource { get; init; }
}

/// <summary>
/// The compiler core's entry point: description text → parse and validate → graph IR → fusion → memory
/// plan → C# engine source. Used by the Roslyn generator and by tests; it never throws for bad input.
/// </summary>
public static class ModelCompilerDriver
{
    /// <summary>Compiles <paramref name="descriptionText"/> (read from <paramref name="descriptionPath"/>) into the engine class <paramref name="engine"/>.</summary>
    public static CompilationResult Compile(string descriptionText, string descriptionPath, EngineClassInfo engine) =>
        FromPlan(descriptionText, descriptionPath, (plan, diagnostics) =>
            new CompilationResult(CSharpEmitter.Emit(plan, engine), diagnostics) { CudaEngineSource = CudaEmitter.EmitEngineFile(plan, engine) });

    /// <summary>
    /// Compiles <paramref name="descriptionText"/> up to the kernel plan and renders the block graph, the
    /// fused kernels, the arena layout and the weight table as text; null (with diagnostics) on errors.
    /// </summary>
    public static CompilationResult DumpPlan(string descriptionText, string descriptionPath) =>
        FromPlan(descriptionText, descriptionPath, (plan, diagnostics) => new CompilationResult(PlanPrinter.Print(plan), diagnostics));

    /// <summary>
    /// Compiles <paramref name="descriptionText"/> to the CUDA C++ source of its kernels (what the engine's
    /// <c>CudaSource</c> holds); null (with diagnostics) on errors or when the plan has no CUDA kernels yet.
    /// </summary>
    public static CompilationResult CompileCuda(string descriptionText, string descriptionPath) =>
        FromPlan(descriptionText, descriptionPath, (plan, diagnostics) =>
            new CompilationResult(CudaEmitter.Supports(plan) ? CudaEmitter.Emit(plan).Source : null, diagnostics));

    // Parse → plan → output, with the one guarantee every entry point shares: bad input becomes
    // diagnostics, and a bug of ours becomes MC0023 instead of an exception that would crash the build.
    private static CompilationResult FromPlan(string descriptionText, string descriptionPath, Func<KernelPlan, List<CompilerDiagnostic>, CompilationResult> output)
    {
        var diagnostics = new List<CompilerDiagnostic>();
        try
        {
            var parsed = DescriptionParser.Parse(descriptionText, descriptionPath);
            diagnostics.AddRange(parsed.Diagnostics);
            if (parsed.Description is null) return new CompilationResult(null, diagnostics);
            return output(Planner.Plan(parsed.Description), diagnostics);
        }
        catch (Exception e)
        {
            diagnostics.Add(DiagnosticCatalog.InternalError.At(descriptionPath, SourceSpan.None, e.GetType().Name + ": " + e.Message));
            return new CompilationResult(null, diagnostics);
        }
    }
}
