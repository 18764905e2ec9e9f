using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Cuda;

/// <summary>
/// Runs a compiled model's <see cref="CudaLaunchPlan"/> on an <see cref="ICudaDevice"/> (a GPU through the
/// driver API, or the CPU emulator): the weights are uploaded once in their stored type (each projection
/// has a kernel per weight type), and the activation arena, scratch, batch arrays, logits, sampled ids and
/// the paged KV pool live in device memory. Which sequence owns which KV block is decided
/// on the host by <see cref="Blocks"/>, exactly as for the CPU engine; only the block tables travel.
/// </summary>
/// <remarks>
/// <para>Prefill batches run eagerly. A decode batch (one new token and one logits row per sequence) is
/// padded to its batch-size bucket (1, 2, 4, 8, … up to the largest batch the model takes) and runs as that
/// bucket's captured graph: the graph is captured on the bucket's first use, and every step copies its
/// inputs into the same device buffers before replaying it.</para>
/// <para>Padding rows must not touch real sequences' KV: the device pool has one block more than
/// <see cref="ModelConfig.NumKvBlocks"/>, <see cref="PaddingBlock"/>, which the host block manager never
/// hands out. A padding row is token 0 at position 0 whose block table is that block alone, so it writes
/// its K/V into slot 0 of the padding block, attends over that one position, and its logits are dropped.</para>
/// <para>The serving engine drives it like the CPU runner (<see cref="IModelRunner"/>): its copy-on-write
/// block copies run device to device (<see cref="CopyKvBlock"/>). Sampling runs on the device
/// (<see cref="ForwardGreedy"/>, <see cref="ForwardSample"/>: one kernel for greedy and sampled rows) so that
/// only token ids come back; each sampled row's uniform is drawn on the host by its sequence's own
/// <see cref="Sampler"/>, so seeds give the CPU engine's tokens. Rows beyond the kernel's candidate bound
/// (a top-k above 1024, or a top-p nucleus of more than 1024 tokens without top-k) come back as a negative id
/// and are sampled on the host from their logits row with the same uniform (<see cref="NumRowsSampledOnHost"/>).
/// Callers that need some rows' logits as well (log-probabilities) copy just those rows (<see cref="CopyLogitsRow"/>).</para>
/// <para>One caller at a time.</para>
/// </remarks>
public sealed class CudaModelRunner : IModelRunner
{
    private readonly ICudaDevice _device;
    private readonly bool _ownsDevice;
    private readonly CudaLaunchPlan _plan;
    private readonly ICudaModule _module;
    private readonly List<DevicePointer> _allocations = [];
    private readonly DevicePointer[] _weights;
    private readonly WeightDType[] _weightTypes;     // stored type of each bound weight: picks the kernel variant
    private readonly HashSet<string> _launchedKernels = new(StringComparer.Ordinal);
    private readonly DevicePointer _arena, _scratch, _tokenIds, _positions, _sequenceOfToken, _logitsTokenIndices, _blockTables, _keys, _values, _logits, _sampled, _samplingParams;
    private readonly long _kvSlotBytes;       // one token's keys (or values) in one layer: KvDim elements of the cache type
    private readonly float[] _hostLogits;
    private int _numLogits;                         // logits rows of the last forward pass, in _logits
    private readonly int[] _hostSamplingParams;     // [MaxBatchTokens, SamplingParamInts], see SamplingParamInts
    private readonly ulong[] _uniforms;             // [MaxBatchTokens] the uniform of each sampled row of the last ForwardSample
    private readonly int[] _paddingTable;
    private readonly int[] _buckets;
    private readonly ForwardBatch _padded;
    private readonly Dictionary<(int Bucket, bool Sampling), ICudaGraph> _graphs = [];
    private bool _disposed;

    /// <summary>
    /// Binds <paramref name="source"/> to <paramref name="model"/>'s weight table, uploads the weights and
    /// frees the host copy. The runner owns <paramref name="source"/> from here on; it owns
    /// <paramref name="device"/> only when <paramref name="ownsDevice"/>.
    /// </summary>
    /// <exception cref="NotSupportedException">The model has no CUDA plan, or its KV cache is not f32.</exception>
    public CudaModelRunner(ICudaDevice device, CompiledModel model, IWeightSource source, bool ownsDevice = false)
        : this(device, model, BindOwned(model, source), ownsDevice, disposeWeights: true)
    {
    }

