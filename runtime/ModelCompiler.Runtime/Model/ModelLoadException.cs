using System;

namespace ModelCompiler.Runtime;

/// <summary>
/// A weight file, tokenizer or description that cannot be used: missing, wrong format, truncated,
/// corrupt, or not matching the compiled model. The message is one line that names the problem.
/// </summary>
public sealed class ModelLoadException(string message) : Exception(message);
