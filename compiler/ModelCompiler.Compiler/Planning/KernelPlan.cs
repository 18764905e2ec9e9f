using System.Collections.Generic;
using System.Globalization;
using System.Text;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Graph;

namespace ModelCompiler.Compiler.Planning;

/// <summary>
/// An activation buffer <c>[maxBatchTokens, Width]</c> f32 in the arena. Several graph values share one
/// buffer when a kernel updates in place (a residual add fused into a projection). The memory planner
/// sets <see cref="OffsetInFloats"/>.
/// </summary>
internal sealed class Buffer(string name, int width)
{
    public string Name { get; } = name;
    public int Width { get; } = width;
    public int OffsetInFloats { get; set; } = -1;
    public override string ToString() => $"{Name} [T, {Width}]";
}

/// <summary>Columns <c>[ColumnOffset, ColumnOffset + Width)</c> of a buffer (row stride = the buffer's width).</summary>
internal sealed record View(Buffer Buffer, int ColumnOffset, int Width);

/// <summary>
/// A weight the plan reads. Block weights (<see cref="PerLayer"/>) have one table entry per layer, named
/// <c>layers.{i}.{Name}</c>; their checkpoint sources carry a <c>{layer}</c> placeholder. Several sources
/// are concatenated along rows at load time (q|k|v, gate|up).
/// </summary>
internal sealed record WeightRef(string Name, int[] Shape, string[] Sources, bool PerLayer)
{
    /// <summary>Index in the global part of the table, or the slot within a layer's weights.</summary>
    public int Slot { get; set; } = -1;
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// <summary>The description's weight dtype; matrices are read in it, vectors are always widened to f32.</summary>
    public string MatrixDType { get; init; } = "f32";

    /// <summary>Shape and element type as stored, for comments: <c>[128, 64] q8_0</c>.</summary>
    public string Typed => ShapeText + " " + (Shape.Length == 1 ? "f32" : MatrixDType);
}

/// <summary>
/// One kernel of the plan: a target-independent description of work that an emitter turns into a call
/// (C#) or a kernel (CUDA). <see cref="Fuses"/> names the graph ops it replaces.
/// </summary>
internal abstract record KernelStep
{
    public IReadOnlyList<string> Fuses { get; init; } = System.Array.Empty<string>();

    /// <summary>Short kind name used in kernel names.</summary>
    public abstract string KindName { get; }

    /// <summary>
    /// Shapes and dtypes of what it reads and writes, for comments, with the KV cache as the CUDA runner stores it
    /// (<c>[blocks, blockSize, kvDim] f32</c>). <see cref="KernelName"/> hashes this text, so it must not depend on the target.
    /// </summary>
    public abstract string Signature();

    /// <summary>
    /// The signature with the KV cache described as <paramref name="kvCache"/> (a target's own layout and element type),
    /// for that target's comments; the same as <see cref="Signature()"/> for a step that does not touch the cache.
    /// </summary>
    public virtual string Signature(string kvCache) => Signature();

    /// <summary>A stable name derived from the kernel's content (kind, shapes, fused ops), for both emitters.</summary>
    public string KernelName() => HashedName(KindName, Signature() + "|" + string.Join(",", Fuses));

    /// <summary><c>{kind}_{FNV-1a of kind|content}</c>: the naming rule of every kernel, also for kernels outside the plan (sampling).</summary>
    public static string HashedName(string kind, string content)
    {
        var text = kind + "|" + content;
        uint hash = 2166136261;
        foreach (byte b in Encoding.UTF8.GetBytes(text)) { hash ^= b; hash *= 16777619; }
        return kind + "_" + hash.ToString("x8", CultureInfo.InvariantCulture);
    }
}

/// <summary>Token embedding lookup into the residual stream.</summary>
internal sealed record EmbeddingStep(Buffer Output, WeightRef Table, int Dim) : KernelStep
{
    public override string KindName => "embedding";
    public override string Signature() => $"token ids [T] i32, {Table.Name} {Table.Typed} -> {Output.Name} [T, {Dim}] f32";
}

