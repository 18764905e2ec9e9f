using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Cuda.Emulation;
using Xunit;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>The emulator runs hand-written kernels with the results a GPU gives (computed here by hand).</summary>
[Collection(EmulatorCollection.Name)]
public sealed class EmulatorKernelTests(EmulatorKernelTests.ModuleFixture module)
    : IClassFixture<EmulatorKernelTests.ModuleFixture>
{
    /// <summary>One device and one module (one g++ run, or none when cached) for the whole class.</summary>
    public sealed class ModuleFixture : IDisposable
    {
        public EmulatorFixture Emulator { get; } = new();
        public ICudaModule Module { get; }
        public ModuleFixture() => Module = Emulator.Device.LoadModule(TestKernels.Source, "emulator_tests");
        public void Dispose() { Module.Dispose(); Emulator.Dispose(); }
    }

    private readonly EmulatorFixture _emu = module.Emulator;
    private readonly ICudaModule _module = module.Module;
    private CudaEmulatorDevice Device => _emu.Device;

    [Fact]
    public void Built_in_indices_cover_a_3d_grid_of_3d_blocks()
    {
        var grid = new Dim3(2, 3, 2);
        var block = new Dim3(4, 2, 3);
        int numThreads = 12 * 24;
        DevicePointer output = _emu.Allocate<int>(12 * numThreads);
        Device.Launch(_module, "indices", grid, block, 0, [KernelArg.Pointer(output)]);
        int[] r = _emu.Download<int>(output, 12 * numThreads);

        int index = 0;
        for (int bz = 0; bz < 2; bz++) for (int by = 0; by < 3; by++) for (int bx = 0; bx < 2; bx++)
        for (int tz = 0; tz < 3; tz++) for (int ty = 0; ty < 2; ty++) for (int tx = 0; tx < 4; tx++, index++)
        {
            int[] expected = [tx, ty, tz, bx, by, bz, 4, 2, 3, 2, 3, 2];
            Assert.Equal(expected, r.AsSpan(12 * index, 12).ToArray());
        }
        Device.Free(output);
    }

    [Fact]
    public void Float_int_and_pointer_arguments_arrive_by_value()
    {
        float[] x = Enumerable.Range(0, 100).Select(i => i * 0.5f).ToArray();
        DevicePointer xs = _emu.Upload(x), ys = _emu.Upload(new float[128]);
        Device.Launch(_module, "axpb", new Dim3(4), new Dim3(32), 0,
            [KernelArg.Pointer(ys), KernelArg.Pointer(xs), KernelArg.Float(-2.5f), KernelArg.Int(100), KernelArg.Float(0.25f)]);
        float[] y = _emu.Download<float>(ys, 128);
        for (int i = 0; i < 100; i++) Assert.Equal(-2.5f * x[i] + 0.25f, y[i]);
        Assert.All(y[100..], v => Assert.Equal(0f, v));   // untouched past n
    }

    [Fact]
    public void Block_reduction_with_static_shared_memory_and_shuffles()
    {
        const int rows = 3, n = 1000;
        float[] x = Enumerable.Range(0, rows * n).Select(i => (float)(i % 7)).ToArray();
        DevicePointer xs = _emu.Upload(x), outs = _emu.Allocate<float>(rows);
        Device.Launch(_module, "row_sum_static", new Dim3(rows), new Dim3(256), 0,
            [KernelArg.Pointer(xs), KernelArg.Pointer(outs), KernelArg.Int(n), KernelArg.Float(0.5f)]);
        float[] sums = _emu.Download<float>(outs, rows);
        for (int r = 0; r < rows; r++)
            Assert.Equal(0.5f * Enumerable.Range(r * n, n).Sum(i => i % 7), sums[r]);
    }

    [Fact]
    public void Block_reduction_in_dynamic_shared_memory()
    {
        const int rows = 4, width = 128;
        float[] x = Enumerable.Range(0, rows * width).Select(i => (float)i).ToArray();
        DevicePointer xs = _emu.Upload(x), outs = _emu.Allocate<float>(rows);
        Device.Launch(_module, "row_sum_dynamic", new Dim3(rows), new Dim3(width), width * sizeof(float), [KernelArg.Pointer(xs), KernelArg.Pointer(outs)]);
        float[] sums = _emu.Download<float>(outs, rows);
        for (int r = 0; r < rows; r++) Assert.Equal((float)Enumerable.Range(r * width, width).Sum(), sums[r]);
    }

    [Fact]
    public void Shared_memory_transpose_over_a_2d_grid()
    {
        const int rows = 12, cols = 20;   // not multiples of the 8x8 tile
        float[] input = Enumerable.Range(0, rows * cols).Select(i => (float)i).ToArray();
        DevicePointer ins = _emu.Upload(input), outs = _emu.Allocate<float>(rows * cols);
        Device.Launch(_module, "transpose", new Dim3(3, 2), new Dim3(8, 8), 0,
            [KernelArg.Pointer(ins), KernelArg.Pointer(outs), KernelArg.Int(rows), KernelArg.Int(cols)]);
        float[] output = _emu.Download<float>(outs, rows * cols);
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) Assert.Equal(input[r * cols + c], output[c * rows + r]);
    }

    [Fact]
    public void Warp_shuffles_and_votes()
    {
        const int numThreads = 64;   // two warps
        int[] v = Enumerable.Range(0, numThreads).Select(i => i == 40 ? 1000 : i * 3 % 17).ToArray();
        DevicePointer ins = _emu.Upload(v), outs = _emu.Allocate<int>(7 * numThreads);
        Device.Launch(_module, "warp_ops", new Dim3(1), new Dim3(numThreads), 0, [KernelArg.Pointer(ins), KernelArg.Pointer(outs)]);
        int[] r = _emu.Download<int>(outs, 7 * numThreads);

        for (int t = 0; t < numThreads; t++)
        {
            int lane = t % 32, warp = t - lane;
            int[] w = v[warp..(warp + 32)];
            int segment = lane & ~7;
            uint ballot = 0;
            for (int l = 0; l < 32; l++) if (w[l] % 3 == 0) ballot |= 1u << l;
            int expectedAnyAll = (w.Any(x => x > 100) ? 1 : 0) + 2 * (w.All(x => x >= 0) ? 1 : 0);
            int[] expected =
            [
                w.Sum(),
                lane + 3 < 32 ? w[lane + 3] : w[lane],
                lane >= 5 ? w[lane - 5] : w[lane],
                w[7],
                w[segment..(segment + 8)].Sum(),
                (int)ballot,
                expectedAnyAll,
            ];
            Assert.Equal(expected, r.AsSpan(7 * t, 7).ToArray());
        }
    }

    [Fact]
    public void Atomics_build_a_histogram_a_total_a_maximum_and_one_owner()
    {
        const int n = 1000, numBins = 10;
        int[] data = Enumerable.Range(0, n).Select(i => i * 7919 % numBins).ToArray();
        data[123] = 9;
        DevicePointer datas = _emu.Upload(data), bins = _emu.Upload(new int[numBins]), total = _emu.Upload(new float[1]);
        DevicePointer maximum = _emu.Upload(new[] { int.MinValue }), owner = _emu.Upload(new[] { -1 }), winners = _emu.Upload(new int[1]);
        Device.Launch(_module, "atomics", new Dim3((n + 127) / 128), new Dim3(128), 0,
            [KernelArg.Pointer(datas), KernelArg.Int(n), KernelArg.Pointer(bins), KernelArg.Pointer(total), KernelArg.Pointer(maximum), KernelArg.Pointer(owner), KernelArg.Pointer(winners)]);

        int[] expectedBins = new int[numBins];
        foreach (int d in data) expectedBins[d]++;
        Assert.Equal(expectedBins, _emu.Download<int>(bins, numBins));
        Assert.Equal((float)data.Sum(), _emu.Download<float>(total, 1)[0]);
        Assert.Equal(data.Max(), _emu.Download<int>(maximum, 1)[0]);
        Assert.InRange(_emu.Download<int>(owner, 1)[0], 0, n - 1);
        Assert.Equal(1, _emu.Download<int>(winners, 1)[0]);
    }

    [Fact]
    public void Divergent_paths_to_separate_barriers_meet()
    {
        DevicePointer outs = _emu.Allocate<int>(64);
        Device.Launch(_module, "divergent_barrier", new Dim3(1), new Dim3(64), 0, [KernelArg.Pointer(outs)]);
        int[] r = _emu.Download<int>(outs, 64);
        for (int t = 0; t < 64; t++) Assert.Equal(t % 2 == 0 ? -(t + 1) : (t - 1) * 10, r[t]);
    }

    [Fact]
    public void Threads_that_exit_early_do_not_block_the_barrier()
    {
        const int n = 37;
        DevicePointer outs = _emu.Upload(Enumerable.Repeat(-7, 64).ToArray());
        Device.Launch(_module, "early_exit", new Dim3(1), new Dim3(64), 0, [KernelArg.Pointer(outs), KernelArg.Int(n)]);
        int[] r = _emu.Download<int>(outs, 64);
        for (int t = 0; t < 64; t++) Assert.Equal(t < n ? (n - 1 - t) * (n - 1 - t) : -7, r[t]);
    }

    [Fact]
    public void A_deadlocked_block_is_reported_and_the_module_stays_usable()
    {
        DevicePointer outs = _emu.Allocate<int>(32);
        var e = Assert.Throws<InvalidOperationException>(() => Device.Launch(_module, "deadlock", new Dim3(1), new Dim3(32), 0, [KernelArg.Pointer(outs)]));
        Assert.Contains("deadlock", e.Message);
        Assert.Contains("deadlock in block (0,0,0)", e.Message);

        DevicePointer after = _emu.Allocate<int>(64);
        Device.Launch(_module, "divergent_barrier", new Dim3(1), new Dim3(64), 0, [KernelArg.Pointer(after)]);
        Assert.Equal(-1, _emu.Download<int>(after, 1)[0]);
    }

    [Fact]
    public void Launch_arguments_are_checked_against_the_kernel_signature()
    {
        Assert.True(_module.HasKernel("axpb"));
        Assert.False(_module.HasKernel("no_such_kernel"));
        DevicePointer p = _emu.Allocate<float>(4);
        Assert.Throws<ArgumentException>(() => Device.Launch(_module, "axpb", new Dim3(1), new Dim3(4), 0, [KernelArg.Pointer(p)]));
        Assert.Throws<ArgumentException>(() => Device.Launch(_module, "axpb", new Dim3(1), new Dim3(4), 0,
            [KernelArg.Pointer(p), KernelArg.Pointer(p), KernelArg.Pointer(p), KernelArg.Int(4), KernelArg.Float(0)]));
        Assert.Throws<ArgumentException>(() => Device.Launch(_module, "no_such_kernel", new Dim3(1), new Dim3(4), 0, []));
        var tooBig = Assert.Throws<InvalidOperationException>(() => Device.Launch(_module, "indices", new Dim3(1), new Dim3(2048), 0, [KernelArg.Pointer(p)]));
        Assert.Contains("1024", tooBig.Message);
    }

    [Fact]
    public void A_captured_graph_replays_its_launches_on_new_inputs()
    {
        const int rows = 2, n = 64;
        DevicePointer x = _emu.Allocate<float>(rows * n), scaled = _emu.Allocate<float>(rows * n), sums = _emu.Upload(new float[rows]);
        Device.BeginCapture();
        Device.Launch(_module, "axpb", new Dim3(rows * n / 32), new Dim3(32), 0,
            [KernelArg.Pointer(scaled), KernelArg.Pointer(x), KernelArg.Float(2f), KernelArg.Int(rows * n), KernelArg.Float(1f)]);
        Device.Launch(_module, "row_sum_static", new Dim3(rows), new Dim3(64), 0,
            [KernelArg.Pointer(scaled), KernelArg.Pointer(sums), KernelArg.Int(n), KernelArg.Float(1f)]);
        using ICudaGraph graph = Device.EndCapture();
        Assert.Equal(new float[rows], _emu.Download<float>(sums, rows));   // captured, not run

        for (int step = 0; step < 3; step++)
        {
            float[] input = Enumerable.Range(0, rows * n).Select(i => (float)((i + step) % 5)).ToArray();
            _emu.Write(x, input);
            Device.Replay(graph);
            float[] result = _emu.Download<float>(sums, rows);
            for (int r = 0; r < rows; r++) Assert.Equal(input.Skip(r * n).Take(n).Sum(v => 2 * v + 1), result[r]);
        }
    }

    [Fact]
    public void Device_memory_starts_as_nan_and_memset_fills_it()
    {
        DevicePointer p = _emu.Allocate<float>(8);
        Assert.All(_emu.Download<float>(p, 8), v => Assert.True(float.IsNaN(v)));
        Device.Memset(p, 0, 32);
        Assert.All(_emu.Download<float>(p, 8), v => Assert.Equal(0f, v));
        Device.Free(p);
        Assert.Throws<ArgumentException>(() => Device.Free(p));
    }
}
