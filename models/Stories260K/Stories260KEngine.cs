using ModelCompiler.Runtime;

namespace Stories260K;

/// <summary>The engine compiled from stories260K.model.json at build time.</summary>
[ModelEngine("stories260K.model.json")]
public sealed partial class Stories260KEngine;
