using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// Instruction-set choices, read once. As static readonly fields they are constants to the tiered JIT and to
/// Native AOT (with <c>IlcInstructionSet</c> set), so the untaken paths are removed from the compiled kernels.
/// </summary>
/// <remarks>
/// Every kernel choice that depends on the CPU goes through these fields (or, for the element-wise kernels, through
/// <c>Vector256/Vector128.IsHardwareAccelerated</c>, which agree with them), so that <see cref="Level"/> names what
/// runs. The test command runs the kernel and engine tests once per <see cref="Level"/> with the runtime's
/// <c>DOTNET_Enable*</c> knobs and checks this name, so a knob that stops working fails instead of re-testing AVX-512.
/// </remarks>
internal static class CpuFeatures
{
    /// <summary>The f32/f16/bf16 tiles use Vector512 (AVX-512F).</summary>
    public static readonly bool UseVector512 = Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    // AVX2 with FMA: what every non-AVX-512 vector path below needs (x86-64-v3).
    private static readonly bool s_avx2Fma = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>The q8_0/q4_0 integer dot products need AVX2 (maddubs/madd), with AVX-VNNI when present.</summary>
    public static readonly bool UseInt8 = s_avx2Fma;

    /// <summary>
    /// f32/f16/bf16 projection matrices are packed at load into 32-row panels (<see cref="FloatPanelLayout"/>): run by
    /// <see cref="FloatPanel"/> with AVX-512, by <see cref="FloatPanel256"/> with AVX2 and FMA.
    /// </summary>
    public static readonly bool UseFloatPanels = UseVector512 || s_avx2Fma;

    /// <summary>
    /// The decode attention job (<see cref="PagedAttentionJob{TKv}"/>) puts 16 positions in the lanes of a
    /// <see cref="Vector512{T}"/>: with AVX-512, and with AVX2 and FMA too. Where Vector512 is not accelerated, .NET runs
    /// each <c>Vector512&lt;float&gt;</c> operation as the same operation on its two <c>Vector256</c> halves, which the
    /// JIT and the AOT compiler keep in ymm registers, so the AVX-512 code runs on AVX2 as written, lane for lane the
    /// same arithmetic. Against the one-position-at-a-time portable loop it replaced there (<c>DOTNET_EnableAVX512=0
    /// DOTNET_TieredCompilation=0 … quick decode-attention f32</c>, JIT, 2026-12-02): 16 sequences × 192 positions
    /// 24.8–25.2 → 7.4–8.2 ms a step, one sequence of 256 positions 2.5–2.7 → 0.35–0.38 ms.
    /// </summary>
    /// <remarks>
    /// The prefill attention job (<see cref="PrefillAttentionJob{TKv}"/>) stays AVX-512 only: it transposes with
    /// AVX-512 permutes. Without it a prefill takes the decode job, token by token.
    /// </remarks>
    public static readonly bool UseAttentionLanes = UseVector512 || s_avx2Fma;

    /// <summary>AVX-VNNI's vpdpbusd replaces maddubs + madd.</summary>
    public static readonly bool UseVnni = AvxVnni.IsSupported;

    /// <summary>
    /// The kernel paths this process runs, as one name: <c>avx512</c> (Vector512 float tiles and panels; q8_0/q4_0 in
    /// AVX2 integer tiles, widened to f32 for prefill), <c>avx2</c> (no Vector512: bf16/f16 in the same panels with
    /// Vector256 (<see cref="FloatPanel256"/>), f32 rows with Vector256 dot products and per-call AVX2 panels from 16 tokens (see
    /// <see cref="FloatPanelLayout.ShouldPack"/>); q8_0/q4_0 in AVX2 integer tiles for decode; decode attention in Vector512 lanes run as Vector256 pairs, see
    /// <see cref="UseAttentionLanes"/>), <c>portable</c> (no AVX2: every type
    /// decodes rows to f32, dot products in Vector128) or <c>scalar</c> (no hardware intrinsics at all); <c>+vnni</c>
    /// when AVX-VNNI is used too (q8_0/q4_0 packed at load into 8-row groups, any token count).
    /// </summary>
    public static readonly string Level =
        (UseVector512 ? "avx512" : UseInt8 ? "avx2" : Vector128.IsHardwareAccelerated ? "portable" : "scalar")
        + (UseInt8 && UseVnni ? "+vnni" : "");
}
