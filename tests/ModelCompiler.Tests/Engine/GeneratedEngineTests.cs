using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Reference;
using ModelCompiler.Runtime.Sampling;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.Engine;

/// <summary>
/// The generated engines against the scalar float64 reference forward pass: logits position by
/// position (max abs difference ≤ 1e-4), for one sequence and for batches whose block tables
/// interleave in the KV pool, and greedy token ids over 256 steps.
/// </summary>
[Trait("Category", TestCategories.CpuPaths)]
public class GeneratedEngineTests
{
    [Fact]
    public void Stories260K_prefill_logits_match_the_reference_at_every_position()
    {
        int[] tokens = StoryTokens();
        Assert.True(tokens.Length >= 64, $"the test text must cover at least 64 positions, it has {tokens.Length}");
        var engine = new Stories260KTestEngine();
        float[][] expected;
        using (var checkpoint = OpenStories()) expected = ReferenceLogits(engine.Config, checkpoint, tokens);

        using var runner = new ModelRunner(engine, OpenStories());
        runner.Blocks.Allocate(0, tokens.Length);
        var batch = runner.CreateBatch();
        batch.AddSequence(tokens, 0, runner.Blocks.BlockTable(0), allLogits: true);
        var logits = runner.Forward(batch);

        int vocab = engine.Config.VocabSize;
        for (int p = 0; p < tokens.Length; p++)
        {
            double error = MaxAbsDifference(logits.Slice(p * vocab, vocab), expected[p]);
            Assert.True(error <= LogitsTolerance, $"position {p}: max |engine - reference| = {error:E3}");
        }
    }

    [Fact]
    public void Stories260K_chunked_prefill_then_one_token_steps_match_the_reference()
    {
        int[] tokens = StoryTokens()[..70];
        var engine = new Stories260KTestEngine();
        float[][] expected;
        using (var checkpoint = OpenStories()) expected = ReferenceLogits(engine.Config, checkpoint, tokens);

        using var runner = new ModelRunner(engine, OpenStories());
        var batch = runner.CreateBatch();
        int vocab = engine.Config.VocabSize;
        // Prefill chunks of 13 tokens (not a multiple of the block size), then decode one token at a time.
        int position = 0;
        runner.Blocks.Allocate(0, 13);
        while (position < tokens.Length)
        {
            int count = position < 39 ? 13 : 1;
            if (position > 0) runner.Blocks.Append(0, position + count);
            batch.Clear();
            batch.AddSequence(tokens.AsSpan(position, count), position, runner.Blocks.BlockTable(0), allLogits: true);
            var logits = runner.Forward(batch);
            for (int i = 0; i < count; i++)
            {
                double error = MaxAbsDifference(logits.Slice(i * vocab, vocab), expected[position + i]);
                Assert.True(error <= LogitsTolerance, $"position {position + i}: max |engine - reference| = {error:E3}");
            }
            position += count;
        }
    }

    [Fact]
    public void Stories260K_batch_of_sequences_with_interleaved_block_tables_matches_each_sequence_alone()
    {
        var engine = new Stories260KTestEngine();
        var random = new Random(260);
        int[] lengths = [70, 45, 23];
        var tokens = lengths.Select(n => Enumerable.Range(0, n + 1).Select(i => i == 0 ? 1 : random.Next(3, 512)).ToArray()).ToArray();
        float[][][] expected;
        using (var checkpoint = OpenStories())
            expected = tokens.Select(t => ReferenceLogits(engine.Config, checkpoint, t)).ToArray();

        using var runner = new ModelRunner(engine, OpenStories());
        long[] ids = [10, 11, 12];
        AllocateInterleaved(runner.Blocks, ids, lengths);
        // The tables really interleave: no sequence owns a contiguous run of the pool.
        var table0 = runner.Blocks.BlockTable(ids[0]).ToArray();
        Assert.Contains(runner.Blocks.BlockTable(ids[1])[0], Enumerable.Range(table0[0], table0[^1] - table0[0]));

        int vocab = engine.Config.VocabSize;
        var batch = runner.CreateBatch();
        // Step 1: the first chunk of every sequence in one batch. Step 2: the rest of the two longer ones.
        (int Start, int Count)[][] steps =
        [
            [(0, 30), (0, 20), (0, 23)],
            [(30, 40), (20, 25), (0, 0)],
        ];
        foreach (var step in steps)
        {
            batch.Clear();
            var rows = new List<(int Seq, int Position)>();
            for (int s = 0; s < ids.Length; s++)
            {
                var (start, count) = step[s];
                if (count == 0) continue;
                batch.AddSequence(tokens[s].AsSpan(start, count), start, runner.Blocks.BlockTable(ids[s]), allLogits: true);
                for (int i = 0; i < count; i++) rows.Add((s, start + i));
            }
            var logits = runner.Forward(batch);
            for (int r = 0; r < rows.Count; r++)
            {
                var (s, p) = rows[r];
                double error = MaxAbsDifference(logits.Slice(r * vocab, vocab), expected[s][p]);
                Assert.True(error <= LogitsTolerance, $"sequence {s} position {p}: max |engine - reference| = {error:E3}");
            }
        }

        // Step 3: one decode token for every sequence at once (each at its own position).
        batch.Clear();
        for (int s = 0; s < ids.Length; s++)
        {
            runner.Blocks.Append(ids[s], lengths[s] + 1);
            batch.AddSequence(tokens[s].AsSpan(lengths[s], 1), lengths[s], runner.Blocks.BlockTable(ids[s]));
        }
        var decodeLogits = runner.Forward(batch);
        for (int s = 0; s < ids.Length; s++)
        {
            double error = MaxAbsDifference(decodeLogits.Slice(s * vocab, vocab), expected[s][lengths[s]]);
            Assert.True(error <= LogitsTolerance, $"decode of sequence {s}: max |engine - reference| = {error:E3}");
        }
    }

