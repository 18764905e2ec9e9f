using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Tests.Engine;
using Xunit;
using static ModelCompiler.Tests.Engine.EngineTestSupport;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>Stories260K compiled with <c>runtime.kvCacheDType: f16</c>: the CUDA runner on the emulator keeps an f16 pool like the CPU engine's.</summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatedF16KvCacheTests
{
    /// <summary>
    /// Bound on |emulated − CPU| logits with an f16 cache. Both round each key and value the same way, but the
    /// values they round differ in the last f32 bits (arithmetic order), and a few land on the neighbouring half;
    /// the CPU engine alone differs from itself by up to 6.3e-3 between a 40-token prefill and 40 single-token
    /// steps (f32 cache: 1.3e-5). A wrong layout or a missed conversion gives errors of order 1; the cache
    /// contents are checked exactly below.
    /// </summary>
    private const double F16KvLogitsTolerance = 1e-2;

    [Fact]
    public void The_device_pool_holds_the_cpu_engines_halves_and_the_logits_match()
    {
        var engine = new Stories260KF16KvTestEngine();
        using var runner = new ModelRunner(engine, OpenStories());
        using var emulator = new EmulatorFixture();
        using var cuda = new CudaModelRunner(emulator.Device, engine, runner.Weights);
        var c = engine.Config;
        var (ids, lengths) = EmulatedStories260KTests.RunInterleavedPrefillAndDecode(runner, cuda, F16KvLogitsTolerance);
        Assert.Equal(1, cuda.NumCapturedGraphs);

        // Every cached key and value: a half on the device; in layer 0, the CPU's half or its neighbour.
        var (cpuKey, cpuValue, deviceKey, deviceValue) = (new float[c.KvDim], new float[c.KvDim], new float[c.KvDim], new float[c.KvDim]);
        int numCompared = 0, numNeighbours = 0;
        for (int s = 0; s < 3; s++)
        for (int position = 0; position < lengths[s]; position++)
        for (int layer = 0; layer < c.NumLayers; layer++)
        {
            int block = runner.Blocks.BlockTable(ids[s])[position / c.KvBlockSize], offset = position % c.KvBlockSize;
            runner.KvCache.ReadToken(layer, block, offset, cpuKey, cpuValue);
            cuda.ReadKvToken(layer, block, offset, deviceKey, deviceValue);
            for (int i = 0; i < c.KvDim; i++)
            {
                Check(cpuKey[i], deviceKey[i]);
                Check(cpuValue[i], deviceValue[i]);
            }

            void Check(float cpu, float device)
            {
                numCompared++;
                Assert.Equal(device, (float)(Half)device);   // representable in f16: the pool stores halves
                if (cpu == device || layer > 0) return;   // later layers' inputs carry the earlier roundings' differences
                numNeighbours++;
                // Layer 0 rounds the same f32 values up to arithmetic order: one half-ulp apart at most, or near zero
                // (where f32 order noise of ~1e-6 spans several halves) within that noise.
                Half larger = (Half)Math.Max(Math.Abs(cpu), Math.Abs(device));
                double ulp = (double)Half.BitIncrement(larger) - (double)larger;
                Assert.True(Math.Abs(cpu - device) <= ulp + 2e-6,
                    $"sequence {s} position {position}, layer 0: cpu {cpu} vs device {device} differ by more than rounding");
            }
        }
        Assert.True(numNeighbours * 50 < numCompared / c.NumLayers, $"{numNeighbours} of layer 0's {numCompared / c.NumLayers} cached elements differ: more than rounding ties explain");
    }
}
