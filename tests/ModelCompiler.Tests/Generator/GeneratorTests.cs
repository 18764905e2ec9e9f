using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Text;
using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Emit;
using ModelCompiler.Generators;
using ModelCompiler.Tests.Compiler;
using Xunit;

namespace ModelCompiler.Tests.Generator;

/// <summary>An additional file given to the generator in memory.</summary>
internal sealed class InMemoryAdditionalText(string path, string text) : AdditionalText
{
    private readonly SourceText _text = SourceText.From(text);
    public override string Path { get; } = path;
    public override SourceText GetText(CancellationToken cancellationToken = default) => _text;
}

/// <summary>
/// The generator in-process with <see cref="CSharpGeneratorDriver"/>: its output against the compiler core,
/// the Roslyn location of every diagnostic it reports, and incrementality.
/// </summary>
public sealed class GeneratorTests
{
    private const string DescriptionPath = "/repo/models/Stories260K/stories260K.model.json";
    private const string EnginePath = "/repo/src/Engine.cs";

    private const string EngineSource = """
        using ModelCompiler.Runtime;

        namespace Demo;

        /// <summary>An engine.</summary>
        [ModelEngine("stories260K.model.json")]
        public sealed partial class StoriesEngine
        {
            public int Answer() => 42;
        }
        """;

    private static readonly CSharpParseOptions s_parseOptions = new(LanguageVersion.Latest);

