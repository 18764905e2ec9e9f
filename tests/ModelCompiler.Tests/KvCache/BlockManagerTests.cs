using ModelCompiler.Runtime.KvCache;
using Xunit;

namespace ModelCompiler.Tests.KvCache;

public class BlockManagerTests
{
    [Fact]
    public void Tables_allocated_alternately_interleave_and_blocks_are_added_only_at_block_boundaries()
    {
        var manager = new BlockManager(numBlocks: 8, blockSize: 4);
        manager.Allocate(1, 4);
        manager.Allocate(2, 5);
        manager.Append(1, 5);
        Assert.Equal([0, 3], manager.BlockTable(1).ToArray());
        Assert.Equal([1, 2], manager.BlockTable(2).ToArray());

        manager.Append(2, 8);   // positions 5..7 fit in block 2
        Assert.Equal(2, manager.BlockTable(2).Length);
        Assert.True(manager.CanAppend(2, 9));
        manager.Append(2, 9);
        Assert.Equal([1, 2, 4], manager.BlockTable(2).ToArray());
        Assert.Equal(3, manager.NumFreeBlocks);
    }

    [Fact]
    public void Check_methods_agree_with_capacity()
    {
        var manager = new BlockManager(numBlocks: 3, blockSize: 2);
        Assert.True(manager.CanAllocate(6));
        Assert.False(manager.CanAllocate(7));
        manager.Allocate(10, 3);
        Assert.True(manager.CanAppend(10, 6));
        Assert.False(manager.CanAppend(10, 7));
        Assert.True(manager.CanAllocate(2));
        Assert.False(manager.CanAllocate(3));
        Assert.True(manager.CanAllocate(0));
    }

    [Fact]
    public void Fork_shares_blocks_and_a_block_returns_to_the_free_list_only_when_its_last_holder_frees_it()
    {
        var manager = new BlockManager(numBlocks: 6, blockSize: 4);
        manager.Allocate(1, 6);
        manager.Fork(1, 2);
        Assert.Equal(manager.BlockTable(1).ToArray(), manager.BlockTable(2).ToArray());
        Assert.Equal(6, manager.NumTokens(2));
        Assert.All(manager.BlockTable(1).ToArray(), block => Assert.Equal(2, manager.ReferenceCount(block)));
        Assert.Equal(4, manager.NumFreeBlocks);

        manager.Append(2, 9);   // the child grows into a block of its own
        Assert.Equal(1, manager.ReferenceCount(manager.BlockTable(2)[2]));

        manager.Free(1);
        Assert.Equal(3, manager.NumFreeBlocks);
        Assert.All(manager.BlockTable(2).ToArray(), block => Assert.Equal(1, manager.ReferenceCount(block)));
        manager.Free(2);
        Assert.Equal(6, manager.NumFreeBlocks);
        Assert.Equal(0, manager.NumSequences);
    }

