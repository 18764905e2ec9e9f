using System;
using System.Threading;

namespace ModelCompiler.Runtime.Kernels;

/// <summary>
/// cos and sin of every (position, pair) angle for one rotary base and head width, computed once exactly as
/// <c>CpuKernels.RopeAngles</c> does (double product, double sin/cos, rounded to f32), so tables and direct
/// computation give the same bits. A decode step otherwise spent 2–3% of its time in sin, cos and pow.
/// </summary>
/// <remarks>
/// Immutable tables, one per (theta, headDim) in use, published copy-on-write: a lookup is a scan of a short array
/// and allocates nothing. A position past a table's capacity replaces it with one of twice the capacity.
/// </remarks>
internal sealed class RopeTable
{
    private static RopeTable[] s_tables = [];

    private readonly float _theta;
    private readonly int _headDim;
    private readonly int _numPositions;
    private readonly float[] _cos, _sin;   // [numPositions, headDim / 2]

    private RopeTable(float theta, int headDim, int numPositions)
    {
        _theta = theta;
        _headDim = headDim;
        _numPositions = numPositions;
        int numPairs = headDim / 2;
        _cos = new float[(long)numPositions * numPairs];
        _sin = new float[(long)numPositions * numPairs];
        Span<double> inverseFrequencies = stackalloc double[numPairs];
        CpuKernels.RopeInverseFrequencies(theta, headDim, inverseFrequencies);
        for (int p = 0; p < numPositions; p++)
            CpuKernels.RopeAngles(p, inverseFrequencies, _cos.AsSpan(p * numPairs, numPairs), _sin.AsSpan(p * numPairs, numPairs));
    }

    /// <summary>The table for <paramref name="theta"/> and <paramref name="headDim"/> covering positions up to <paramref name="maxPosition"/>.</summary>
    public static RopeTable For(float theta, int headDim, int maxPosition)
    {
        foreach (var existing in Volatile.Read(ref s_tables))
            if (existing._theta.Equals(theta) && existing._headDim == headDim && maxPosition < existing._numPositions) return existing;
        int capacity = 1024;
        while (capacity <= maxPosition) capacity *= 2;
        if ((long)capacity * headDim > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(maxPosition), maxPosition, "Position too large for a rotary table.");
        var table = new RopeTable(theta, headDim, capacity);
        while (true)
        {
            var tables = Volatile.Read(ref s_tables);
            var updated = new System.Collections.Generic.List<RopeTable>(tables.Length + 1) { table };
            foreach (var other in tables)
                if (!(other._theta.Equals(theta) && other._headDim == headDim)) updated.Add(other);
            if (Interlocked.CompareExchange(ref s_tables, updated.ToArray(), tables) == tables) return table;
        }
    }

    /// <summary>cos of the angles of <paramref name="position"/> (<c>[headDim / 2]</c>).</summary>
    public ReadOnlySpan<float> Cos(int position) => _cos.AsSpan(position * (_headDim / 2), _headDim / 2);

    /// <summary>sin of the angles of <paramref name="position"/> (<c>[headDim / 2]</c>).</summary>
    public ReadOnlySpan<float> Sin(int position) => _sin.AsSpan(position * (_headDim / 2), _headDim / 2);
}
