using System.Collections.Generic;
using ModelCompiler.Compiler.Diagnostics;

namespace ModelCompiler.Compiler.Graph;

/// <summary>An op as written (or as the template writes it), with the spans diagnostics point at.</summary>
internal sealed record RawOp(
    OpKind Kind, string[] Inputs, SourceSpan[] InputSpans, string Output, SourceSpan OutputSpan,
    string? Weight, int OutFeatures, SourceSpan Span, bool Bias = false);

/// <summary>A block before validation and shape inference.</summary>
internal sealed record RawBlock(string Input, SourceSpan InputSpan, string Output, SourceSpan OutputSpan, IReadOnlyList<RawOp> Ops);