/// <summary>RMSNorm on its own (when nothing could absorb it).</summary>
internal sealed record RmsNormStep(Buffer Input, WeightRef Norm, Buffer Output, int Width) : KernelStep
{
    public override string KindName => "rmsnorm";
    public override string Signature() => $"{Input.Name} [T, {Width}] f32, {Norm.Name} {Norm.Typed} -> {Output.Name} [T, {Width}] f32";
}

/// <summary>
/// A projection <c>y = x Wᵀ</c>, optionally with the preceding RMSNorm folded into its input
/// (<see cref="Norm"/>, using <see cref="Normalized"/> as scratch) and optionally accumulating into its
/// output (<see cref="AddToOutput"/>: the residual add fused, output updated in place).
/// </summary>
internal sealed record LinearStep(Buffer Input, WeightRef Weight, Buffer Output, int InDim, int OutDim,
    WeightRef? Norm, Buffer? Normalized, bool AddToOutput) : KernelStep
{
    /// <summary>A bias <c>[OutDim]</c> added to every output row, or null.</summary>
    public WeightRef? Bias { get; init; }

    public override string KindName => (Norm is null ? "" : "rmsnorm_") + "linear" + (Bias is null ? "" : "_bias") + (AddToOutput ? "_residual" : "");
    public override string Signature() =>
        $"{Input.Name} [T, {InDim}] f32{(Norm is null ? "" : $", {Norm.Name} {Norm.Typed}")}, {Weight.Name} {Weight.Typed}" +
        $"{(Bias is null ? "" : $", {Bias.Name} {Bias.Typed}")} -> {Output.Name} [T, {OutDim}] f32{(AddToOutput ? " (+=)" : "")}";
}

/// <summary>
/// RMSNorm, the q|k|v projection as one matrix, rotary embedding of q and k, and the write of k and v
/// into the paged KV cache, in one kernel. Only q is read afterwards (from <see cref="Qkv"/>).
/// </summary>
internal sealed record QkvStep(Buffer Input, WeightRef Norm, WeightRef Wqkv, Buffer Qkv, Buffer Normalized, int Dim, int QDim, int KvDim) : KernelStep
{
    /// <summary>The q|k|v bias <c>[QDim + 2·KvDim]</c> (Qwen2), added before RoPE, or null.</summary>
    public WeightRef? Bias { get; init; }

    public override string KindName => Bias is null ? "rmsnorm_qkv_rope_kvwrite" : "rmsnorm_qkv_bias_rope_kvwrite";
    public override string Signature() => Signature($"K/V cache [blocks, blockSize, {KvDim}] f32");
    public override string Signature(string kvCache) =>
        $"{Input.Name} [T, {Dim}] f32, {Norm.Name} {Norm.Typed}, {Wqkv.Name} {Wqkv.Typed}{(Bias is null ? "" : $", {Bias.Name} {Bias.Typed}")} -> " +
        $"{Qkv.Name} [T, {QDim + 2 * KvDim}] f32, {kvCache}";
}

/// <summary>Rotary embedding on its own, in place on a whole buffer.</summary>
internal sealed record RopeStep(Buffer Buffer, int Width) : KernelStep
{
    public override string KindName => "rope";
    public override string Signature() => $"{Buffer.Name} [T, {Width}] f32 (in place)";
}

/// <summary>
/// Causal grouped-query attention over the paged KV cache. When <see cref="Keys"/> and
/// <see cref="Values"/> are set, this step's keys and values are written to the cache first; when null,
/// the QKV kernel's epilogue already wrote them.
/// </summary>
internal sealed record AttentionStep(View Queries, View? Keys, View? Values, Buffer Output, int QDim) : KernelStep
{
    public override string KindName => Keys is null ? "paged_attention" : "kvwrite_paged_attention";
    public override string Signature() => Signature("K/V cache f32");
    public override string Signature(string kvCache) =>
        $"q {Describe(Queries)} f32, " +
        (Keys is null || Values is null ? "" : $"k {Describe(Keys)} f32, v {Describe(Values)} f32 -> K/V cache, ") +
        $"{kvCache} -> {Output.Name} [T, {QDim}] f32";