    /// <summary>
    /// Uploads <paramref name="weights"/> (bound from <paramref name="model"/>'s weight table; read only
    /// here, the caller keeps them) and allocates the device buffers.
    /// </summary>
    /// <exception cref="NotSupportedException">The model has no CUDA plan, or its KV cache is not f32.</exception>
    public CudaModelRunner(ICudaDevice device, CompiledModel model, ModelWeights weights, bool ownsDevice = false)
        : this(device, model, weights, ownsDevice, disposeWeights: false)
    {
    }

    private CudaModelRunner(ICudaDevice device, CompiledModel model, ModelWeights weights, bool ownsDevice, bool disposeWeights)
    {
        try
        {
            _plan = model.CudaPlan ?? throw new NotSupportedException($"{model.Config.Name} was compiled without a CUDA plan.");
            _device = device;
            _ownsDevice = ownsDevice;
            Model = model;
            var c = model.Config;
            _module = device.LoadModule(_plan.Source, ModuleName(c.Name));
            _weights = new DevicePointer[weights.Count];
            _weightTypes = new WeightDType[weights.Count];
            for (int i = 0; i < weights.Count; i++)
            {
                _weightTypes[i] = weights.DType(i);
                _weights[i] = UploadWeight(weights, i);
            }

            _arena = Allocate(4L * Math.Max(_plan.ArenaFloats, 1));
            _scratch = Allocate(4L * Math.Max(_plan.ScratchFloats, 1));
            _tokenIds = Allocate(4L * c.MaxBatchTokens);
            _positions = Allocate(4L * c.MaxBatchTokens);
            _sequenceOfToken = Allocate(4L * c.MaxBatchTokens);
            _logitsTokenIndices = Allocate(4L * c.MaxBatchTokens);
            _blockTables = Allocate(4L * c.MaxSequences * c.MaxBlocksPerSequence);
            // One block more than the host hands out: the padding rows' block (see the remarks).
            _kvSlotBytes = (long)c.KvDim * KvCacheDTypes.ElementSizeInBytes(c.KvCacheDType);
            _keys = Allocate(KvOffset(c.NumLayers, 0, 0));
            _values = Allocate(KvOffset(c.NumLayers, 0, 0));
            _logits = Allocate(4L * c.MaxBatchTokens * c.VocabSize);
            _sampled = Allocate(4L * c.MaxBatchTokens);
            _samplingParams = Allocate(4L * SamplingParamInts * c.MaxBatchTokens);
            _hostLogits = new float[(long)c.MaxBatchTokens * c.VocabSize];
            _hostSamplingParams = new int[SamplingParamInts * c.MaxBatchTokens];
            _uniforms = new ulong[c.MaxBatchTokens];

            Blocks = new BlockManager(c.NumKvBlocks, c.KvBlockSize);
            _paddingTable = [PaddingBlock];
            _buckets = Buckets(Math.Min(c.MaxSequences, c.MaxBatchTokens));
            _padded = CreateBatch();
        }
        catch
        {
            FreeAll();
            if (disposeWeights) weights.Dispose();
            if (ownsDevice) device.Dispose();
            throw;
        }
        if (disposeWeights) weights.Dispose();
    }

    /// <summary>The compiled model.</summary>
    public CompiledModel Model { get; }
    /// <inheritdoc/>
    public ModelConfig Config => Model.Config;
    /// <summary>The device the plan runs on.</summary>
    public ICudaDevice Device => _device;
    /// <inheritdoc/>
    public BlockManager Blocks { get; }
    /// <summary>Decode batches go through captured graphs (true by default); false runs every batch eagerly.</summary>
    public bool UseGraphs { get; set; } = true;
    /// <summary>The device KV block padding rows write to; the host block manager never hands it out.</summary>
    public int PaddingBlock => Config.NumKvBlocks;
    /// <summary>The decode batch-size buckets, ascending: 1, 2, 4, … and the largest decode batch.</summary>
    public IReadOnlyList<int> DecodeBuckets => _buckets;
    /// <summary>
    /// Ints of sampling parameters per logits row in the device buffer the sampling kernel reads
    /// (<see cref="CudaArgKind.SamplingParams"/>): mode (0 greedy, 1 sample), 1/T as float bits, top-k, top-p as
    /// float bits, and the row's uniform as two ints, low first.
    /// </summary>
    public const int SamplingParamInts = 6;

    /// <summary>Rows at a temperature above 0 sampled by the kernel so far (greedy rows not counted).</summary>
    public long NumRowsSampledOnDevice { get; private set; }

