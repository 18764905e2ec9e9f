using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Tests.Engine;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>The Llama15M description from models/Llama15M (vocabulary 32000, dim 288, 6 layers).</summary>
[ModelEngine("llama15m.model.json")]
public sealed partial class Llama15MTestEngine;

/// <summary>Llama15M's generated CUDA source with random weights on the emulator, against the CPU engine (f32: ≤ 1e-4).</summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedLlama15MTests
{
    [Fact]
    public void Prefill_and_graph_replayed_decode_logits_match_the_cpu_engine()
    {
        // Few tokens: the emulator runs a 32000-row LM head per logits row on fibers.
        int[] tokens = [1, 403, 2501, 31999, 17, 9000];
        const int prefill = 4;
        var engine = new Llama15MTestEngine();
        int vocab = engine.Config.VocabSize;
        using var runner = new ModelRunner(engine, InMemoryWeightSource.CreateRandomLlama(engine.Config, seed: 15));
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights);

        var batch = runner.CreateBatch();
        runner.Blocks.Allocate(0, prefill);
        batch.AddSequence(tokens.AsSpan(0, prefill), 0, runner.Blocks.BlockTable(0), allLogits: true);
        EmulatedStories260KTests.AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), vocab, "prefill");

        for (int position = prefill; position < tokens.Length; position++)
        {
            runner.Blocks.Append(0, position + 1);
            batch.Clear();
            batch.AddSequence(tokens.AsSpan(position, 1), position, runner.Blocks.BlockTable(0));
            EmulatedStories260KTests.AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), vocab, $"decode position {position}");
        }
        Assert.Equal(1, cuda.NumCapturedGraphs);
    }
}

/// <summary>Weights stored in another type are decoded to f32 when the CUDA runner uploads them.</summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedWeightDecodeTests
{
    [Theory]
    [InlineData(WeightDType.F16, 2e-3)]
    [InlineData(WeightDType.BF16, 2e-3)]
    public void Half_precision_weights_decoded_on_upload_match_the_cpu_engine(WeightDType dtype, double tolerance)
    {
        var engine = new Stories260KTestEngine();
        var config = engine.Config;
        using var runner = new ModelRunner(engine, new ConvertedWeightSource(InMemoryWeightSource.CreateRandomLlama(config, seed: 3), dtype));
        Assert.Contains(Enumerable.Range(0, runner.Weights.Count), i => runner.Weights.DType(i) == dtype);
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights);

        var batch = runner.CreateBatch();
        runner.Blocks.Allocate(0, 8);
        batch.AddSequence([1, 20, 300, 40, 5, 60, 7, 80], 0, runner.Blocks.BlockTable(0), allLogits: true);
        EmulatedStories260KTests.AssertClose(cuda.Forward(batch), runner.Forward(batch).ToArray(), config.VocabSize, WeightDTypes.Name(dtype), tolerance);
    }
}
