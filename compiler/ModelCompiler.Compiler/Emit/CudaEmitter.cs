using System.Collections.Generic;
using System.Globalization;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Planning;

namespace ModelCompiler.Compiler.Emit;

/// <summary>
/// Emits the CUDA C++ source of a <see cref="KernelPlan"/> (the same plan the C# emitter reads) and its
/// launch plan. Each step becomes one or more <c>extern "C" __global__</c> kernels named by
/// <see cref="KernelStep.KernelName"/>, preceded by a comment naming the fused ops, shapes and dtypes, and
/// instantiating a device template of the library with the model's constants. The kernel ABI: arguments
/// are only pointers, <c>int</c> and <c>float</c>; each kernel is followed by <c>MC_EXPORT(name)</c>.
/// </summary>
internal sealed partial class CudaEmitter
{
    /// <summary>Threads of the projection kernels: 8 warps, one output row (or rotation pair) per warp.</summary>
    internal const int ProjectionThreads = 256;
    /// <summary>Tokens a projection block handles, so a weight row is read once for that many tokens.</summary>
    internal const int TokensPerTile = 8;
    /// <summary>Positions per attention split (one thread per position).</summary>
    internal const int AttentionChunk = 128;
    private const int ElementwiseThreads = 256;
    /// <summary>Output rows per block of the tensor-core prefill GEMM (4 warps of 16 rows).</summary>
    internal const int MmaRows = 64;
    /// <summary>Tokens per block of the tensor-core prefill GEMM.</summary>
    internal const int MmaTokens = 32;
    /// <summary>Threads per block of the tensor-core prefill GEMM.</summary>
    internal const int MmaThreads = 128;
    /// <summary>Threads of the sampling kernel: one block per logits row.</summary>
    internal const int SampleThreads = 256;
    /// <summary>
    /// The sampling kernel's bound on candidates (shared memory: 16 bytes each): top-k up to this many, and
    /// a top-p nucleus (without top-k) of up to this many tokens, sample on the device; beyond it the kernel
    /// answers a negative id and the runner samples that row on the host.
    /// </summary>
    internal const int SampleCandidates = 1024;
    /// <summary>Batches of at least this many tokens take a launch's prefill variant (mirrors the runtime's CudaLaunch.PrefillMinTokens).</summary>
    internal const int PrefillMinTokens = 16;

    private readonly KernelPlan _plan;
    private readonly HyperParameters _h;
    private readonly CodeWriter _w = new();
    private readonly HashSet<string> _emitted = new();
    private readonly List<Launch> _launches = new();
    private int _scratchFloats;

    private CudaEmitter(KernelPlan plan)
    {
        _plan = plan;
        _h = plan.Model.Hyper;
    }

    /// <summary>True when the plan can run on the CUDA kernels (every weight type: each projection has a kernel per matrix type).</summary>
    public static bool Supports(KernelPlan plan) => UnsupportedReason(plan) is null;

    /// <summary>
    /// Why the CUDA kernels cannot run <paramref name="plan"/>, or null when they can. Every plan the planner
    /// makes is covered today (biases, both RoPE layouts, every weight type); a step kind added to the planner
    /// without a CUDA kernel belongs here, so that the engine is generated without a CUDA plan instead of
    /// failing at run time.
    /// </summary>
    public static string? UnsupportedReason(KernelPlan plan)
    {
        foreach (var step in plan.Prologue) if (!HasKernel(step)) return $"the CUDA kernels have no {step.KindName} yet";
        foreach (var step in plan.Block) if (!HasKernel(step)) return $"the CUDA kernels have no {step.KindName} yet";
        foreach (var step in plan.Epilogue) if (!HasKernel(step)) return $"the CUDA kernels have no {step.KindName} yet";
        return null;
    }

    private static bool HasKernel(KernelStep step) =>
        step is EmbeddingStep or RmsNormStep or LinearStep or QkvStep or RopeStep or AttentionStep or SwiGluStep or ElementwiseStep or CopyStep or LogitsStep;

    /// <summary>The CUDA C++ source and the launches of <paramref name="plan"/>.</summary>
    public static CudaProgram Emit(KernelPlan plan)
    {
        var e = new CudaEmitter(plan);
        e.EmitSource();
        return new CudaProgram(e._w.ToString(), e._launches, e._scratchFloats);
    }

    /// <summary>
    /// The KV pool's element type <c>mc_kv_t</c> and its conversions, which the library's cache writers and
    /// attention use (so it goes between <see cref="Prelude"/> and <see cref="Library"/>): f32 as is, or f16
    /// stored as the CPU engine stores it (PagedKvCache.ToHalf: values beyond ±65504, infinities included,
    /// saturated; NaN kept; then rounded to nearest even), so both engines attend over the same cached values.
    /// </summary>
    internal static string KvCacheType(string kvCacheDType) => kvCacheDType == "f16"
        ? "// KV cache elements: f16 (runtime.kvCacheDType), saturated to ±65504 and rounded to nearest even when stored, as the CPU engine stores them.\n" +
          "typedef uint16_t mc_kv_t;\n" +
          "__device__ __forceinline__ mc_kv_t mc_to_kv(float f) { return MC_F32_TO_F16(f > 65504.0f ? 65504.0f : f < -65504.0f ? -65504.0f : f); }\n" +
          "__device__ __forceinline__ float mc_from_kv(mc_kv_t v) { return MC_F16_TO_F32(v); }"
        : "// KV cache elements: f32 (runtime.kvCacheDType), stored as computed.\n" +
          "typedef float mc_kv_t;\n" +
          "__device__ __forceinline__ mc_kv_t mc_to_kv(float f) { return f; }\n" +
          "__device__ __forceinline__ float mc_from_kv(mc_kv_t v) { return v; }";