    [Fact]
    public void Stories260K_batch_that_needs_few_logits_rows_matches_the_reference_and_caches_every_rows_keys()
    {
        // The generated pass carries only the rows that need logits past the last layer's attention. A prompt with
        // logits for its last token, a chunk with none, and a decode token share a step; then the chunked prompt
        // goes on, reading the last layer's keys and values of the rows that were not carried.
        var engine = new Stories260KTestEngine();
        var random = new Random(261);
        int[] lengths = [40, 50, 20];
        var tokens = lengths.Select(n => Enumerable.Range(0, n).Select(i => i == 0 ? 1 : random.Next(3, 512)).ToArray()).ToArray();
        float[][][] expected;
        using (var checkpoint = OpenStories())
            expected = tokens.Select(t => ReferenceLogits(engine.Config, checkpoint, t)).ToArray();

        using var runner = new ModelRunner(engine, OpenStories());
        long[] ids = [20, 21, 22];
        AllocateInterleaved(runner.Blocks, ids, lengths);
        int vocab = engine.Config.VocabSize;
        var batch = runner.CreateBatch();

        // Sequence 2's first 19 tokens are cached beforehand, so that its 20th is a decode token in the mixed step.
        batch.AddSequence(tokens[2].AsSpan(0, 19), 0, runner.Blocks.BlockTable(ids[2]), LogitsRows.None);
        runner.Forward(batch);

        batch.Clear();
        batch.AddSequence(tokens[0], 0, runner.Blocks.BlockTable(ids[0]), LogitsRows.Last);
        batch.AddSequence(tokens[1].AsSpan(0, 30), 0, runner.Blocks.BlockTable(ids[1]), LogitsRows.None);
        batch.AddSequence(tokens[2].AsSpan(19, 1), 19, runner.Blocks.BlockTable(ids[2]), LogitsRows.Last);
        Assert.Equal(2, batch.NumLogits);
        var logits = runner.Forward(batch);
        AssertRow(logits, 0, expected[0][39], "last token of the whole prompt");
        AssertRow(logits, 1, expected[2][19], "decode token");

        batch.Clear();
        batch.AddSequence(tokens[1].AsSpan(30, 20), 30, runner.Blocks.BlockTable(ids[1]), LogitsRows.All);
        logits = runner.Forward(batch);
        for (int i = 0; i < 20; i++) AssertRow(logits, i, expected[1][30 + i], $"rest of the chunked prompt, position {30 + i}");

        void AssertRow(ReadOnlySpan<float> all, int row, float[] reference, string what)
        {
            double error = MaxAbsDifference(all.Slice(row * vocab, vocab), reference);
            Assert.True(error <= LogitsTolerance, $"{what}: max |engine - reference| = {error:E3}");
        }
    }

    [Fact]
    public void Stories260K_greedy_generation_of_256_tokens_gives_the_reference_token_ids()
    {
        var engine = new Stories260KTestEngine();
        int[] prompt = StoriesTokenizer().Encode("Once upon a time", addBos: true);
        const int numNewTokens = 256;

        var expected = new List<int>();
        using (var checkpoint = OpenStories())
        {
            var reference = new ReferenceTransformer(engine.Config, checkpoint);
            float[] logits = [];
            for (int p = 0; p < prompt.Length; p++) logits = reference.Forward(prompt[p], p);
            for (int i = 0; i < numNewTokens; i++)
            {
                int next = Sampler.Argmax(logits);
                expected.Add(next);
                if (i + 1 < numNewTokens) logits = reference.Forward(next, prompt.Length + i);
            }
        }

        using var runner = new ModelRunner(engine, OpenStories());
        var actual = new List<int>();
        var stats = new TextGenerator(runner).Generate(prompt, numNewTokens, new Sampler(engine.Config.VocabSize, new SamplingOptions()), actual.Add, stopAtEndOfText: false);

        Assert.Equal(numNewTokens, stats.NumGeneratedTokens);
        Assert.Equal(expected, actual);
        Assert.Equal(runner.Blocks.NumBlocks, runner.Blocks.NumFreeBlocks); // the generator gave its blocks back
    }

