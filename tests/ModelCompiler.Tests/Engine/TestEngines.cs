using ModelCompiler.Runtime;

namespace ModelCompiler.Tests.Engine;

// Engines compiled by the real generator during this project's build, from the descriptions listed as
// AdditionalFiles in the test project.

/// <summary>The Stories260K description from models/Stories260K.</summary>
[ModelEngine("stories260K.model.json")]
public sealed partial class Stories260KTestEngine;

/// <summary>An explicit llama block: untied head, half-style RoPE, 3 query heads per KV head.</summary>
[ModelEngine("TestModels/tiny_explicit.model.json")]
public sealed partial class TinyExplicitEngine;

/// <summary>A parallel block that defeats the fusions, so the unfused kernel calls are compiled too.</summary>
[ModelEngine("parallel_block.model.json")]
public sealed partial class ParallelBlockEngine;

/// <summary>A Qwen2-shaped llama: q/k/v biases, half-style RoPE, GQA.</summary>
[ModelEngine("tiny_qwen.model.json")]
public sealed partial class TinyQwenEngine;

/// <summary>Stories260K with <c>runtime.kvCacheDType: f16</c>.</summary>
[ModelEngine("TestModels/stories260K_f16kv.model.json")]
public sealed partial class Stories260KF16KvTestEngine;