    /// <summary>Everything before a model's kernels: <see cref="Prelude"/>, <see cref="KvCacheType"/> and <see cref="Library"/>.</summary>
    internal static string Runtime(string kvCacheDType) => Prelude + "\n" + KvCacheType(kvCacheDType) + "\n" + Library;

    private void EmitSource()
    {
        var m = _plan.Model;
        _w.Line($"// CUDA kernels of model '{m.Name}' (architecture '{m.Architecture}'), generated by ModelCompiler. Do not edit.");
        _w.Line($"// dim {Int(_h.Dim)}, hidden {Int(_h.HiddenDim)}, {Int(_h.NumLayers)} layers, {Int(_h.NumHeads)} heads ({Int(_h.NumKvHeads)} KV) of {Int(_h.HeadDim)}, " +
                $"vocab {Int(_h.VocabSize)}, KV blocks of {Int(m.Runtime.KvBlockSize)} tokens; weights declared {m.Weights.DType}, activations f32.");
        _w.Line("// Kernels that read a matrix exist per weight type (f32: NAME; others: NAME_f16, NAME_bf16, NAME_q8_0, NAME_q4_0; prefill NAME_mma_f16/_bf16): the weights file decides at run time.");
        _w.Line("// Kernel ABI: extern \"C\", arguments only pointers, int and float (driver-API argument arrays); T = numTokens.");
        foreach (var line in Runtime(m.Runtime.KvCacheDType).Split('\n')) _w.Line(line.TrimEnd('\r'));
        foreach (var step in _plan.Prologue) EmitStep(step, CudaStageName.Prologue);
        foreach (var step in _plan.Block) EmitStep(step, CudaStageName.Layer);
        foreach (var step in _plan.Epilogue) EmitStep(step, CudaStageName.Epilogue);
        EmitSampler();
    }

    private static string Int(int value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A C++ float literal that round-trips.</summary>
    private static string F(double value)
    {
        // "64f" would be a user-defined literal in C++: a float literal needs a point or an exponent.
        string s = ((float)value).ToString("R", CultureInfo.InvariantCulture);
        return (s.IndexOf('.') >= 0 || s.IndexOf('E') >= 0 ? s : s + ".0") + "f";
    }

    /// <summary>A C++ double literal.</summary>
    private static string D(double value)
    {
        string s = value.ToString("R", CultureInfo.InvariantCulture);
        return s.IndexOf('.') >= 0 || s.IndexOf('E') >= 0 ? s : s + ".0";
    }

    private static string Bool(bool value) => value ? "true" : "false";

    private static int Blocks(int count, int perBlock) => (count + perBlock - 1) / perBlock;

    /// <summary>Writes a kernel: its comment, signature, body and <c>MC_EXPORT</c>, once per name.</summary>
    private void Kernel(string name, KernelStep? step, string what, string parameters, string body, string launch)
    {
        if (!_emitted.Add(name)) return;
        _w.Line();
        _w.Line($"// Kernel {name}: {(step is null ? what : string.Join(" → ", step.Fuses) + (what.Length == 0 ? "" : " — " + what))}");
        if (step is not null) _w.Line($"//   {step.Signature()}");
        _w.Line($"//   launch: {launch}");
        _w.Line($"extern \"C\" __global__ void {name}({parameters})");
        _w.Line("{");
        foreach (var line in body.Split('\n')) _w.Line("    " + line);
        _w.Line("}");
        _w.Line($"MC_EXPORT({name})");
    }

    private void Add(string kernel, CudaStageName stage, uint gridX, CudaCountName yCount, int yDivisor, uint gridZ, uint block, params Arg[] args) =>
        _launches.Add(new Launch(kernel, stage, gridX, yCount, yDivisor, gridZ, block, args));

    /// <summary>Adds a launch with weight-type variants: the kernel for the type of the matrix bound to argument <paramref name="dtypeArg"/>.</summary>
    private void Add(string kernel, CudaStageName stage, uint gridX, CudaCountName yCount, int yDivisor, uint gridZ, uint block, int dtypeArg, params Arg[] args) =>
        _launches.Add(new Launch(kernel, stage, gridX, yCount, yDivisor, gridZ, block, args, dtypeArg));
}

/// <summary>Mirrors the runtime's CudaStage (the compiler core does not reference the runtime).</summary>
internal enum CudaStageName { Prologue, Layer, Epilogue, Sampling }

/// <summary>Mirrors the runtime's CudaCount.</summary>
internal enum CudaCountName { One, Tokens, Sequences, Logits }

/// <summary>One kernel argument of a launch: the runtime's CudaArgKind name and its value.</summary>
internal sealed record Arg(string Kind, int Value = 0, float FloatValue = 0f);

/// <summary>One launch of the plan, as the emitted C# table will state it.</summary>
/// <remarks><paramref name="DTypeArg"/>: the index of the matrix argument whose type picks the kernel variant (see the runtime's CudaLaunchPlan.KernelFor), or -1.</remarks>
/// <remarks><paramref name="Prefill"/>: the launch that replaces this one for batches of at least PrefillMinTokens tokens, for the weight types it has kernels for.</remarks>
internal sealed record Launch(string Kernel, CudaStageName Stage, uint GridX, CudaCountName YCount, int YDivisor, uint GridZ, uint Block, IReadOnlyList<Arg> Args,
    int DTypeArg = -1, Launch? Prefill = null);

/// <summary>The CUDA source, the launches in order, and the scratch they need in floats.</summary>
internal sealed record CudaProgram(string Source, IReadOnlyList<Launch> Launches, int ScratchFloats);
