using System.Runtime.InteropServices;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// A test-side runner of a compiled model's <see cref="CudaLaunchPlan"/> on an <see cref="ICudaDevice"/>:
/// weights uploaded once, the arena, scratch, batch arrays, the KV pool and the logits in device memory,
/// each <see cref="CudaArg"/> bound to them. It stands in for the runtime's CUDA engine until that exists;
/// it knows nothing about the kernels beyond the plan.
/// </summary>
internal sealed class EmulatedCudaForward : IDisposable
{
    private readonly ICudaDevice _device;
    private readonly CudaLaunchPlan _plan;
    private readonly ModelConfig _config;
    private readonly ICudaModule _module;
    private readonly DevicePointer[] _weights;
    private readonly WeightDType[] _dtypes;
    private readonly DevicePointer _arena, _scratch, _tokenIds, _positions, _sequenceOfToken, _logitsTokenIndices, _blockTables, _keys, _values, _logits, _sampled;
    private readonly long _layerCacheFloats;

    public EmulatedCudaForward(ICudaDevice device, CompiledModel model, ModelWeights weights)
    {
        _device = device;
        _plan = model.CudaPlan ?? throw new InvalidOperationException("The model has no CUDA plan.");
        _config = model.Config;
        _module = device.LoadModule(_plan.Source, "stories260k");
        _weights = new DevicePointer[weights.Count];
        _dtypes = new WeightDType[weights.Count];
        for (int i = 0; i < weights.Count; i++)
        {
            // Matrices as their stored bytes (the kernel variant reads that type); vectors are f32.
            _dtypes[i] = weights.DType(i);
            if (_dtypes[i] == WeightDType.F32) _weights[i] = Upload(MemoryMarshal.AsBytes(weights[i]));
            else
            {
                WeightMatrix m = weights.Matrix(i);
                unsafe { _weights[i] = Upload(new ReadOnlySpan<byte>((void*)m.Data, checked(m.Rows * m.RowSizeInBytes))); }
            }
        }
        var c = _config;
        _arena = device.Allocate(4L * _plan.ArenaFloats);
        _scratch = device.Allocate(4L * Math.Max(_plan.ScratchFloats, 1));
        _tokenIds = device.Allocate(4L * c.MaxBatchTokens);
        _positions = device.Allocate(4L * c.MaxBatchTokens);
        _sequenceOfToken = device.Allocate(4L * c.MaxBatchTokens);
        _logitsTokenIndices = device.Allocate(4L * c.MaxBatchTokens);
        _blockTables = device.Allocate(4L * c.MaxSequences * c.MaxBlocksPerSequence);
        _layerCacheFloats = (long)c.NumKvBlocks * c.KvBlockSize * c.KvDim;
        _keys = device.Allocate(4L * c.NumLayers * _layerCacheFloats);
        _values = device.Allocate(4L * c.NumLayers * _layerCacheFloats);
        _logits = device.Allocate(4L * c.MaxBatchTokens * c.VocabSize);
        _sampled = device.Allocate(4L * c.MaxBatchTokens);
    }

    /// <summary>Every kernel launched so far (to check which variants ran).</summary>
    public HashSet<string> Launched { get; } = new();

    /// <summary>The batch's logits <c>[NumLogits, VocabSize]</c>.</summary>
    public float[] Forward(ForwardBatch batch)
    {
        UploadBatch(batch);
        Enqueue(batch);
        return DownloadLogits(batch);
    }

    /// <summary>
    /// Records the launches for <paramref name="batch"/>'s shape (token, sequence and logits counts are baked
    /// in, as in a CUDA graph per batch-size bucket); <see cref="Replay"/> runs them on a new batch of that shape.
    /// </summary>
    public ICudaGraph Capture(ForwardBatch batch)
    {
        _device.BeginCapture();
        Enqueue(batch);
        return _device.EndCapture();
    }

    /// <summary>Uploads <paramref name="batch"/>'s arrays, replays <paramref name="graph"/>, returns the logits.</summary>
    public float[] Replay(ICudaGraph graph, ForwardBatch batch)
    {
        UploadBatch(batch);
        _device.Replay(graph);
        return DownloadLogits(batch);
    }