    [Fact]
    public void Misuse_throws_InvalidOperationException_naming_the_sequence()
    {
        var manager = new BlockManager(numBlocks: 2, blockSize: 4);
        AssertNamesSequence(() => manager.Free(42), 42);
        AssertNamesSequence(() => manager.Append(42, 1), 42);
        AssertNamesSequence(() => manager.CanAppend(42, 1), 42);
        AssertNamesSequence(() => manager.BlockTable(42), 42);
        AssertNamesSequence(() => manager.Fork(42, 43), 42);

        manager.Allocate(7, 4);
        AssertNamesSequence(() => manager.Allocate(7, 1), 7);
        AssertNamesSequence(() => manager.Allocate(8, 9), 8);     // needs 3 blocks, 1 free
        AssertNamesSequence(() => manager.Append(7, 13), 7);      // needs 3 more... only 1 free
        AssertNamesSequence(() => manager.Append(7, 3), 7);       // shrinking
        manager.Allocate(9, 1);
        AssertNamesSequence(() => manager.Fork(7, 9), 9);         // child exists
        manager.Free(7);
        AssertNamesSequence(() => manager.Free(7), 7);            // double free
        Assert.Equal(1, manager.NumFreeBlocks);
        Assert.Throws<ArgumentOutOfRangeException>(() => manager.Allocate(10, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BlockManager(0, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BlockManager(4, 0));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Random_workload_keeps_the_invariants_and_frees_everything(int seed)
    {
        const int numBlocks = 40, blockSize = 3;
        var random = new Random(seed);
        var manager = new BlockManager(numBlocks, blockSize);
        // The test's own model of what each table must be.
        var expectedTables = new Dictionary<long, List<int>>();
        var expectedTokens = new Dictionary<long, int>();
        long nextId = 100;

        for (int step = 0; step < 2000; step++)
        {
            var live = expectedTables.Keys.ToArray();
            int action = live.Length == 0 ? 0 : random.Next(4);
            if (action == 0)
            {
                int numTokens = random.Next(0, 3 * blockSize * 2);
                long id = nextId++;
                bool fits = (numTokens + blockSize - 1) / blockSize <= manager.NumFreeBlocks;
                Assert.Equal(fits, manager.CanAllocate(numTokens));
                if (!fits) { Assert.Throws<InvalidOperationException>(() => manager.Allocate(id, numTokens)); continue; }
                var inUse = InUse(expectedTables);
                manager.Allocate(id, numTokens);
                var table = manager.BlockTable(id).ToArray();
                Assert.Equal((numTokens + blockSize - 1) / blockSize, table.Length);
                Assert.All(table, block => Assert.DoesNotContain(block, inUse));
                expectedTables[id] = table.ToList();
                expectedTokens[id] = numTokens;
            }
            else if (action == 1)
            {
                long id = live[random.Next(live.Length)];
                int newTotal = expectedTokens[id] + random.Next(0, 2 * blockSize);
                // Writing into a partly filled last block that another table shares copies it first.
                var old = expectedTables[id];
                bool copies = newTotal > expectedTokens[id] && expectedTokens[id] % blockSize != 0 &&
                              expectedTables.Values.Count(t => t.Contains(old[^1])) > 1;
                int needed = (newTotal + blockSize - 1) / blockSize - old.Count + (copies ? 1 : 0);
                bool fits = needed <= manager.NumFreeBlocks;
                Assert.Equal(fits, manager.CanAppend(id, newTotal));
                if (!fits) { Assert.Throws<InvalidOperationException>(() => manager.Append(id, newTotal)); continue; }
                var inUse = InUse(expectedTables);
                var copy = manager.Append(id, newTotal);
                var table = manager.BlockTable(id).ToArray();
                Assert.Equal(copies, copy.HasValue);
                int kept = copies ? old.Count - 1 : old.Count;
                Assert.Equal(old.Take(kept), table.Take(kept));   // existing blocks stay put, but for the copied one
                if (copy is { } c) Assert.Equal((old[^1], table[kept]), (c.SourceBlock, c.DestinationBlock));
                Assert.All(table.Skip(kept), block => Assert.DoesNotContain(block, inUse));
                expectedTables[id] = table.ToList();
                expectedTokens[id] = newTotal;
            }
            else if (action == 2)
            {
                long parent = live[random.Next(live.Length)], child = nextId++;
                manager.Fork(parent, child);
                expectedTables[child] = expectedTables[parent].ToList();
                expectedTokens[child] = expectedTokens[parent];
            }
            else
            {
                long id = live[random.Next(live.Length)];
                manager.Free(id);
                expectedTables.Remove(id);
                expectedTokens.Remove(id);
            }
            AssertInvariants(manager, expectedTables, numBlocks);
        }

        foreach (long id in expectedTables.Keys) manager.Free(id);
        Assert.Equal(numBlocks, manager.NumFreeBlocks);
        Assert.Equal(0, manager.NumSequences);
        for (int block = 0; block < numBlocks; block++) Assert.Equal(0, manager.ReferenceCount(block));
    }

    private static HashSet<int> InUse(Dictionary<long, List<int>> tables) => tables.Values.SelectMany(t => t).ToHashSet();

    /// <summary>
    /// Tables are what the model says; a block is in several tables only as often as its reference count
    /// says (which forks alone raise); no table holds a block twice; free + used = total.
    /// </summary>
    private static void AssertInvariants(BlockManager manager, Dictionary<long, List<int>> expectedTables, int numBlocks)
    {
        var holders = new int[numBlocks];
        foreach (var (id, expected) in expectedTables)
        {
            var table = manager.BlockTable(id).ToArray();
            Assert.Equal(expected, table);
            Assert.Equal(table.Length, table.Distinct().Count());
            foreach (int block in table) holders[block]++;
        }
        int used = 0;
        for (int block = 0; block < numBlocks; block++)
        {
            Assert.Equal(holders[block], manager.ReferenceCount(block));
            if (holders[block] > 0) used++;
        }
        Assert.Equal(numBlocks, used + manager.NumFreeBlocks);
        Assert.Equal(expectedTables.Count, manager.NumSequences);
    }

    private static void AssertNamesSequence(Action action, long sequenceId)
    {
        var exception = Assert.Throws<InvalidOperationException>(action);
        Assert.Contains($"Sequence {sequenceId}", exception.Message);
    }
}
