using ModelCompiler.Runtime;

namespace Llama15M;

/// <summary>The engine compiled from llama15m.model.json at build time.</summary>
[ModelEngine("llama15m.model.json")]
public sealed partial class Llama15MEngine;
