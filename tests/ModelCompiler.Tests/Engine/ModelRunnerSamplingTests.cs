using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Threading;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.CudaEmulation;
using ModelCompiler.Tests.Kernels;
using Xunit;

namespace ModelCompiler.Tests.Engine;

/// <summary>
/// The CPU runner's <see cref="IModelRunner.ForwardSample"/> draws its rows in parallel over the worker pool: each row
/// must get exactly the token its own sampler draws from that row alone, on any thread count.
/// </summary>
[Collection(WorkerPoolCollection.Name)]
public sealed class ModelRunnerSamplingTests
{
    [Fact]
    public void ForwardSample_draws_each_row_with_its_own_sampler_on_any_thread_count()
    {
        var engine = new Llama15MTestEngine();
        using var runner = new ModelRunner(engine, InMemoryWeightSource.CreateRandomLlama(engine.Config, seed: 21));
        int vocab = engine.Config.VocabSize;
        // Greedy, plain, top-k, top-p and both: rows that a mixed-up sampler or row would draw differently.
        SamplingOptions[] options =
        [
            new(Temperature: 1f, TopK: 40, Seed: 1),
            new(Temperature: 1f, TopP: 0.9f, Seed: 2),
            new(Temperature: 0f),
            new(Temperature: 0.7f, Seed: 4),
            new(Temperature: 1.3f, TopK: 100, TopP: 0.95f, Seed: 5),
            new(Temperature: 1f, Seed: 6),
            new(Temperature: 2f, Seed: 7),
        ];
        var batch = runner.CreateBatch();
        for (int s = 0; s < options.Length; s++)
        {
            runner.Blocks.Allocate(s, 3);
            batch.AddSequence([1, 300 + 700 * s, 41 * s + 9], 0, runner.Blocks.BlockTable(s));
        }

        int saved = WorkerPool.ThreadCount;
        try
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                WorkerPool.SetThreadCount(threads);
                // The reference: the same batch's logits, each row drawn alone by a fresh sampler with its options.
                float[] logits = runner.Forward(batch).ToArray();
                int[] expected = options.Select((o, row) => new Sampler(vocab, o).Sample(logits.AsSpan(row * vocab, vocab))).ToArray();
                var tokens = new int[options.Length];
                ((IModelRunner)runner).ForwardSample(batch, options.Select(o => new Sampler(vocab, o)).ToArray(), tokens);
                Assert.Equal(expected, tokens);
                Assert.True(expected.Distinct().Count() > 3, $"The rows should draw different tokens: {string.Join(", ", expected)}");
            }
        }
        finally
        {
            WorkerPool.SetThreadCount(saved);
        }
    }
}