    private static string Describe(View view) =>
        view.ColumnOffset == 0 && view.Width == view.Buffer.Width
            ? $"{view.Buffer.Name} [T, {view.Width}]"
            : $"{view.Buffer.Name}[:, {view.ColumnOffset}:{view.ColumnOffset + view.Width}]";
}

/// <summary><c>silu(gate) · up</c> over the two halves of one gate|up projection.</summary>
internal sealed record SwiGluStep(Buffer GateUp, Buffer Output, int Hidden) : KernelStep
{
    public override string KindName => "swiglu";
    public override string Signature() => $"{GateUp.Name} [T, {2 * Hidden}] f32 -> {Output.Name} [T, {Hidden}] f32";
}

/// <summary>An elementwise op on its own (add, mul, silu).</summary>
internal sealed record ElementwiseStep(OpKind Op, Buffer A, Buffer? B, Buffer Output, int Width) : KernelStep
{
    public override string KindName => OpNames.Of(Op);
    public override string Signature() => $"{A.Name}{(B is null ? "" : ", " + B.Name)} [T, {Width}] f32 -> {Output.Name} [T, {Width}] f32";
}

/// <summary>Copies a buffer (a block whose output is not its input's buffer hands the residual stream on).</summary>
internal sealed record CopyStep(Buffer Source, Buffer Destination, int Width) : KernelStep
{
    public override string KindName => "copy";
    public override string Signature() => $"{Source.Name} [T, {Width}] f32 -> {Destination.Name} [T, {Width}] f32";
}

/// <summary>Final RMSNorm and LM head on the rows that need logits.</summary>
internal sealed record LogitsStep(Buffer Input, Buffer Gathered, Buffer Normalized, WeightRef Norm, WeightRef Head, int Dim, int VocabSize) : KernelStep
{
    public override string KindName => "final_norm_lm_head";
    public override string Signature() =>
        $"{Input.Name} rows [numLogits, {Dim}] f32, {Norm.Name} {Norm.Typed}, {Head.Name} {Head.Typed} -> logits [numLogits, {VocabSize}] f32";
}

/// <summary>
/// The whole forward pass as kernels: a prologue, the block's kernels run once per layer, an epilogue;
/// the weight binding table; and the arena layout. Independent of the target language.
/// </summary>
internal sealed record KernelPlan(
    ModelDescription Model,
    IReadOnlyList<KernelStep> Prologue,
    IReadOnlyList<KernelStep> Block,
    IReadOnlyList<KernelStep> Epilogue,
    IReadOnlyList<WeightRef> GlobalWeightsBefore,
    IReadOnlyList<WeightRef> LayerWeights,
    IReadOnlyList<WeightRef> GlobalWeightsAfter,
    IReadOnlyList<Buffer> Buffers,
    int ArenaSizeInFloats,
    int ResidualBufferIndex)
{
    /// <summary>Index of a weight in the binding table (layer is ignored for global weights).</summary>
    public int TableIndex(WeightRef weight, int layer)
    {
        int before = GlobalWeightsBefore.Count;
        if (!weight.PerLayer)
        {
            for (int i = 0; i < GlobalWeightsBefore.Count; i++) if (ReferenceEquals(GlobalWeightsBefore[i], weight)) return i;
            for (int i = 0; i < GlobalWeightsAfter.Count; i++)
                if (ReferenceEquals(GlobalWeightsAfter[i], weight)) return before + Model.Hyper.NumLayers * LayerWeights.Count + i;
            throw new System.InvalidOperationException($"weight {weight.Name} is not in the table");
        }
        return before + layer * LayerWeights.Count + weight.Slot;
    }

    public int TotalWeights => GlobalWeightsBefore.Count + Model.Hyper.NumLayers * LayerWeights.Count + GlobalWeightsAfter.Count;
}
