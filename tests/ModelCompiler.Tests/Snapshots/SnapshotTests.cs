using Xunit;
using Xunit.Sdk;

namespace ModelCompiler.Tests.Snapshots;

/// <summary>The snapshot helper itself, in a temp folder so no real baseline is touched.</summary>
public sealed class SnapshotTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "mc-snapshot-tests-" + Guid.NewGuid().ToString("N"));

    public SnapshotTests() => System.IO.Directory.CreateDirectory(_dir);

    public void Dispose() => System.IO.Directory.Delete(_dir, recursive: true);

    private string Verified(string name) => Path.Combine(_dir, name + ".verified.txt");
    private string Received(string name) => Path.Combine(_dir, name + ".received.txt");

    [Fact]
    public void Matching_text_passes_and_ignores_line_endings()
    {
        File.WriteAllText(Verified("a"), "one\ntwo\n");
        Snapshot.Match("one\r\ntwo\r\n", "a", _dir, accept: false);
        Assert.False(File.Exists(Received("a")));
    }

    [Fact]
    public void Mismatch_fails_names_the_first_differing_line_and_writes_received()
    {
        File.WriteAllText(Verified("b"), "same\nold line\ntail\n");
        var e = Assert.ThrowsAny<XunitException>(() => Snapshot.Match("same\nnew line\ntail\n", "b", _dir, accept: false));
        Assert.Contains("line 2", e.Message);
        Assert.Contains("\"old line\"", e.Message);
        Assert.Contains("\"new line\"", e.Message);
        Assert.Contains(Snapshot.AcceptVariable + "=1", e.Message);
        Assert.Equal("same\nnew line\ntail\n", File.ReadAllText(Received("b")));
        Assert.Equal("same\nold line\ntail\n", File.ReadAllText(Verified("b"))); // not touched
    }

    [Fact]
    public void Extra_line_at_the_end_is_a_mismatch()
    {
        File.WriteAllText(Verified("c"), "x\n");
        var e = Assert.ThrowsAny<XunitException>(() => Snapshot.Match("x\ny\n", "c", _dir, accept: false));
        Assert.Contains("line 2", e.Message);
        Assert.Contains("(end of file)", e.Message);
    }

    [Fact]
    public void Missing_verified_file_fails_and_writes_received()
    {
        var e = Assert.ThrowsAny<XunitException>(() => Snapshot.Match("new\n", "d", _dir, accept: false));
        Assert.Contains("no verified file", e.Message);
        Assert.Equal("new\n", File.ReadAllText(Received("d")));
        Assert.False(File.Exists(Verified("d")));
    }

    [Fact]
    public void Accepting_writes_the_verified_file_and_removes_a_stale_received_file()
    {
        File.WriteAllText(Verified("e"), "old\n");
        File.WriteAllText(Received("e"), "stale\n");
        Snapshot.Match("new\r\ntext\n", "e", _dir, accept: true);
        Assert.Equal("new\ntext\n", File.ReadAllText(Verified("e")));
        Assert.False(File.Exists(Received("e")));
        Snapshot.Match("new\ntext\n", "e", _dir, accept: false); // and now it matches
    }

    [Fact]
    public void Accepting_creates_a_missing_verified_file()
    {
        Snapshot.Match("fresh\n", "f", _dir, accept: true);
        Assert.Equal("fresh\n", File.ReadAllText(Verified("f")));
    }

    [Theory]
    [InlineData("1", true)]
    [InlineData("true", true)]
    [InlineData(" TRUE ", true)]
    [InlineData("0", false)]
    [InlineData("", false)]
    [InlineData("yes please", false)]
    [InlineData(null, false)]
    public void Accept_switch_reads_the_environment_value(string? value, bool expected) =>
        Assert.Equal(expected, Snapshot.IsAccepting(value));

    [Fact]
    public void Verified_files_live_in_the_source_tree()
    {
        Assert.True(File.Exists(Path.Combine(Snapshot.Directory, "Snapshot.cs")), Snapshot.Directory);
    }
}
