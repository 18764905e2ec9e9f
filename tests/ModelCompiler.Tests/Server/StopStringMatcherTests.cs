using Xunit;
using ModelCompiler.Runtime.Server;

namespace ModelCompiler.Tests.Server;

public class StopStringMatcherTests
{
    private static (string Shown, bool Stopped) Feed(string[] stops, params string[] pieces)
    {
        var matcher = new StopStringMatcher(stops);
        string shown = "";
        foreach (var piece in pieces) shown += matcher.Push(piece);
        bool stopped = matcher.Stopped;
        return (shown + matcher.Flush(), stopped);
    }

    [Theory]
    [InlineData("Hello ", "Hello w", "or", "ld")]          // "world" split over pieces
    [InlineData("Ho", "Ho", "l", "d!")]                     // "ld" split
    [InlineData("", "world")]
    public void A_stop_string_split_over_pieces_is_found_and_cut(string expected, params string[] pieces)
    {
        var (shown, stopped) = Feed(["world", "ld"], pieces);
        Assert.Equal(expected, shown);
        Assert.True(stopped);
    }

    [Fact]
    public void A_partial_match_that_does_not_complete_is_released()
    {
        var matcher = new StopStringMatcher(["END"]);
        Assert.Equal("The ", matcher.Push("The E"));
        Assert.Equal("", matcher.Push("N"));
        Assert.Equal("ENx", matcher.Push("x"));
        Assert.Equal("", matcher.Push("EN"));
        Assert.Equal("EN", matcher.Flush());
        Assert.False(matcher.Stopped);
    }

    [Fact]
    public void The_earliest_stop_wins_and_nothing_follows_it()
    {
        var matcher = new StopStringMatcher(["cd", "b"]);
        Assert.Equal("a", matcher.Push("abcd"));
        Assert.True(matcher.Stopped);
        Assert.Equal("", matcher.Push("more"));
        Assert.Equal("", matcher.Flush());
    }
}
