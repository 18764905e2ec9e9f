using System;
using System.Collections.Generic;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// A tensor as stored in a weight file: its checkpoint name, element type, shape (outermost first) and
/// the address of its bytes, which stay valid while the owning <see cref="IWeightSource"/> is alive.
/// </summary>
public sealed record WeightTensor(string Name, WeightDType DType, long[] Shape, nint Data, long SizeInBytes)
{
    /// <summary>Number of elements.</summary>
    public long NumElements
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }
}

/// <summary>
/// Every weight format (llama2.c, GGUF, safetensors) behind one interface: named tensors
/// over memory-mapped bytes.
/// </summary>
public interface IWeightSource : IDisposable
{
    /// <summary>What was opened, for messages (format and path).</summary>
    string Description { get; }

    /// <summary>All tensors of the file.</summary>
    IReadOnlyCollection<WeightTensor> Tensors { get; }

    /// <summary>Looks a tensor up by its checkpoint name.</summary>
    bool TryGetTensor(string name, out WeightTensor tensor);

    /// <summary>
    /// How the file's q and k projection rows are ordered for rotary embedding: <see cref="RopeStyle.Interleaved"/>
    /// for llama2.c and llama-architecture GGUF (Meta's layout), <see cref="RopeStyle.Half"/> for Hugging Face safetensors
    /// and qwen2-architecture GGUF.
    /// Null means "already as the engine expects" (no permutation). The binder permutes q/k rows when this
    /// differs from the engine's <see cref="ModelConfig.RopeStyle"/>.
    /// </summary>
    RopeStyle? RopeConvention => null;

    /// <summary>
    /// Says that nothing will read tensor <paramref name="name"/>'s bytes again (the CPU runner has repacked them into
    /// memory of its own): a source that owns its memory frees it and forgets the tensor, so one copy of the weights
    /// stays resident; a mapped file keeps it (its pages stay clean page cache). Not thread-safe; call while loading.
    /// </summary>
    void Release(string name) { }
}
