namespace ModelCompiler.Compiler.Diagnostics;

/// <summary>A kind of diagnostic: stable ID, severity, title and message format.</summary>
public sealed record DiagnosticKind(string Id, Severity Severity, string Title, string MessageFormat)
{
    /// <summary>Creates a diagnostic of this kind at <paramref name="span"/> of <paramref name="filePath"/>.</summary>
    public CompilerDiagnostic At(string filePath, SourceSpan span, params object[] args) =>
        new(Id, Severity, string.Format(System.Globalization.CultureInfo.InvariantCulture, MessageFormat, args), filePath, span);
}

/// <summary>
/// Every diagnostic the compiler and the generator report. IDs never change meaning: add new ones at
/// the end, and retire an ID rather than reuse it.
/// </summary>
public static class DiagnosticCatalog
{
    /// <summary>The file is not valid JSON.</summary>
    public static readonly DiagnosticKind JsonSyntax = new("MC0001", Severity.Error, "Invalid JSON", "Invalid JSON: {0}");
    /// <summary>A required field is absent.</summary>
    public static readonly DiagnosticKind MissingField = new("MC0002", Severity.Error, "Missing field", "'{0}' is required: {1}");
    /// <summary>A field has the wrong JSON type.</summary>
    public static readonly DiagnosticKind WrongType = new("MC0003", Severity.Error, "Wrong type", "'{0}' must be {1}, found {2}");
    /// <summary>The architecture is not one the compiler has a template for.</summary>
    public static readonly DiagnosticKind UnknownArchitecture = new("MC0004", Severity.Error, "Unknown architecture", "Unknown architecture '{0}': expected 'llama', or 'custom' with a 'block' graph");
    /// <summary>An op of an explicit graph is not known.</summary>
    public static readonly DiagnosticKind UnknownOp = new("MC0005", Severity.Error, "Unknown op", "Unknown op '{0}': expected one of {1}");
    /// <summary>A size is zero or negative.</summary>
    public static readonly DiagnosticKind NonPositiveSize = new("MC0006", Severity.Error, "Size must be positive", "'{0}' must be a positive integer, found {1}");
    /// <summary>Heads do not divide the model dimension.</summary>
    public static readonly DiagnosticKind HeadsDoNotDivideDim = new("MC0007", Severity.Error, "Heads must divide the model dimension", "'numHeads' ({0}) must divide 'dim' ({1})");
    /// <summary>KV heads do not divide the heads.</summary>
    public static readonly DiagnosticKind KvHeadsDoNotDivideHeads = new("MC0008", Severity.Error, "KV heads must divide heads", "'numKvHeads' ({0}) must divide 'numHeads' ({1})");
    /// <summary>A dtype name is not known.</summary>
    public static readonly DiagnosticKind UnknownDType = new("MC0009", Severity.Error, "Unknown dtype", "Unknown dtype '{0}' in '{1}': expected one of {2}");
    /// <summary>A file format name is not known.</summary>
    public static readonly DiagnosticKind UnknownFormat = new("MC0010", Severity.Error, "Unknown format", "Unknown format '{0}' in '{1}': expected one of {2}");
    /// <summary>A value is outside its allowed range.</summary>
    public static readonly DiagnosticKind OutOfRange = new("MC0011", Severity.Error, "Value out of range", "'{0}' is {1}: expected {2}");
    /// <summary>Tensor shapes of an explicit graph do not fit together.</summary>
    public static readonly DiagnosticKind ShapeMismatch = new("MC0012", Severity.Error, "Shape mismatch", "Shape mismatch in op '{0}': {1}");
    /// <summary>An explicit graph reads a tensor nothing defines.</summary>
    public static readonly DiagnosticKind UndefinedTensor = new("MC0013", Severity.Error, "Undefined tensor", "Tensor '{0}' is used by op '{1}' but not defined before it");
    /// <summary>An explicit graph defines a tensor nothing reads.</summary>
    public static readonly DiagnosticKind UnusedTensor = new("MC0014", Severity.Warning, "Unused tensor", "Tensor '{0}' is defined but never used");
    /// <summary>A field is not part of the schema (usually a typo).</summary>
    public static readonly DiagnosticKind UnknownField = new("MC0015", Severity.Warning, "Unknown field", "Unknown field '{0}' in '{1}': expected one of {2}");
    /// <summary>Two ops define the same tensor.</summary>
    public static readonly DiagnosticKind DuplicateTensor = new("MC0016", Severity.Error, "Tensor defined twice", "Tensor '{0}' is already defined");
    /// <summary>An op has the wrong number of inputs or lacks an attribute it needs.</summary>
    public static readonly DiagnosticKind BadOpArguments = new("MC0017", Severity.Error, "Bad op arguments", "Op '{0}' {1}");
    /// <summary>A value is not one of the allowed names.</summary>
    public static readonly DiagnosticKind InvalidChoice = new("MC0018", Severity.Error, "Invalid value", "'{0}' is '{1}': expected one of {2}");
    /// <summary>The attribute names a description the project does not have.</summary>
    public static readonly DiagnosticKind DescriptionNotFound = new("MC0019", Severity.Error, "Description not found", "Model description '{0}' was not found: add it to the project as an AdditionalFiles item");
    /// <summary>Rotary embedding needs an even head dimension.</summary>
    public static readonly DiagnosticKind OddHeadDim = new("MC0020", Severity.Error, "Head dimension must be even", "The head dimension ('dim' / 'numHeads' = {0}) must be even for rotary embedding");
    /// <summary>An explicit block must contain exactly one attention op.</summary>
    public static readonly DiagnosticKind AttentionCount = new("MC0021", Severity.Error, "One attention per block", "A block must contain exactly one 'attention' op, found {0}");
    /// <summary>The engine class is not partial.</summary>
    public static readonly DiagnosticKind ClassNotPartial = new("MC0022", Severity.Error, "Engine class must be partial", "Class '{0}' has [ModelEngine] and must be declared partial");
    /// <summary>A bug in the compiler: it should never happen, and names what failed.</summary>
    public static readonly DiagnosticKind InternalError = new("MC0023", Severity.Error, "Internal compiler error", "Internal compiler error while compiling the description: {0}");
    /// <summary>A template architecture also has an explicit block.</summary>
    public static readonly DiagnosticKind ConflictingGraph = new("MC0024", Severity.Error, "Template and explicit graph", "Architecture '{0}' is a template and cannot also have a 'block': use 'custom' for an explicit graph");
    /// <summary>The engine class is nested or generic.</summary>
    public static readonly DiagnosticKind UnsupportedClassShape = new("MC0025", Severity.Error, "Unsupported engine class", "Class '{0}' with [ModelEngine] must be a top-level, non-generic class");

    /// <summary>All kinds, in ID order.</summary>
    public static readonly DiagnosticKind[] All =
    {
        JsonSyntax, MissingField, WrongType, UnknownArchitecture, UnknownOp, NonPositiveSize, HeadsDoNotDivideDim,
        KvHeadsDoNotDivideHeads, UnknownDType, UnknownFormat, OutOfRange, ShapeMismatch, UndefinedTensor, UnusedTensor,
        UnknownField, DuplicateTensor, BadOpArguments, InvalidChoice, DescriptionNotFound, OddHeadDim, AttentionCount,
        ClassNotPartial, InternalError, ConflictingGraph, UnsupportedClassShape,
    };
}
