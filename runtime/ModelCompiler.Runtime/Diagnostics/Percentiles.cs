using System;

namespace ModelCompiler.Runtime.Diagnostics;

/// <summary>Summary of a set of measurements (seconds, or any unit): extremes, mean and percentiles.</summary>
/// <param name="Count">Number of measurements.</param>
/// <param name="Min">Smallest.</param>
/// <param name="Mean">Arithmetic mean.</param>
/// <param name="P50">Median.</param>
/// <param name="P95">95th percentile.</param>
/// <param name="P99">99th percentile.</param>
/// <param name="Max">Largest.</param>
public sealed record Distribution(int Count, double Min, double Mean, double P50, double P95, double P99, double Max)
{
    /// <summary>Summarises <paramref name="values"/> (not modified; at least one).</summary>
    public static Distribution Of(ReadOnlySpan<double> values)
    {
        if (values.IsEmpty) throw new ArgumentException("At least one value is needed.", nameof(values));
        var sorted = values.ToArray();
        Array.Sort(sorted);
        double sum = 0;
        foreach (double v in sorted) sum += v;
        return new Distribution(sorted.Length, sorted[0], sum / sorted.Length,
            Percentiles.OfSorted(sorted, 50), Percentiles.OfSorted(sorted, 95), Percentiles.OfSorted(sorted, 99), sorted[^1]);
    }
}

/// <summary>Percentiles by linear interpolation between closest ranks.</summary>
public static class Percentiles
{
    /// <summary>
    /// The <paramref name="percent"/>th percentile of <paramref name="sortedAscending"/>: the value at rank
    /// <c>percent / 100 · (n − 1)</c>, interpolated linearly between the two neighbouring ranks (NumPy's
    /// default, Hyndman–Fan type 7). So p50 of {1, 2, 3, 4} is 2.5 and p0/p100 are the minimum/maximum;
    /// with one value every percentile is that value. Monotone in <paramref name="percent"/>.
    /// </summary>
    public static double OfSorted(ReadOnlySpan<double> sortedAscending, double percent)
    {
        if (sortedAscending.IsEmpty) throw new ArgumentException("At least one value is needed.", nameof(sortedAscending));
        if (!(percent >= 0 && percent <= 100)) throw new ArgumentOutOfRangeException(nameof(percent), percent, "A percentile is between 0 and 100.");
        double rank = percent / 100 * (sortedAscending.Length - 1);
        int lower = (int)Math.Floor(rank);
        int upper = Math.Min(lower + 1, sortedAscending.Length - 1);
        double fraction = rank - lower;
        return sortedAscending[lower] + fraction * (sortedAscending[upper] - sortedAscending[lower]);
    }
}