    /// <summary>Sampled rows the kernel left to the host (beyond its candidate bound) so far; each was sampled there with its own uniform.</summary>
    public long NumRowsSampledOnHost { get; private set; }

    /// <summary>How many graphs have been captured (one per bucket used, for logits and for token ids).</summary>
    public int NumCapturedGraphs => _graphs.Count;

    /// <inheritdoc/>
    public ForwardBatch CreateBatch() =>
        new(Config.MaxBatchTokens, Config.MaxSequences, Config.MaxBlocksPerSequence, Config.KvBlockSize);

    /// <summary>The smallest bucket that holds <paramref name="numSequences"/> decode rows.</summary>
    public int BucketFor(int numSequences)
    {
        foreach (int b in _buckets) if (b >= numSequences) return b;
        throw new ArgumentOutOfRangeException(nameof(numSequences), $"A decode batch holds at most {_buckets[^1]} sequences.");
    }

    /// <summary>Every kernel launched so far, by name (which weight-type and prefill variants ran).</summary>
    public IReadOnlyCollection<string> LaunchedKernels => _launchedKernels;

    /// <summary>Runs <paramref name="batch"/> on the device; returns its logits <c>[batch.NumLogits, VocabSize]</c>, valid until the next call.</summary>
    public ReadOnlySpan<float> Forward(ForwardBatch batch)
    {
        Run(batch, sampling: false);
        int count = batch.NumLogits * Config.VocabSize;
        _device.CopyToHost(MemoryMarshal.AsBytes(_hostLogits.AsSpan(0, count)), _logits);
        return _hostLogits.AsSpan(0, count);
    }

    /// <summary>
    /// Runs <paramref name="batch"/> and greedy sampling on the device; writes the argmax token of each
    /// logits row to <paramref name="tokens"/> (only the ids come back to the host).
    /// </summary>
    public void ForwardGreedy(ForwardBatch batch, Span<int> tokens)
    {
        if (tokens.Length < batch.NumLogits) throw new ArgumentException($"{batch.NumLogits} token slots needed.", nameof(tokens));
        for (int row = 0; row < batch.NumLogits; row++) SetGreedy(row);
        Run(batch, sampling: true);
        _device.CopyToHost(MemoryMarshal.AsBytes(tokens[..batch.NumLogits]), _sampled);
    }

    /// <summary>
    /// Runs <paramref name="batch"/> and samples each logits row on the device as <paramref name="samplers"/>[row]
    /// would (<see cref="Sampler.Sample(ReadOnlySpan{float}, ulong)"/> with a uniform it draws from that
    /// sampler, one per sampled row); only the ids come back, except for rows beyond the kernel's candidate
    /// bound, whose logits come back to be sampled on the host with the same uniform.
    /// </summary>
    public void ForwardSample(ForwardBatch batch, ReadOnlySpan<Sampler> samplers, Span<int> tokens)
    {
        int numRows = batch.NumLogits;
        IModelRunner.CheckSampling(this, batch, samplers, tokens);
        for (int row = 0; row < numRows; row++)
        {
            Sampler sampler = samplers[row];
            if (!sampler.NeedsUniform)
            {
                SetGreedy(row);
                continue;
            }
            ulong uniform = sampler.NextUniform();
            _uniforms[row] = uniform;
            Span<int> p = _hostSamplingParams.AsSpan(row * SamplingParamInts, SamplingParamInts);
            p[0] = 1;
            p[1] = BitConverter.SingleToInt32Bits(1f / sampler.Options.Temperature);   // as Sampler computes it
            p[2] = sampler.Options.TopK;
            p[3] = BitConverter.SingleToInt32Bits(sampler.Options.TopP);
            p[4] = (int)(uint)uniform;
            p[5] = (int)(uint)(uniform >> 32);
        }
        Run(batch, sampling: true);
        _device.CopyToHost(MemoryMarshal.AsBytes(tokens[..numRows]), _sampled);
        int vocab = Config.VocabSize;
        for (int row = 0; row < numRows; row++)
        {
            if (!samplers[row].NeedsUniform) continue;
            if (tokens[row] >= 0)
            {
                NumRowsSampledOnDevice++;
                continue;
            }
            // Beyond the kernel's candidate bound (MC_SAMPLE_TOP_K_ABOVE_BOUND, MC_SAMPLE_NUCLEUS_ABOVE_BOUND): the same draw on the host.
            Span<float> logits = _hostLogits.AsSpan(row * vocab, vocab);
            CopyLogitsRow(row, logits);
            tokens[row] = samplers[row].Sample(logits, _uniforms[row]);
            NumRowsSampledOnHost++;
        }
    }

