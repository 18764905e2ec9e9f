using ModelCompiler.Runtime;

namespace Llama110M;

/// <summary>The engine compiled from llama110m.model.json at build time.</summary>
[ModelEngine("llama110m.model.json")]
public sealed partial class Llama110MEngine;
