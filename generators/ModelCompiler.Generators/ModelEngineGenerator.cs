using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;
using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Emit;

namespace ModelCompiler.Generators;

/// <summary>
/// Compiles each <c>[ModelEngine("x.model.json")] partial class</c> from its model description into a
/// fused forward pass. A thin caller of the compiler core: it finds the classes and the description
/// files, hands over text, and turns the core's diagnostics into Roslyn diagnostics at the JSON location.
/// </summary>
[Generator(LanguageNames.CSharp)]
public sealed class ModelEngineGenerator : IIncrementalGenerator
{
    /// <summary>Fully qualified name of the attribute that anchors an engine.</summary>
    public const string AttributeName = "ModelCompiler.Runtime.ModelEngineAttribute";

    /// <summary>Tracking names of the pipeline stages (used by the incrementality tests).</summary>
    public static class Stages
    {
        /// <summary>Classes with the attribute.</summary>
        public const string EngineRequests = nameof(EngineRequests);
        /// <summary>Description files.</summary>
        public const string Descriptions = nameof(Descriptions);
        /// <summary>Compiled engines.</summary>
        public const string Compiled = nameof(Compiled);
        /// <summary>Generated sources.</summary>
        public const string Sources = nameof(Sources);
    }

    /// <inheritdoc />
    public void Initialize(IncrementalGeneratorInitializationContext context)
    {
        var requests = context.SyntaxProvider
            .ForAttributeWithMetadataName(AttributeName, static (node, _) => node is ClassDeclarationSyntax, static (ctx, ct) => ReadRequest(ctx, ct))
            .WithTrackingName(Stages.EngineRequests);

        var descriptions = context.AdditionalTextsProvider
            .Where(static file => file.Path.EndsWith(".model.json", StringComparison.OrdinalIgnoreCase))
            .Select(static (file, ct) => new DescriptionFile(file.Path, file.GetText(ct)?.ToString() ?? ""))
            .WithTrackingName(Stages.Descriptions);

        var compiled = requests
            .Combine(descriptions.Collect())
            .Select(static (pair, _) => Compile(pair.Left, pair.Right))
            .WithTrackingName(Stages.Compiled);

        // Split so that a change that only moves diagnostics (an edit elsewhere in the file) leaves the
        // source output cached, and the other way round.
        context.RegisterSourceOutput(compiled.Select(static (c, _) => c.Source).WithTrackingName(Stages.Sources), static (spc, source) =>
        {
            if (source is not null) spc.AddSource(source.HintName, SourceText.From(source.Text, System.Text.Encoding.UTF8));
        });
        // The CUDA part ({Class}.Cuda.g.cs: kernel source and launch plan) is a second file of the same class.
        context.RegisterSourceOutput(compiled.Select(static (c, _) => c.CudaSource), static (spc, source) =>
        {
            if (source is not null) spc.AddSource(source.HintName, SourceText.From(source.Text, System.Text.Encoding.UTF8));
        });
        context.RegisterSourceOutput(compiled.Select(static (c, _) => c.Diagnostics), static (spc, diagnostics) =>
        {
            foreach (var d in diagnostics) spc.ReportDiagnostic(ToDiagnostic(d));
        });
    }

    private static EngineRequest ReadRequest(GeneratorAttributeSyntaxContext ctx, CancellationToken ct)
    {
        var symbol = (INamedTypeSymbol)ctx.TargetSymbol;
        var syntax = (ClassDeclarationSyntax)ctx.TargetNode;
        var attribute = ctx.Attributes[0];
        string path = attribute.ConstructorArguments.Length == 1 && attribute.ConstructorArguments[0].Value is string s ? s : "";
        var attributeLocation = LocationInfo.From(attribute.ApplicationSyntaxReference?.GetSyntax(ct).GetLocation());
        bool isPartial = syntax.Modifiers.Any(SyntaxKind.PartialKeyword);
        bool supported = symbol.ContainingType is null && !symbol.IsGenericType;
        string? ns = symbol.ContainingNamespace.IsGlobalNamespace ? null : symbol.ContainingNamespace.ToDisplayString();
        return new EngineRequest(ns, symbol.Name, path, isPartial, supported, LocationInfo.From(syntax.Identifier.GetLocation()), attributeLocation);
    }

    private static CompiledEngine Compile(EngineRequest request, ImmutableArray<DescriptionFile> files)
    {
        DiagnosticInfo At(DiagnosticKind kind, LocationInfo? location, params object[] args) =>
            new(kind.Id, kind.Severity == Severity.Error, kind.Title, string.Format(System.Globalization.CultureInfo.InvariantCulture, kind.MessageFormat, args), location);

        if (!request.IsPartial)
            return Failed(At(DiagnosticCatalog.ClassNotPartial, request.ClassLocation, request.ClassName));
        if (!request.IsSupportedShape)
            return Failed(At(DiagnosticCatalog.UnsupportedClassShape, request.ClassLocation, request.ClassName));

        var file = files.Where(f => PathMatching.Matches(f.Path, request.DescriptionPath)).OrderBy(f => f.Path, StringComparer.Ordinal).FirstOrDefault();
        if (file is null)
            return Failed(At(DiagnosticCatalog.DescriptionNotFound, request.AttributeLocation, request.DescriptionPath));

        var result = ModelCompilerDriver.Compile(file.Text, file.Path,
            new EngineClassInfo(request.Namespace, request.ClassName, System.IO.Path.GetFileName(file.Path)));
        var text = SourceText.From(file.Text);
        var diagnostics = result.Diagnostics.Select(d => ToInfo(d, text)).ToArray();
        string hintName = (request.Namespace is null ? "" : request.Namespace + ".") + request.ClassName + ".g.cs";
        string cudaHintName = hintName.Substring(0, hintName.Length - ".g.cs".Length) + ".Cuda.g.cs";
        return new CompiledEngine(result.Source is null ? null : new GeneratedSource(hintName, result.Source), new EquatableArray<DiagnosticInfo>(diagnostics),
            result.Source is null || result.CudaEngineSource is null ? null : new GeneratedSource(cudaHintName, result.CudaEngineSource));
    }

    private static CompiledEngine Failed(DiagnosticInfo diagnostic) =>
        new(null, new EquatableArray<DiagnosticInfo>(new[] { diagnostic }));

    private static DiagnosticInfo ToInfo(CompilerDiagnostic d, SourceText text)
    {
        int start = Math.Min(Math.Max(d.Span.Start, 0), text.Length);
        int length = Math.Min(Math.Max(d.Span.Length, 0), text.Length - start);
        var span = new TextSpan(start, length);
        var title = DiagnosticCatalog.All.FirstOrDefault(k => k.Id == d.Id)?.Title ?? d.Id;
        return new DiagnosticInfo(d.Id, d.Severity == Severity.Error, title, d.Message,
            new LocationInfo(d.FilePath, span, text.Lines.GetLinePositionSpan(span)));
    }

    private static Diagnostic ToDiagnostic(DiagnosticInfo d)
    {
        var descriptor = new DiagnosticDescriptor(d.Id, d.Title, "{0}", "ModelCompiler",
            d.IsError ? DiagnosticSeverity.Error : DiagnosticSeverity.Warning, isEnabledByDefault: true);
        return Diagnostic.Create(descriptor, d.Location?.ToLocation() ?? Location.None, d.Message);
    }
}
