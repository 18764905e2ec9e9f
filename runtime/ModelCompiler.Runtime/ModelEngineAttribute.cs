using System;

namespace ModelCompiler.Runtime;

/// <summary>
/// Marks a <c>partial</c> class as a compiled model engine. The ModelCompiler source generator reads
/// the model graph description named by <paramref name="descriptionPath"/> (an <c>AdditionalFiles</c>
/// item of the project, matched by file name or path suffix) and emits the engine's forward pass into
/// the class at build time.
/// </summary>
/// <param name="descriptionPath">File name or relative path of the <c>*.model.json</c> description.</param>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class ModelEngineAttribute(string descriptionPath) : Attribute
{
    /// <summary>The description file the engine is compiled from.</summary>
    public string DescriptionPath { get; } = descriptionPath;
}
