using System;
using System.Collections.Generic;
using ModelCompiler.Compiler.Diagnostics;
using ModelCompiler.Compiler.Graph;
using ModelCompiler.Compiler.Json;

namespace ModelCompiler.Compiler.Description;

/// <summary>
/// Turns description text into a validated <see cref="ModelDescription"/>: JSON syntax, the schema,
/// value ranges, then the block graph (the llama template expanded, or the explicit one) with shape
/// inference. Never throws for bad input; every problem is a diagnostic at its JSON node.
/// </summary>
internal static class DescriptionParser
{
    /// <summary>Largest accepted size of any dimension: far above any real model, low enough that products stay in range.</summary>
    public const int MaxDimension = 1 << 20;

    public static readonly string[] Architectures = { "llama", "custom" };
    public static readonly string[] WeightFormats = { "llama2c", "gguf", "safetensors" };
    public static readonly string[] TokenizerFormats = { "llama2c" };
    public static readonly string[] DTypes = { "f32", "f16", "bf16", "q8_0", "q4_0" };
    public static readonly string[] RopeStyles = { "interleaved", "half" };
    public static readonly string[] ChatTemplates = { "plain", "llama2" };
    public static readonly string[] KvCacheDTypes = { "f32", "f16" };

    public static ParseResult Parse(string text, string path)
    {
        var diagnostics = new List<CompilerDiagnostic>();
        JsonNode root;
        try
        {
            root = JsonReader.Parse(text);
        }
        catch (JsonSyntaxException e)
        {
            diagnostics.Add(DiagnosticCatalog.JsonSyntax.At(path, e.Span, e.Message));
            return new ParseResult(null, diagnostics);
        }
        if (root.Kind != JsonKind.Object)
        {
            diagnostics.Add(DiagnosticCatalog.WrongType.At(path, root.Span, "(document)", "an object", root.Describe()));
            return new ParseResult(null, diagnostics);
        }

        var top = new FieldReader(root, "", path, diagnostics,
            "name", "description", "architecture", "hyperparameters", "weights", "tokenizer", "runtime", "block", "chatTemplate");
        string name = top.String("name", required: true, "Model", "the model's name");
        top.Get("description", JsonKind.String, "a string", required: false, "");
        string chatTemplate = top.Choice("chatTemplate", ChatTemplates, required: false, "plain", DiagnosticCatalog.InvalidChoice, "");
        string architecture = top.Choice("architecture", Architectures, required: true, "",
            DiagnosticCatalog.UnknownArchitecture, "'llama' or 'custom'");
        var architectureNode = top.Find("architecture")?.Value ?? root;

        var hyper = ReadHyperParameters(top, path, diagnostics, architecture);
        var weights = ReadWeights(top, path, diagnostics);
        var tokenizer = ReadTokenizer(top, path, diagnostics);
        var runtime = ReadRuntime(top, path, diagnostics, hyper);

        BlockGraph? block = null;
        var blockProperty = top.Find("block");
        if (architecture == "llama" && blockProperty is not null)
        {
            top.Report(DiagnosticCatalog.ConflictingGraph.At(path, blockProperty.NameSpan, architecture));
        }
        else if (architecture == "custom" && blockProperty is null)
        {
            top.Report(DiagnosticCatalog.MissingField.At(path, architectureNode.Span, "block", "a 'custom' architecture describes its block as an explicit op graph"));
        }
        bool valid = !HasErrors(diagnostics) && hyper is not null;
        if (valid && architecture == "llama")
            block = GraphBuilder.Build(LlamaTemplate.Expand(hyper!, architectureNode.Span), hyper!, path, diagnostics, architectureNode.Span);
        else if (valid && blockProperty is not null)
            block = ExplicitBlockReader.Read(blockProperty.Value, hyper!, path, diagnostics);

        if (block is not null && hyper is not null) CheckArenaFits(top, path, block, hyper, runtime);
        if (HasErrors(diagnostics) || block is null || hyper is null)
            return new ParseResult(null, diagnostics);
        return new ParseResult(new ModelDescription(name, architecture, hyper, weights, tokenizer, runtime, block) { ChatTemplate = chatTemplate }, diagnostics);
    }

