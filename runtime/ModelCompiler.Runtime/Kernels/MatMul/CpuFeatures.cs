using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompiler.Runtime.Kernels.MatMul;

/// <summary>
/// Instruction-set choices, read once. As static readonly fields they are constants to the tiered JIT and to
/// Native AOT (with <c>IlcInstructionSet</c> set), so the untaken paths are removed from the compiled kernels.
/// </summary>
internal static class CpuFeatures
{
    /// <summary>The f32/f16/bf16 tiles use Vector512 (AVX-512F).</summary>
    public static readonly bool UseVector512 = Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>The q8_0/q4_0 integer dot products need AVX2 (maddubs/madd), with AVX-VNNI when present.</summary>
    public static readonly bool UseInt8 = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>AVX-VNNI's vpdpbusd replaces maddubs + madd.</summary>
    public static readonly bool UseVnni = AvxVnni.IsSupported;
}