    private static readonly Lazy<ImmutableArray<MetadataReference>> s_references = new(() =>
    {
        var paths = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => Path.GetFileName(p).StartsWith("System.", StringComparison.Ordinal) || Path.GetFileName(p) is "mscorlib.dll" or "netstandard.dll")
            .Append(typeof(ModelCompiler.Runtime.ModelEngineAttribute).Assembly.Location);
        return paths.Select(p => (MetadataReference)MetadataReference.CreateFromFile(p)).ToImmutableArray();
    });

    /// <summary>True when the referenced runtime has the kernels generated engines call (merged in parallel).</summary>
    private static bool RuntimeHasKernels =>
        typeof(ModelCompiler.Runtime.CompiledModel).Assembly.GetType("ModelCompiler.Runtime.Kernels.CpuKernels") is not null;

    private static CSharpCompilation CreateCompilation(params (string Path, string Text)[] sources) =>
        CSharpCompilation.Create("GeneratorTest",
            sources.Select(s => CSharpSyntaxTree.ParseText(s.Text, s_parseOptions, s.Path)),
            s_references.Value,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));

    private static GeneratorDriver CreateDriver(params AdditionalText[] files) =>
        CSharpGeneratorDriver.Create(
            new[] { new ModelEngineGenerator().AsSourceGenerator() },
            additionalTexts: files,
            parseOptions: s_parseOptions,
            driverOptions: new GeneratorDriverOptions(IncrementalGeneratorOutputKind.None, trackIncrementalGeneratorSteps: true));

    private static (GeneratorDriver Driver, GeneratorRunResult Result, Compilation Output) Run(string engineSource, params AdditionalText[] files)
    {
        var driver = CreateDriver(files).RunGeneratorsAndUpdateCompilation(CreateCompilation((EnginePath, engineSource)), out var output, out _);
        var result = Assert.Single(driver.GetRunResult().Results);
        Assert.Null(result.Exception);
        return (driver, result, output);
    }

    private static AdditionalText Stories(string? text = null) => new InMemoryAdditionalText(DescriptionPath, text ?? Descriptions.Stories260K);

    private static (int Line, int Column) ZeroBased((int Line, int Column) p) => (p.Line - 1, p.Column - 1);

    // ------------------------------------------------------------------ output

    [Fact]
    public void Generates_the_engine_and_its_cuda_part_equal_to_the_compiler_core_output()
    {
        var (_, result, output) = Run(EngineSource, Stories());
        Assert.Empty(result.Diagnostics);
        Assert.Equal(new[] { "Demo.StoriesEngine.Cuda.g.cs", "Demo.StoriesEngine.g.cs" }, result.GeneratedSources.Select(s => s.HintName).OrderBy(n => n, StringComparer.Ordinal));
        var source = result.GeneratedSources.Single(s => s.HintName == "Demo.StoriesEngine.g.cs");
        var cuda = result.GeneratedSources.Single(s => s.HintName == "Demo.StoriesEngine.Cuda.g.cs");
        var expected = ModelCompilerDriver.Compile(Descriptions.Stories260K, DescriptionPath, new EngineClassInfo("Demo", "StoriesEngine", "stories260K.model.json"));
        Assert.Equal(expected.Source, source.SourceText.ToString());
        Assert.Equal(expected.CudaEngineSource, cuda.SourceText.ToString());

        if (RuntimeHasKernels)
        {
            // The engine compiles against the runtime it was generated for.
            var errors = output.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
            Assert.True(errors.Count == 0, string.Join("\n", errors));
        }
    }

    [Fact]
    public void Other_model_json_files_are_ignored_and_the_path_is_matched_by_segments()
    {
        var decoy = new InMemoryAdditionalText("/repo/other/notstories260K.model.json", "{ broken");
        var unrelated = new InMemoryAdditionalText("/repo/readme.txt", "{ broken");
        var (_, result, _) = Run(EngineSource, decoy, unrelated, Stories());
        Assert.Empty(result.Diagnostics);
        Assert.Equal(2, result.GeneratedSources.Length); // the engine and its CUDA part
    }

    [Fact]
    public void Engine_in_the_global_namespace_gets_a_hint_name_without_a_namespace()
    {
        var (_, result, _) = Run("[ModelCompiler.Runtime.ModelEngine(\"stories260K.model.json\")] partial class GlobalEngine { }", Stories());
        Assert.Equal(new[] { "GlobalEngine.Cuda.g.cs", "GlobalEngine.g.cs" }, result.GeneratedSources.Select(s => s.HintName).OrderBy(n => n, StringComparer.Ordinal));
    }

    // ------------------------------------------------------------------ diagnostics and their locations

    [Fact]
    public void MC0001_json_error_is_reported_in_the_description_with_no_source_and_no_exception()
    {
        string text = Descriptions.Edit(Descriptions.Stories260K, "\"tiedEmbedding\": true\n", "\"tiedEmbedding\": true,\n");
        var (_, result, _) = Run(EngineSource, Stories(text));
        Assert.Empty(result.GeneratedSources);
        var d = Assert.Single(result.Diagnostics);
        Assert.Equal("MC0001", d.Id);
        Assert.Equal(DiagnosticSeverity.Error, d.Severity);
        var span = d.Location.GetLineSpan();
        Assert.Equal(DescriptionPath, span.Path);
        int offset = Descriptions.OffsetOf(text, "true,\n  }", "true,\n  ".Length);
        var (line, column) = ZeroBased(Descriptions.LineColumn(text, offset));
        Assert.Equal(new LinePosition(line, column), span.StartLinePosition);
        Assert.Equal(offset, d.Location.SourceSpan.Start);
        Assert.Contains("property name", d.GetMessage());
    }

    [Fact]
    public void Core_errors_point_at_the_offending_json_node()
    {
        string text = Descriptions.Edit(Descriptions.Stories260K, "\"numKvHeads\": 4,", "\"numKvHeads\": 3,");
        var (_, result, _) = Run(EngineSource, Stories(text));
        Assert.Empty(result.GeneratedSources);
        var d = Assert.Single(result.Diagnostics);
        Assert.Equal("MC0008", d.Id);
        int offset = Descriptions.OffsetOf(text, "\"numKvHeads\": 3", "\"numKvHeads\": ".Length);
        Assert.Equal(new TextSpan(offset, 1), d.Location.SourceSpan);
        var (line, column) = ZeroBased(Descriptions.LineColumn(text, offset));
        Assert.Equal(new LinePositionSpan(new LinePosition(line, column), new LinePosition(line, column + 1)), d.Location.GetLineSpan().Span);
        Assert.Equal(DescriptionPath, d.Location.GetLineSpan().Path);
    }

    [Fact]
    public void Warnings_are_reported_and_the_engine_is_still_generated()
    {
        string text = Descriptions.Edit(Descriptions.Stories260K, "\"maxSequences\": 16", "\"maxSequence\": 16");
        var (_, result, _) = Run(EngineSource, Stories(text));
        Assert.Equal(2, result.GeneratedSources.Length); // the engine and its CUDA part
        var d = Assert.Single(result.Diagnostics);
        Assert.Equal(("MC0015", DiagnosticSeverity.Warning), (d.Id, d.Severity));
        Assert.Equal(Descriptions.OffsetOf(text, "\"maxSequence\""), d.Location.SourceSpan.Start);
        Assert.Equal("\"maxSequence\"".Length, d.Location.SourceSpan.Length);
    }

    [Fact]
    public void MC0019_missing_description_is_reported_at_the_attribute()
    {
        string source = EngineSource.Replace("stories260K.model.json", "missing.model.json");
        var (_, result, _) = Run(source, Stories());
        Assert.Empty(result.GeneratedSources);
        var d = Assert.Single(result.Diagnostics);
        Assert.Equal(("MC0019", DiagnosticSeverity.Error), (d.Id, d.Severity));
        Assert.Contains("missing.model.json", d.GetMessage());
        string attribute = "ModelEngine(\"missing.model.json\")";
        Assert.Equal(EnginePath, d.Location.GetLineSpan().Path);
        Assert.Equal(new TextSpan(source.IndexOf(attribute, StringComparison.Ordinal), attribute.Length), d.Location.SourceSpan);
    }

    [Fact]
    public void MC0019_when_no_description_files_are_given_at_all()
    {
        var (_, result, _) = Run(EngineSource);
        Assert.Equal("MC0019", Assert.Single(result.Diagnostics).Id);
    }

    [Fact]
    public void MC0022_non_partial_class_is_reported_at_its_identifier()
    {
        string source = EngineSource.Replace("public sealed partial class StoriesEngine", "public sealed class StoriesEngine");
        var (_, result, _) = Run(source, Stories());
        Assert.Empty(result.GeneratedSources);
        var d = Assert.Single(result.Diagnostics);
        Assert.Equal(("MC0022", DiagnosticSeverity.Error), (d.Id, d.Severity));
        Assert.Contains("StoriesEngine", d.GetMessage());
        Assert.Equal(new TextSpan(source.IndexOf("StoriesEngine", StringComparison.Ordinal), "StoriesEngine".Length), d.Location.SourceSpan);
        Assert.Equal(EnginePath, d.Location.GetLineSpan().Path);
    }

    [Theory]
    [InlineData("public static partial class Outer { [ModelEngine(\"stories260K.model.json\")] public partial class Inner { } }", "Inner")]
    [InlineData("[ModelEngine(\"stories260K.model.json\")] public partial class Generic<T> { }", "Generic")]
    public void MC0025_nested_or_generic_class_is_reported_at_its_identifier(string declaration, string identifier)
    {
        string source = "using ModelCompiler.Runtime;\nnamespace Demo;\n" + declaration;
        var (_, result, _) = Run(source, Stories());
        Assert.Empty(result.GeneratedSources);
        var d = Assert.Single(result.Diagnostics);
        Assert.Equal(("MC0025", DiagnosticSeverity.Error), (d.Id, d.Severity));
        Assert.Contains(identifier, d.GetMessage());
        Assert.Equal(new TextSpan(source.IndexOf(identifier + " ", StringComparison.Ordinal) is var i and >= 0 ? i : source.IndexOf(identifier + "<", StringComparison.Ordinal), identifier.Length), d.Location.SourceSpan);
    }

    // ------------------------------------------------------------------ incrementality

    private static IEnumerable<IncrementalStepRunReason> Reasons(GeneratorRunResult result, string stage) =>
        result.TrackedSteps[stage].SelectMany(step => step.Outputs).Select(o => o.Reason);

    private static void AssertCached(GeneratorRunResult result)
    {
        foreach (var stage in new[] { ModelEngineGenerator.Stages.Compiled, ModelEngineGenerator.Stages.Sources })
        {
            var reasons = Reasons(result, stage).ToList();
            Assert.NotEmpty(reasons);
            Assert.All(reasons, r => Assert.True(r is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged, $"{stage}: {r}"));
        }
    }

    [Fact]
    public void Adding_an_unrelated_file_leaves_the_output_cached()
    {
        var compilation = CreateCompilation((EnginePath, EngineSource));
        var driver = CreateDriver(Stories()).RunGenerators(compilation);
        driver = driver.RunGenerators(compilation.AddSyntaxTrees(CSharpSyntaxTree.ParseText("namespace Demo; public static class Unrelated { public static int F() => 1; }", s_parseOptions, "/repo/src/Unrelated.cs")));
        var result = Assert.Single(driver.GetRunResult().Results);
        AssertCached(result);
        Assert.Equal(2, result.GeneratedSources.Length); // the engine and its CUDA part
    }

    [Fact]
    public void Editing_an_unrelated_method_body_leaves_the_output_cached()
    {
        const string otherPath = "/repo/src/Other.cs";
        var other = CSharpSyntaxTree.ParseText("namespace Demo; public static class Other { public static int F() => 1; }", s_parseOptions, otherPath);
        var compilation = CreateCompilation((EnginePath, EngineSource)).AddSyntaxTrees(other);
        var driver = CreateDriver(Stories()).RunGenerators(compilation);
        var edited = CSharpSyntaxTree.ParseText("namespace Demo; public static class Other { public static int F() { return 2 + 3; } }", s_parseOptions, otherPath);
        driver = driver.RunGenerators(compilation.ReplaceSyntaxTree(other, edited));
        AssertCached(Assert.Single(driver.GetRunResult().Results));
    }

    [Fact]
    public void Editing_the_engine_class_body_leaves_the_output_cached()
    {
        // The edit is inside the class: it changes the attributed file but not what the generator reads.
        var compilation = CreateCompilation((EnginePath, EngineSource));
        var driver = CreateDriver(Stories()).RunGenerators(compilation);
        var tree = compilation.SyntaxTrees.Single();
        var edited = tree.WithChangedText(SourceText.From(EngineSource.Replace("=> 42;", "=> 6 * 7;")));
        driver = driver.RunGenerators(compilation.ReplaceSyntaxTree(tree, edited));
        AssertCached(Assert.Single(driver.GetRunResult().Results));
    }

    [Fact]
    public void Editing_the_description_regenerates_the_source()
    {
        var compilation = CreateCompilation((EnginePath, EngineSource));
        var original = Stories();
        var driver = CreateDriver(original).RunGenerators(compilation);
        var changed = Stories(Descriptions.Edit(Descriptions.Stories260K, "\"numLayers\": 5,", "\"numLayers\": 4,"));
        driver = driver.ReplaceAdditionalText(original, changed).RunGenerators(compilation);
        var result = Assert.Single(driver.GetRunResult().Results);
        Assert.Contains(IncrementalStepRunReason.Modified, Reasons(result, ModelEngineGenerator.Stages.Sources));
        Assert.Contains("public const int NumLayers = 4;", result.GeneratedSources.Single(s => s.HintName == "Demo.StoriesEngine.g.cs").SourceText.ToString());
    }

    [Fact]
    public void Editing_only_comments_of_the_description_keeps_the_source_cached()
    {
        // Moving text in the description changes diagnostics' positions but not the engine: the source
        // output is split from the diagnostics output so it stays cached.
        var compilation = CreateCompilation((EnginePath, EngineSource));
        var original = Stories();
        var driver = CreateDriver(original).RunGenerators(compilation);
        var changed = Stories("// a new first line\n" + Descriptions.Stories260K);
        driver = driver.ReplaceAdditionalText(original, changed).RunGenerators(compilation);
        var result = Assert.Single(driver.GetRunResult().Results);
        Assert.All(Reasons(result, ModelEngineGenerator.Stages.Sources), r => Assert.True(r is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged, r.ToString()));
    }
}
