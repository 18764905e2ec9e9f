using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// Binds a generated engine's weight table to the tensors of a weight file. A graph weight made of one
/// f32 tensor points straight into the source's memory (zero copy); one made of several is fused at load
/// time by concatenating their rows in order (wq | wk | wv → wqkv).
/// </summary>
public static class WeightBinder
{
    /// <summary>
    /// Resolves and checks every spec first, then binds. Ownership: on success the returned
    /// <see cref="ModelWeights"/> owns <paramref name="source"/> and disposes it with itself, because
    /// borrowed weights point into the source's memory; on failure nothing has been allocated and the
    /// caller still owns the source.
    /// </summary>
    /// <exception cref="ModelLoadException">A tensor is missing, is not f32, or has the wrong shape.</exception>
    /// <exception cref="ArgumentException">The specs themselves are inconsistent (an engine generator bug).</exception>
    public static ModelWeights Bind(IReadOnlyList<WeightSpec> specs, IWeightSource source)
    {
        var resolved = new WeightTensor[specs.Count][];
        var indexSeen = new bool[specs.Count];
        foreach (var spec in specs)
        {
            if (spec.Index < 0 || spec.Index >= specs.Count || indexSeen[spec.Index])
                throw new ArgumentException($"Weight spec '{spec.Name}' has index {spec.Index}; indices must be 0..{specs.Count - 1}, each once.", nameof(specs));
            indexSeen[spec.Index] = true;
            resolved[spec.Index] = Resolve(spec, source);
        }

        var weights = new ModelWeights(specs.Count, source);
        foreach (var spec in specs)
        {
            var tensors = resolved[spec.Index];
            if (tensors.Length == 1)
            {
                weights.SetBorrowed(spec.Index, tensors[0].Data, (int)tensors[0].NumElements);
                continue;
            }

            var fused = weights.Allocate(spec.Index, (int)spec.NumElements);
            int offset = 0;
            foreach (var tensor in tensors)
            {
                int numElements = (int)tensor.NumElements;
                AsFloats(tensor).CopyTo(fused.Slice(offset, numElements));
                offset += numElements;
            }
        }
        return weights;
    }

    // Finds the spec's source tensors and checks that their rows stack into the spec's shape.
    private static WeightTensor[] Resolve(WeightSpec spec, IWeightSource source)
    {
        if (spec.Sources.Length == 0) throw new ArgumentException($"Weight spec '{spec.Name}' has no source tensors.", nameof(spec));
        if (spec.Shape.Length is not (1 or 2)) throw new ArgumentException($"Weight spec '{spec.Name}' has rank {spec.Shape.Length}; only [n] and [rows, cols] are supported.", nameof(spec));
        if (spec.NumElements > int.MaxValue)
            throw new ModelLoadException($"graph weight '{spec.Name}' has {spec.NumElements} elements, more than one span can hold");

        var tensors = new WeightTensor[spec.Sources.Length];
        long totalRows = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            string name = spec.Sources[i];
            if (!source.TryGetTensor(name, out var tensor))
                throw new ModelLoadException($"weights file {source.Description} has no tensor '{name}' (needed for graph weight '{spec.Name}')");
            if (tensor.DType != WeightDType.F32)
                throw new ModelLoadException($"weights file {source.Description}: tensor '{name}' is {tensor.DType}, but only F32 can be bound for now (needed for graph weight '{spec.Name}')");

            // A 1-D spec takes 1-D pieces [n_i]; a 2-D spec takes [rows_i, cols] pieces with its cols.
            bool shapeFits = tensor.Shape.Length == spec.Shape.Length
                && (spec.Shape.Length == 1 || tensor.Shape[1] == spec.Shape[1]);
            if (!shapeFits)
                throw new ModelLoadException($"weights file {source.Description}: tensor '{name}' has shape {Format(tensor.Shape)}, but graph weight '{spec.Name}' {Format(spec.Shape)} needs {ExpectedPiece(spec)}");
            totalRows += tensor.Shape[0];
            tensors[i] = tensor;
        }

        if (totalRows != spec.Shape[0])
        {
            var shapes = new List<string>();
            foreach (var t in tensors) shapes.Add($"'{t.Name}' {Format(t.Shape)}");
            throw new ModelLoadException($"weights file {source.Description}: graph weight '{spec.Name}' needs {Format(spec.Shape)}, but {string.Join(" + ", shapes)} stack to {totalRows} rows");
        }
        return tensors;
    }

    private static unsafe ReadOnlySpan<float> AsFloats(WeightTensor tensor) => new((void*)tensor.Data, (int)tensor.NumElements);

    private static string ExpectedPiece(WeightSpec spec) => spec.Shape.Length == 1 ? "[n]" : $"[rows, {spec.Shape[1]}]";

    private static string Format(long[] shape) => $"[{string.Join(", ", shape)}]";

    private static string Format(int[] shape) => $"[{string.Join(", ", shape)}]";
}
