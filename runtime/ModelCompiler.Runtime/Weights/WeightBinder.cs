using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// Binds a generated engine's weight table to the tensors of a weight file. A graph weight made of one
/// tensor points straight into the source's memory (zero copy); one made of several is fused at load
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
    /// <exception cref="ModelLoadException">A tensor is missing, has the wrong shape, or fused pieces differ in type.</exception>
    /// <exception cref="ArgumentException">The specs themselves are inconsistent (an engine generator bug).</exception>
    public static ModelWeights Bind(IReadOnlyList<WeightSpec> specs, IWeightSource source) => Bind(specs, source, null);

    /// <summary>
    /// Binds like <see cref="Bind(IReadOnlyList{WeightSpec}, IWeightSource)"/>, and when the source's
    /// <see cref="IWeightSource.RopeConvention"/> differs from <paramref name="config"/>'s
    /// <see cref="ModelConfig.RopeStyle"/>, reorders the rows of every q and k projection
    /// (<see cref="RopePermutation"/>) into the engine's convention, in a copy (the file stays untouched).
    /// </summary>
    /// <param name="specs">The engine's weight table.</param>
    /// <param name="source">The weight file; see the other overload for ownership.</param>
    /// <param name="config">The engine's configuration (head counts and rotary style); null binds without permuting.</param>
    public static ModelWeights Bind(IReadOnlyList<WeightSpec> specs, IWeightSource source, ModelConfig? config)
    {
        CheckEveryBiasIsRead(specs, source);
        RopeStyle? from = source.RopeConvention;
        bool permute = config is not null && from is not null && from != config.RopeStyle;
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
            int rows = spec.Shape.Length == 1 ? 1 : spec.Shape[0];
            int cols = spec.Shape[^1];
            var dtype = tensors[0].DType;
            // Vectors are widened to f32 (they are tiny and the kernels read them as floats); a matrix
            // keeps its stored type. One tensor in a usable layout is borrowed; several are concatenated.
            bool widen = spec.Shape.Length == 1 && dtype != WeightDType.F32;
            bool anyPermuted = false;
            if (permute) foreach (var t in tensors) anyPermuted |= HeadsOf(t.Name, config!) > 0;
            if (tensors.Length == 1 && !widen && !anyPermuted)
            {
                weights.SetBorrowed(spec.Index, tensors[0].Data, dtype, rows, cols);
                continue;
            }
            var target = widen ? WeightDType.F32 : dtype;
            var bytes = weights.Allocate(spec.Index, target, rows, cols);
            int offset = 0;
            foreach (var tensor in tensors)
            {
                var stored = Bytes(tensor);
                if (widen)
                {
                    var floats = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes.Slice(offset));
                    int numElements = (int)tensor.NumElements;
                    Quantization.WeightConversion.Decode(stored, tensor.DType, floats.Slice(0, numElements));
                    if (permute && HeadsOf(tensor.Name, config!) is > 0 and int biasHeads)
                    {
                        // A q/k bias (Qwen2) is ordered like its projection's rows.
                        var widened = System.Runtime.InteropServices.MemoryMarshal.AsBytes(floats.Slice(0, numElements)).ToArray();
                        RopePermutation.PermuteRows(widened, bytes.Slice(offset, widened.Length), numElements, sizeof(float), biasHeads, from!.Value, config!.RopeStyle);
                    }
                    offset += numElements * sizeof(float);
                }
                else if (permute && HeadsOf(tensor.Name, config!) is > 0 and int numHeads)
                {
                    int numRows = checked((int)tensor.Shape[0]);
                    RopePermutation.PermuteRows(stored, bytes.Slice(offset, stored.Length), numRows, stored.Length / numRows, numHeads, from!.Value, config!.RopeStyle);
                    offset += stored.Length;
                }
                else
                {
                    stored.CopyTo(bytes.Slice(offset));
                    offset += stored.Length;
                }
            }
        }
        return weights;
    }

    /// <summary>
    /// A bias in the file that no graph weight reads is an error naming it: the engine would run without it and
    /// silently compute another model (a Qwen2 file in an engine compiled without <c>qkvBias</c>).
    /// </summary>
    /// <exception cref="ModelLoadException">The source has a <c>*.bias</c> tensor none of <paramref name="specs"/> reads.</exception>
    public static void CheckEveryBiasIsRead(IReadOnlyList<WeightSpec> specs, IWeightSource source)
    {
        var read = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in specs) foreach (var name in spec.Sources) read.Add(name);
        var unread = new List<string>();
        foreach (var tensor in source.Tensors)
            if (tensor.Name.EndsWith(".bias", StringComparison.Ordinal) && !read.Contains(tensor.Name)) unread.Add(tensor.Name);
        if (unread.Count == 0) return;
        unread.Sort(StringComparer.Ordinal);
        string hint = unread[0].Contains(".attention.w", StringComparison.Ordinal) ? " (compile a description with qkvBias true for this file)" : "";
        throw new ModelLoadException($"weights file {source.Description} has {unread.Count} bias tensor(s) the engine does not read, e.g. '{unread[0]}'; " +
            $"running without them would compute a different model{hint}");
    }

    // Heads of a q (NumHeads) or k (NumKvHeads) projection, whose rows the rotary convention orders; 0 for any other tensor.
    private static int HeadsOf(string tensorName, ModelConfig config) =>
        TensorNames.IsQuery(tensorName) ? config.NumHeads : TensorNames.IsKey(tensorName) ? config.NumKvHeads : 0;

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
            if (i > 0 && tensor.DType != tensors[0].DType)
                throw new ModelLoadException($"weights file {source.Description}: tensor '{name}' is {WeightDTypes.Name(tensor.DType)} but '{tensors[0].Name}' is {WeightDTypes.Name(tensors[0].DType)}; graph weight '{spec.Name}' concatenates them, so they must share a type");

            // A 1-D spec takes 1-D pieces [n_i]; a 2-D spec takes [rows_i, cols] pieces with its cols.
            bool shapeFits = tensor.Shape.Length == spec.Shape.Length
                && (spec.Shape.Length == 1 || tensor.Shape[1] == spec.Shape[1]);
            if (!shapeFits)
                throw new ModelLoadException($"weights file {source.Description}: tensor '{name}' has shape {Format(tensor.Shape)}, but graph weight '{spec.Name}' {Format(spec.Shape)} needs {ExpectedPiece(spec)}");
            if (WeightDTypes.IsBlockQuantized(tensor.DType) && tensor.Shape[^1] % WeightDTypes.BlockSize(tensor.DType) != 0)
                throw new ModelLoadException($"weights file {source.Description}: tensor '{name}' is {WeightDTypes.Name(tensor.DType)} with rows of {tensor.Shape[^1]} weights, not whole blocks of {WeightDTypes.BlockSize(tensor.DType)}");
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

    private static unsafe ReadOnlySpan<byte> Bytes(WeightTensor tensor) => new((void*)tensor.Data, checked((int)tensor.SizeInBytes));

    private static string ExpectedPiece(WeightSpec spec) => spec.Shape.Length == 1 ? "[n]" : $"[rows, {spec.Shape[1]}]";

    private static string Format(long[] shape) => $"[{string.Join(", ", shape)}]";

    private static string Format(int[] shape) => $"[{string.Join(", ", shape)}]";
}