    /// <summary>
    /// Every arena buffer the planner makes is a graph value, a concatenation of graph values (q|k|v,
    /// gate|up), a normalised copy of one, or one of the dim-wide residual and logits scratch buffers, so
    /// 3 × (Σ widths + dim) rows of maxBatchTokens bound the arena. Offsets and lengths are ints in the
    /// generated code: beyond that they would wrap silently, and the reader's own check only sees
    /// dim/hiddenDim and only runs when a 'runtime' object is present.
    /// </summary>
    private static void CheckArenaFits(FieldReader top, string path, BlockGraph block, HyperParameters hyper, RuntimeOptions runtime)
    {
        long rows = hyper.Dim;
        foreach (var width in block.Widths.Values) rows += width;
        long floats = 3 * rows * runtime.MaxBatchTokens + (long)MemoryAlignmentSlack * (block.Widths.Count + 3);
        if (floats <= int.MaxValue) return;
        var runtimeNode = top.Find("runtime")?.Value;
        var at = (runtimeNode is { Kind: JsonKind.Object } ? runtimeNode.Find("maxBatchTokens")?.Value : null)
                 ?? runtimeNode ?? top.Find("hyperparameters")?.Value ?? top.Node;
        top.Report(DiagnosticCatalog.OutOfRange.At(path, at.Span, "runtime.maxBatchTokens", runtime.MaxBatchTokens,
            "a value whose activation arena ([maxBatchTokens, width] buffers) fits in 2^31 floats"));
    }

    /// <summary>Alignment padding the memory planner may add per buffer, in floats, times three buffers per value.</summary>
    private const int MemoryAlignmentSlack = 3 * 16;

    private static bool HasErrors(List<CompilerDiagnostic> diagnostics)
    {
        foreach (var d in diagnostics) if (d.Severity == Severity.Error) return true;
        return false;
    }

    private static HyperParameters? ReadHyperParameters(FieldReader top, string path, List<CompilerDiagnostic> diagnostics, string architecture)
    {
        var node = top.Get("hyperparameters", JsonKind.Object, "an object", required: true, "the architecture's sizes");
        if (node is null) return null;
        var r = new FieldReader(node, "hyperparameters", path, diagnostics,
            "dim", "hiddenDim", "numLayers", "numHeads", "numKvHeads", "vocabSize", "maxSeqLen", "ropeTheta", "ropeStyle", "normEps", "tiedEmbedding", "qkvBias");
        int dim = r.PositiveInt("dim", true, 0, MaxDimension, "the model dimension");
        bool needsHidden = architecture == "llama";
        int hidden = r.PositiveInt("hiddenDim", needsHidden, 0, MaxDimension, "the MLP's hidden width");
        int numLayers = r.PositiveInt("numLayers", true, 0, 4096, "the number of blocks");
        int numHeads = r.PositiveInt("numHeads", true, 0, 4096, "the number of attention heads");
        int numKvHeads = r.PositiveInt("numKvHeads", false, numHeads, 4096, "");
        int vocab = r.PositiveInt("vocabSize", true, 0, 1 << 22, "the vocabulary size");
        int maxSeq = r.PositiveInt("maxSeqLen", true, 0, MaxDimension, "the maximum context length");
        double theta = r.Number("ropeTheta", 10000.0, 0, 1e12, "a number greater than 0 and below 1e12");
        string style = r.Choice("ropeStyle", RopeStyles, false, "interleaved", DiagnosticCatalog.InvalidChoice, "");
        double eps = r.Number("normEps", 1e-5, 0, 1, "a number greater than 0 and below 1");
        bool tied = r.Boolean("tiedEmbedding", false);
        bool qkvBias = r.Boolean("qkvBias", false);

        if (dim > 0 && numHeads > 0)
        {
            if (dim % numHeads != 0)
                r.Report(DiagnosticCatalog.HeadsDoNotDivideDim.At(path, r.Find("numHeads")!.Value.Span, numHeads, dim));
            else if ((dim / numHeads) % 2 != 0)
                r.Report(DiagnosticCatalog.OddHeadDim.At(path, r.Find("numHeads")!.Value.Span, dim / numHeads));
        }
        if (numHeads > 0 && numKvHeads > 0 && numHeads % numKvHeads != 0)
        {
            var span = (r.Find("numKvHeads") ?? r.Find("numHeads"))!.Value.Span;
            r.Report(DiagnosticCatalog.KvHeadsDoNotDivideHeads.At(path, span, numKvHeads, numHeads));
        }
        if (r.HasErrors) return null;
        return new HyperParameters(dim, hidden, numLayers, numHeads, numKvHeads, vocab, maxSeq, theta,
            style == "half" ? RopeStyle.Half : RopeStyle.Interleaved, eps, tied) { QkvBias = qkvBias };
    }