    private void UploadBatch(ForwardBatch batch)
    {
        Upload(_tokenIds, batch.TokenIds);
        Upload(_positions, batch.Positions);
        Upload(_sequenceOfToken, batch.SequenceOfToken);
        Upload(_logitsTokenIndices, batch.LogitsTokenIndices);
        Upload(_blockTables, batch.BlockTables);
    }

    private void Enqueue(ForwardBatch batch)
    {
        Span<KernelArg> args = stackalloc KernelArg[32];
        foreach (CudaStage stage in new[] { CudaStage.Prologue, CudaStage.Layer, CudaStage.Epilogue })
        {
            int numRepeats = stage == CudaStage.Layer ? _config.NumLayers : 1;
            for (int layer = 0; layer < numRepeats; layer++)
            {
                foreach (CudaLaunch launch in _plan.Launches)
                {
                    if (launch.Stage != stage) continue;
                    CudaKernelChoice choice = _plan.Select(launch, batch.NumTokens, i => _dtypes[i], layer);
                    Dim3 grid = choice.Grid.For(batch.NumTokens, batch.NumSequences, batch.NumLogits);
                    if (grid.Y == 0) continue;
                    for (int i = 0; i < launch.Args.Count; i++) args[i] = Bind(launch.Args[i], layer, batch);
                    _device.Launch(_module, choice.Kernel, grid, choice.Block, choice.SharedMemoryBytes, args[..launch.Args.Count]);
                    Launched.Add(choice.Kernel);
                }
            }
        }
    }

    private float[] DownloadLogits(ForwardBatch batch)
    {
        var logits = new float[batch.NumLogits * _config.VocabSize];
        _device.CopyToHost(MemoryMarshal.AsBytes(logits.AsSpan()), _logits);
        return logits;
    }

    private KernelArg Bind(CudaArg arg, int layer, ForwardBatch batch) => arg.Kind switch
    {
        CudaArgKind.Weight or CudaArgKind.LayerWeight => KernelArg.Pointer(_weights[_plan.WeightIndex(arg, layer)]),
        CudaArgKind.Arena => KernelArg.Pointer(_arena.Offset(4L * arg.Value)),
        CudaArgKind.Scratch => KernelArg.Pointer(_scratch.Offset(4L * arg.Value)),
        CudaArgKind.TokenIds => KernelArg.Pointer(_tokenIds),
        CudaArgKind.Positions => KernelArg.Pointer(_positions),
        CudaArgKind.SequenceOfToken => KernelArg.Pointer(_sequenceOfToken),
        CudaArgKind.LogitsTokenIndices => KernelArg.Pointer(_logitsTokenIndices),
        CudaArgKind.BlockTables => KernelArg.Pointer(_blockTables),
        CudaArgKind.BlockTableStride => KernelArg.Int(batch.MaxBlocksPerSequence),
        CudaArgKind.KeyCache => KernelArg.Pointer(_keys.Offset(4L * layer * _layerCacheFloats)),
        CudaArgKind.ValueCache => KernelArg.Pointer(_values.Offset(4L * layer * _layerCacheFloats)),
        CudaArgKind.Logits => KernelArg.Pointer(_logits),
        CudaArgKind.SampledTokens => KernelArg.Pointer(_sampled),
        CudaArgKind.NumTokens => KernelArg.Int(batch.NumTokens),
        CudaArgKind.NumSequences => KernelArg.Int(batch.NumSequences),
        CudaArgKind.NumLogits => KernelArg.Int(batch.NumLogits),
        CudaArgKind.Int => KernelArg.Int(arg.Value),
        CudaArgKind.Float => KernelArg.Float(arg.FloatValue),
        CudaArgKind.Null => KernelArg.Pointer(default),
        _ => throw new NotSupportedException(arg.Kind.ToString()),
    };

    private DevicePointer Upload(ReadOnlySpan<byte> bytes)
    {
        DevicePointer p = _device.Allocate(bytes.Length);
        _device.CopyToDevice(p, bytes);
        return p;
    }

    private void Upload(DevicePointer destination, int[] values) => _device.CopyToDevice(destination, MemoryMarshal.AsBytes(values.AsSpan()));

    public void Dispose() => _module.Dispose();
}