    [Fact]
    public void Explicit_block_engine_with_untied_head_and_half_rope_matches_the_reference_in_a_batch()
    {
        var engine = new TinyExplicitEngine();
        var c = engine.Config;
        Assert.False(c.TiedEmbedding);
        Assert.Equal(RopeStyle.Half, c.RopeStyle);
        var random = new Random(48);
        int[] lengths = [29, 17];
        var tokens = lengths.Select(n => Enumerable.Range(0, n).Select(_ => random.Next(c.VocabSize)).ToArray()).ToArray();
        float[][][] expected;
        using (var weights = StrongRandomWeights(c, seed: 7))
            expected = tokens.Select(t => ReferenceLogits(c, weights, t)).ToArray();

        using var runner = new ModelRunner(engine, StrongRandomWeights(c, seed: 7));
        long[] ids = [1, 2];
        AllocateInterleaved(runner.Blocks, ids, lengths);
        var batch = runner.CreateBatch();
        int done0 = 0, done1 = 0;
        // maxBatchTokens is 32 for this model: chunks of 16 + 9, then 13 + 8.
        foreach (var (n0, n1) in new[] { (16, 9), (13, 8) })
        {
            batch.Clear();
            batch.AddSequence(tokens[0].AsSpan(done0, n0), done0, runner.Blocks.BlockTable(ids[0]), allLogits: true);
            batch.AddSequence(tokens[1].AsSpan(done1, n1), done1, runner.Blocks.BlockTable(ids[1]), allLogits: true);
            var logits = runner.Forward(batch);
            for (int i = 0; i < n0 + n1; i++)
            {
                (int s, int p) = i < n0 ? (0, done0 + i) : (1, done1 + i - n0);
                double error = MaxAbsDifference(logits.Slice(i * c.VocabSize, c.VocabSize), expected[s][p]);
                Assert.True(error <= LogitsTolerance, $"sequence {s} position {p}: max |engine - reference| = {error:E3}");
            }
            done0 += n0;
            done1 += n1;
        }
    }

    [Fact]
    public void Qwen2_shaped_engine_with_qkv_biases_matches_the_reference_in_a_batch()
    {
        var engine = new TinyQwenEngine();
        var c = engine.Config;
        Assert.True(c.QkvBias);
        Assert.NotNull(engine.CudaPlan); // its CUDA kernels add the biases too (EmulatedTinyQwenTests)
        var random = new Random(64);
        int[] lengths = [21, 13];
        var tokens = lengths.Select(n => Enumerable.Range(0, n).Select(_ => random.Next(c.VocabSize)).ToArray()).ToArray();
        float[][][] expected;
        using (var weights = StrongRandomWeights(c, seed: 9))
            expected = tokens.Select(t => ReferenceLogits(c, weights, t)).ToArray();
        // Without the biases the reference differs clearly, so this test sees them.
        float[] withoutBias;
        using (var weights = StrongRandomWeights(c with { QkvBias = false }, seed: 9))
            withoutBias = ReferenceLogits(c with { QkvBias = false }, weights, tokens[0])[^1];
        Assert.True(MaxAbsDifference(expected[0][^1], withoutBias) > 1e-2);

        using var runner = new ModelRunner(engine, StrongRandomWeights(c, seed: 9));
        long[] ids = [1, 2];
        AllocateInterleaved(runner.Blocks, ids, lengths);
        var batch = runner.CreateBatch();
        batch.AddSequence(tokens[0], 0, runner.Blocks.BlockTable(ids[0]), allLogits: true);
        batch.AddSequence(tokens[1], 0, runner.Blocks.BlockTable(ids[1]), allLogits: true);
        var logits = runner.Forward(batch);
        for (int i = 0; i < lengths[0] + lengths[1]; i++)
        {
            (int s, int p) = i < lengths[0] ? (0, i) : (1, i - lengths[0]);
            double error = MaxAbsDifference(logits.Slice(i * c.VocabSize, c.VocabSize), expected[s][p]);
            Assert.True(error <= LogitsTolerance, $"sequence {s} position {p}: max |engine - reference| = {error:E3}");
        }
    }
}
