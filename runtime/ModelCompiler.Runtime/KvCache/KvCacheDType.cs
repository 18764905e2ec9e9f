namespace ModelCompiler.Runtime;

/// <summary>
/// The element type of the KV cache (<c>runtime.kvCacheDType</c> in the description), on the CPU and in the
/// CUDA runner's device pool alike. Keys and values are computed in f32 either way; f16 rounds them once when
/// they are stored, halving the cache's memory and the bytes attention reads per position.
/// </summary>
public enum KvCacheDType
{
    /// <summary>IEEE single precision (4 bytes per element): attention reads exactly what the projections wrote.</summary>
    F32,
    /// <summary>
    /// IEEE half precision (2 bytes per element): stored with round-to-nearest-even, finite values beyond
    /// ±65504 saturated to ±65504 (not turned into infinities), widened back to f32 when attention reads them.
    /// </summary>
    F16,
}

/// <summary>Names and sizes of <see cref="KvCacheDType"/> values.</summary>
public static class KvCacheDTypes
{
    /// <summary>Bytes of one cached element.</summary>
    public static int ElementSizeInBytes(KvCacheDType dtype) => dtype == KvCacheDType.F16 ? 2 : 4;

    /// <summary>The description's name: <c>f32</c> or <c>f16</c>.</summary>
    public static string Name(KvCacheDType dtype) => dtype == KvCacheDType.F16 ? "f16" : "f32";
}