    private static WeightSourceDescription ReadWeights(FieldReader top, string path, List<CompilerDiagnostic> diagnostics)
    {
        var fallback = new WeightSourceDescription("llama2c", "f32", "");
        var node = top.Get("weights", JsonKind.Object, "an object", required: true, "where the weights come from");
        if (node is null) return fallback;
        var r = new FieldReader(node, "weights", path, diagnostics, "format", "dtype", "path");
        string format = r.Choice("format", WeightFormats, true, "llama2c", DiagnosticCatalog.UnknownFormat, "the weight file format");
        string dtype = r.Choice("dtype", DTypes, false, "f32", DiagnosticCatalog.UnknownDType, "");
        string file = r.String("path", true, "", "the default weight file");
        if (format == "llama2c" && dtype != "f32" && r.Find("dtype") is { } d)
            r.Report(DiagnosticCatalog.InvalidChoice.At(path, d.Value.Span, "weights.dtype", dtype, "f32 (llama2c checkpoints store f32)"));
        return new WeightSourceDescription(format, dtype, file);
    }

    private static TokenizerDescription ReadTokenizer(FieldReader top, string path, List<CompilerDiagnostic> diagnostics)
    {
        var node = top.Get("tokenizer", JsonKind.Object, "an object", required: true, "the tokenizer");
        if (node is null) return new TokenizerDescription("llama2c", "");
        var r = new FieldReader(node, "tokenizer", path, diagnostics, "format", "path");
        string format = r.Choice("format", TokenizerFormats, true, "llama2c", DiagnosticCatalog.UnknownFormat, "the tokenizer file format");
        string file = r.String("path", true, "", "the default tokenizer file");
        return new TokenizerDescription(format, file);
    }

    private static RuntimeOptions ReadRuntime(FieldReader top, string path, List<CompilerDiagnostic> diagnostics, HyperParameters? hyper)
    {
        int maxSeq = hyper?.MaxSeqLen ?? 512;
        var node = top.Get("runtime", JsonKind.Object, "an object", required: false, "");
        int blockSize = 16, maxBatchTokens = Math.Min(512, maxSeq), maxSequences = 16, kvBlocks = 0;
        string kvCacheDType = "f32";
        if (node is not null)
        {
            var r = new FieldReader(node, "runtime", path, diagnostics, "kvBlockSize", "maxBatchTokens", "maxSequences", "kvBlocks", "kvCacheDType");
            blockSize = r.PositiveInt("kvBlockSize", false, blockSize, 1024, "");
            if ((blockSize & (blockSize - 1)) != 0)
            {
                r.Report(DiagnosticCatalog.OutOfRange.At(path, r.Find("kvBlockSize")!.Value.Span, "runtime.kvBlockSize", blockSize, "a power of two"));
                blockSize = 16;
            }
            maxBatchTokens = r.PositiveInt("maxBatchTokens", false, maxBatchTokens, 1 << 16, "");
            maxSequences = r.PositiveInt("maxSequences", false, maxSequences, 4096, "");
            kvBlocks = r.PositiveInt("kvBlocks", false, 0, 1 << 24, "");
            kvCacheDType = r.Choice("kvCacheDType", KvCacheDTypes, false, "f32", DiagnosticCatalog.InvalidChoice, "");
            if (hyper is not null && (long)maxBatchTokens * Math.Max(hyper.Dim, hyper.HiddenDim) * 8 > int.MaxValue / 2)
                r.Report(DiagnosticCatalog.OutOfRange.At(path, (r.Find("maxBatchTokens") ?? top.Find("runtime")!).Value.Span,
                    "runtime.maxBatchTokens", maxBatchTokens, "a value whose activation arena fits in 1 GiB of floats"));
        }
        int blocksPerSequence = (maxSeq + blockSize - 1) / blockSize;
        if (kvBlocks == 0) kvBlocks = maxSequences * blocksPerSequence;
        return new RuntimeOptions(blockSize, maxBatchTokens, maxSequences, kvBlocks) { KvCacheDType = kvCacheDType };
    }
}
