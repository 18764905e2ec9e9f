namespace ModelCompiler.Runtime.Sampling;

/// <summary>
/// SplitMix64 (Steele, Lea and Flood 2014; the seeding generator of xoshiro): a 64-bit counter passed
/// through a fixed mixing function. Ours rather than <see cref="System.Random"/> because its output must
/// be identical on every machine and every .NET version, so that a seed reproduces a sample or a
/// random test model exactly. Not for anything security-related.
/// </summary>
public struct SplitMix64
{
    private ulong _state;

    /// <summary>Starts the sequence at <paramref name="seed"/>; every seed, zero included, is fine.</summary>
    public SplitMix64(ulong seed) => _state = seed;

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A uniform double in [0, 1) from the top 53 bits (exact: no rounding up to 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A uniform float in [0, 1) from the top 24 bits (exact: no rounding up to 1).</summary>
    public float NextFloat() => (NextUInt64() >> 40) * (1.0f / (1 << 24));
}