    private void SetGreedy(int row) => _hostSamplingParams.AsSpan(row * SamplingParamInts, SamplingParamInts).Clear();

    /// <summary>
    /// Copies block <paramref name="sourceBlock"/>'s keys and values into <paramref name="destinationBlock"/>
    /// in every layer, device to device on the launch stream (so before the next forward pass reads them):
    /// the copy-on-write of a shared block that parallel sampling needs. The blocks never come to the host.
    /// </summary>
    public void CopyKvBlock(int sourceBlock, int destinationBlock)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int numBlocks = Config.NumKvBlocks;
        if ((uint)sourceBlock >= (uint)numBlocks) throw new ArgumentOutOfRangeException(nameof(sourceBlock), sourceBlock, $"The pool has {numBlocks} blocks.");
        if ((uint)destinationBlock >= (uint)numBlocks) throw new ArgumentOutOfRangeException(nameof(destinationBlock), destinationBlock, $"The pool has {numBlocks} blocks.");
        if (sourceBlock == destinationBlock) return;
        long blockBytes = Config.KvBlockSize * _kvSlotBytes;
        for (int layer = 0; layer < Config.NumLayers; layer++)
        {
            _device.CopyOnDevice(_keys.Offset(KvOffset(layer, destinationBlock, 0)), _keys.Offset(KvOffset(layer, sourceBlock, 0)), blockBytes);
            _device.CopyOnDevice(_values.Offset(KvOffset(layer, destinationBlock, 0)), _values.Offset(KvOffset(layer, sourceBlock, 0)), blockBytes);
        }
        NumBlockCopies++;
    }

    /// <summary>
    /// Reads back one token's key and value (widened to f32) from slot <paramref name="offset"/> of
    /// <paramref name="block"/> of the device pool, as <see cref="PagedKvCache.ReadToken"/> does for the CPU's:
    /// for checking what the kernels stored. Synchronises with the launch stream.
    /// </summary>
    public void ReadKvToken(int layer, int block, int offset, Span<float> key, Span<float> value)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = Config;
        if ((uint)layer >= (uint)c.NumLayers) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"The pool has {c.NumLayers} layers.");
        if ((uint)block > (uint)c.NumKvBlocks) throw new ArgumentOutOfRangeException(nameof(block), block, $"The pool has {c.NumKvBlocks} blocks and the padding block.");
        if ((uint)offset >= (uint)c.KvBlockSize) throw new ArgumentOutOfRangeException(nameof(offset), offset, $"A block has {c.KvBlockSize} slots.");
        long start = KvOffset(layer, block, offset);
        var row = new byte[_kvSlotBytes];
        _device.Synchronize();
        _device.CopyToHost(row, _keys.Offset(start));
        Widen(row, key[..c.KvDim]);
        _device.CopyToHost(row, _values.Offset(start));
        Widen(row, value[..c.KvDim]);

        void Widen(ReadOnlySpan<byte> bytes, Span<float> destination)
        {
            if (c.KvCacheDType == KvCacheDType.F32) System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
            else for (int i = 0; i < destination.Length; i++) destination[i] = (float)System.Runtime.InteropServices.MemoryMarshal.Read<Half>(bytes[(2 * i)..]);
        }
    }

    /// <summary>
    /// Byte offset of slot <paramref name="offset"/> of <paramref name="block"/> in layer <paramref name="layer"/>'s part
    /// of the device pool, which is [layer][block][slot][kvDim] with one extra (padding) block per layer; the kernels get
    /// each layer's start and index within it the same way (mc_cache_slot).
    /// </summary>
    private long KvOffset(int layer, int block, int offset) =>
        (((long)layer * (Config.NumKvBlocks + 1) + block) * Config.KvBlockSize + offset) * _kvSlotBytes;

    /// <summary>Copy-on-write block copies done on the device so far (see <see cref="CopyKvBlock"/>).</summary>
    public long NumBlockCopies { get; private set; }

    /// <inheritdoc/>
    public void CopyLogitsRow(int row, Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        IModelRunner.CheckLogitsRow(this, row, _numLogits, destination);
        _device.CopyToHost(MemoryMarshal.AsBytes(destination), _logits.Offset(4L * row * Config.VocabSize));
    }

    // With sampling, _hostSamplingParams holds the parameters of the batch's logits rows.
    private void Run(ForwardBatch batch, bool sampling)
    {
        _numLogits = 0;
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batch.NumTokens == 0) throw new ArgumentException("The batch is empty.", nameof(batch));
        if (batch.MaxBlocksPerSequence != Config.MaxBlocksPerSequence || batch.MaxTokens > Config.MaxBatchTokens || batch.MaxSequences > Config.MaxSequences)
            throw new ArgumentException("The batch was not sized for this model (use CreateBatch).", nameof(batch));
        if (UseGraphs && IsDecode(batch) && batch.NumSequences <= _buckets[^1])
        {
            int bucket = BucketFor(batch.NumSequences);
            ForwardBatch padded = Pad(batch, bucket);
            UploadBatch(padded);
            if (sampling)
            {
                for (int row = batch.NumLogits; row < bucket; row++) SetGreedy(row);   // padding rows: a cheap argmax, dropped
                Upload(_samplingParams, _hostSamplingParams.AsSpan(0, bucket * SamplingParamInts));
            }
            if (!_graphs.TryGetValue((bucket, sampling), out ICudaGraph? graph))
            {
                _device.BeginCapture();
                try { Enqueue(padded, sampling); }
                finally { graph = _device.EndCapture(); }
                _graphs[(bucket, sampling)] = graph;
            }
            _device.Replay(graph);
            _numLogits = batch.NumLogits;
            return;
        }
        UploadBatch(batch);
        if (sampling) Upload(_samplingParams, _hostSamplingParams.AsSpan(0, batch.NumLogits * SamplingParamInts));
        Enqueue(batch, sampling);
        _numLogits = batch.NumLogits;
    }

    private static bool IsDecode(ForwardBatch batch)
    {
        if (batch.NumTokens != batch.NumSequences || batch.NumLogits != batch.NumSequences) return false;
        for (int s = 0; s < batch.NumSequences; s++)
            if (batch.SequenceLength[s] != 1 || batch.LogitsTokenIndices[s] != s) return false;
        return true;
    }

    // The real rows first, in order, then padding rows on the padding block.
    private ForwardBatch Pad(ForwardBatch batch, int bucket)
    {
        _padded.Clear();
        for (int s = 0; s < batch.NumSequences; s++)
            _padded.AddSequence(batch.TokenIds.AsSpan(s, 1), batch.StartPosition[s], batch.BlockTable(s));
        ReadOnlySpan<int> paddingToken = [0];
        for (int s = batch.NumSequences; s < bucket; s++) _padded.AddSequence(paddingToken, 0, _paddingTable);
        return _padded;
    }

    private void UploadBatch(ForwardBatch batch)
    {
        Upload(_tokenIds, batch.TokenIds.AsSpan(0, batch.NumTokens));
        Upload(_positions, batch.Positions.AsSpan(0, batch.NumTokens));
        Upload(_sequenceOfToken, batch.SequenceOfToken.AsSpan(0, batch.NumTokens));
        Upload(_logitsTokenIndices, batch.LogitsTokenIndices.AsSpan(0, Math.Max(batch.NumLogits, 1)));
        Upload(_blockTables, batch.BlockTables.AsSpan(0, batch.NumSequences * batch.MaxBlocksPerSequence));
    }

    private void Enqueue(ForwardBatch batch, bool sampling)
    {
        Span<KernelArg> args = stackalloc KernelArg[32];
        ReadOnlySpan<CudaStage> stages = sampling
            ? [CudaStage.Prologue, CudaStage.Layer, CudaStage.Epilogue, CudaStage.Sampling]
            : [CudaStage.Prologue, CudaStage.Layer, CudaStage.Epilogue];
        foreach (CudaStage stage in stages)
        {
            int numRepeats = stage == CudaStage.Layer ? Config.NumLayers : 1;
            for (int layer = 0; layer < numRepeats; layer++)
            {
                foreach (CudaLaunch launch in _plan.Launches)
                {
                    if (launch.Stage != stage) continue;
                    // The variant for the bound matrix's stored type, and the tensor-core GEMM for big batches.
                    CudaKernelChoice choice = _plan.Select(launch, batch.NumTokens, i => _weightTypes[i], layer);
                    Dim3 grid = choice.Grid.For(batch.NumTokens, batch.NumSequences, batch.NumLogits);
                    if (grid.Y == 0) continue;
                    if (launch.Args.Count > args.Length) throw new NotSupportedException($"Kernel {choice.Kernel} takes more than {args.Length} arguments.");
                    for (int i = 0; i < launch.Args.Count; i++) args[i] = Bind(launch.Args[i], layer, batch);
                    _device.Launch(_module, choice.Kernel, grid, choice.Block, choice.SharedMemoryBytes, args[..launch.Args.Count]);
                    _launchedKernels.Add(choice.Kernel);
                }
            }
        }
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
        CudaArgKind.KeyCache => KernelArg.Pointer(_keys.Offset(KvOffset(layer, 0, 0))),
        CudaArgKind.ValueCache => KernelArg.Pointer(_values.Offset(KvOffset(layer, 0, 0))),
        CudaArgKind.Logits => KernelArg.Pointer(_logits),
        CudaArgKind.SampledTokens => KernelArg.Pointer(_sampled),
        CudaArgKind.SamplingParams => KernelArg.Pointer(_samplingParams),
        CudaArgKind.NumTokens => KernelArg.Int(batch.NumTokens),
        CudaArgKind.NumSequences => KernelArg.Int(batch.NumSequences),
        CudaArgKind.NumLogits => KernelArg.Int(batch.NumLogits),
        CudaArgKind.Int => KernelArg.Int(arg.Value),
        CudaArgKind.Float => KernelArg.Float(arg.FloatValue),
        CudaArgKind.Null => KernelArg.Pointer(default),
        _ => throw new NotSupportedException($"CUDA argument kind {arg.Kind} is not known to this runtime."),
    };

    // Matrices go up in their stored type (each has its kernel variant); vectors are f32 already.
    private unsafe DevicePointer UploadWeight(ModelWeights weights, int index)
    {
        WeightMatrix matrix = weights.Matrix(index);
        if (matrix.Data == 0)
        {
            // A CPU runner's weights whose rows were replaced by float panels: the rows are rebuilt for the upload.
            var rows = new byte[checked(matrix.Rows * matrix.RowSizeInBytes)];
            Kernels.MatMul.FloatPanelLayout.Unpack(matrix, rows);
            return Upload(rows);
        }
        if (matrix.DType == WeightDType.F32) return Upload(MemoryMarshal.AsBytes(matrix.AsFloats()));
        return Upload(new ReadOnlySpan<byte>((void*)matrix.Data, checked(matrix.Rows * matrix.RowSizeInBytes)));
    }

    private DevicePointer Allocate(long sizeInBytes)
    {
        DevicePointer p = _device.Allocate(sizeInBytes);
        _allocations.Add(p);
        return p;
    }

    private DevicePointer Upload(ReadOnlySpan<byte> bytes)
    {
        DevicePointer p = Allocate(Math.Max(bytes.Length, 1));
        if (bytes.Length > 0) _device.CopyToDevice(p, bytes);
        return p;
    }

    private void Upload(DevicePointer destination, ReadOnlySpan<int> values)
    {
        if (values.Length > 0) _device.CopyToDevice(destination, MemoryMarshal.AsBytes(values));
    }

    private static int[] Buckets(int largest)
    {
        var buckets = new List<int>();
        for (int b = 1; b < largest; b *= 2) buckets.Add(b);
        buckets.Add(Math.Max(largest, 1));
        return buckets.ToArray();
    }

    private static string ModuleName(string modelName)
    {
        Span<char> chars = stackalloc char[Math.Min(modelName.Length, 64)];
        for (int i = 0; i < chars.Length; i++) chars[i] = char.IsAsciiLetterOrDigit(modelName[i]) ? char.ToLowerInvariant(modelName[i]) : '_';
        return chars.Length == 0 ? "model" : new string(chars);
    }

    private static ModelWeights BindOwned(CompiledModel model, IWeightSource source)
    {
        try
        {
            return WeightBinder.Bind(model.WeightSpecs, source, model.Config);
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    private void FreeAll()
    {
        foreach (var graph in _graphs.Values) graph.Dispose();
        _graphs.Clear();
        foreach (var p in _allocations) _device?.Free(p);
        _allocations.Clear();
        _module?.Dispose();
    }

    /// <summary>Frees the graphs, the device memory and the module (and the device, when the runner owns it).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        FreeAll();
        if (_ownsDevice) _device.Dispose();
    }
}
