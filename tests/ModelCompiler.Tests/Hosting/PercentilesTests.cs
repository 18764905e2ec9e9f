using ModelCompiler.Runtime.Diagnostics;
using Xunit;

namespace ModelCompiler.Tests.Hosting;

/// <summary>Percentiles by linear interpolation between closest ranks, against values worked out by hand.</summary>
public class PercentilesTests
{
    [Theory]
    // {1, 2, 3, 4}: rank = p/100 x 3.
    [InlineData(new[] { 1.0, 2, 3, 4 }, 0, 1.0)]
    [InlineData(new[] { 1.0, 2, 3, 4 }, 50, 2.5)]    // rank 1.5
    [InlineData(new[] { 1.0, 2, 3, 4 }, 95, 3.85)]   // rank 2.85
    [InlineData(new[] { 1.0, 2, 3, 4 }, 99, 3.97)]   // rank 2.97
    [InlineData(new[] { 1.0, 2, 3, 4 }, 100, 4.0)]
    // {10, 20, 30, 40, 50}: rank = p/100 x 4.
    [InlineData(new[] { 10.0, 20, 30, 40, 50 }, 50, 30.0)]  // rank 2
    [InlineData(new[] { 10.0, 20, 30, 40, 50 }, 95, 48.0)]  // rank 3.8
    [InlineData(new[] { 10.0, 20, 30, 40, 50 }, 99, 49.6)]  // rank 3.96
    [InlineData(new[] { 10.0, 20, 30, 40, 50 }, 25, 20.0)]  // rank 1
    [InlineData(new[] { 7.0 }, 99, 7.0)]
    public void Of_sorted_interpolates_between_closest_ranks(double[] sorted, double percent, double expected) =>
        Assert.Equal(expected, Percentiles.OfSorted(sorted, percent), 12);

    [Fact]
    public void Distribution_sorts_a_copy_and_summarises()
    {
        double[] values = [4, 1, 3, 2];
        var d = Distribution.Of(values);
        Assert.Equal([4.0, 1, 3, 2], values);
        Assert.Equal(4, d.Count);
        Assert.Equal(1, d.Min);
        Assert.Equal(4, d.Max);
        Assert.Equal(2.5, d.Mean, 12);
        Assert.Equal(2.5, d.P50, 12);
        Assert.Equal(3.85, d.P95, 12);
        Assert.Equal(3.97, d.P99, 12);
    }

    [Fact]
    public void Bad_input_throws()
    {
        Assert.Throws<ArgumentException>(() => Percentiles.OfSorted([], 50));
        Assert.Throws<ArgumentOutOfRangeException>(() => Percentiles.OfSorted([1.0], 101));
        Assert.Throws<ArgumentOutOfRangeException>(() => Percentiles.OfSorted([1.0], double.NaN));
        Assert.Throws<ArgumentException>(() => Distribution.Of([]));
    }
}
