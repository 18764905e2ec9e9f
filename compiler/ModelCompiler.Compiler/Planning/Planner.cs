using System.Collections.Generic;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Graph;

namespace ModelCompiler.Compiler.Planning;

/// <summary>
/// Lowers a validated description to a <see cref="KernelPlan"/>: the embedding, the block's ops turned
/// into kernels (fused where <see cref="FusionPatterns"/> found a pattern), the final norm and LM head,
/// the weight binding table, and the arena layout from <see cref="MemoryPlanner"/>.
/// </summary>
internal sealed class Planner
{
    private readonly ModelDescription _model;
    private readonly HyperParameters _h;
    private readonly BlockGraph _graph;
    private readonly Dictionary<string, Buffer> _bufferOf = new();
    private readonly Dictionary<string, View> _queriesInQkv = new();
    private readonly List<WeightRef> _layerWeights = new();
    private readonly List<KernelStep> _blockSteps = new();
    private readonly List<Buffer> _buffers = new();

    private Planner(ModelDescription model)
    {
        _model = model;
        _h = model.Hyper;
        _graph = model.Block;
    }

    public static KernelPlan Plan(ModelDescription model) => new Planner(model).Run();

    private KernelPlan Run()
    {
        var residual = NewBuffer("x", _h.Dim);
        var embedding = new WeightRef("tok_embeddings", new[] { _h.VocabSize, _h.Dim }, new[] { "tok_embeddings.weight" }, PerLayer: false) { Slot = 0, MatrixDType = _model.Weights.DType };
        var prologue = new List<KernelStep>
        {
            new EmbeddingStep(residual, embedding, _h.Dim) { Fuses = new[] { "token embedding lookup" } },
        };

        _bufferOf[_graph.Input] = residual;
        var (groups, groupOf) = FusionPatterns.Find(_graph);
        for (int i = 0; i < _graph.Ops.Count; i++)
        {
            if (groupOf[i] < 0) EmitSingle(_graph.Ops[i]);
            else if (groups[groupOf[i]].Anchor == i) EmitGroup(groups[groupOf[i]]);
        }
        if (!ReferenceEquals(_bufferOf[_graph.Output], residual))
            _blockSteps.Add(new CopyStep(_bufferOf[_graph.Output], residual, _h.Dim) { Fuses = new[] { "hand the block output on as the next block's input" } });

        var finalNorm = new WeightRef("norm", new[] { _h.Dim }, new[] { "norm.weight" }, PerLayer: false);
        var head = new WeightRef("output", new[] { _h.VocabSize, _h.Dim },
            new[] { _h.TiedEmbedding ? "tok_embeddings.weight" : "output.weight" }, PerLayer: false) { MatrixDType = _model.Weights.DType };
        var gathered = NewBuffer("last_hidden", _h.Dim);
        var normalized = NewBuffer("last_hidden_normalized", _h.Dim);
        var epilogue = new List<KernelStep>
        {
            new LogitsStep(residual, gathered, normalized, finalNorm, head, _h.Dim, _h.VocabSize)
            {
                Fuses = new[] { "gather the rows that need logits", "rmsnorm (final)", "linear (LM head" + (_h.TiedEmbedding ? ", tied to the embedding)" : ")") },
            },
        };

        var layout = MemoryPlanner.Place(_buffers, prologue, _blockSteps, epilogue, residual, _model.Runtime.MaxBatchTokens);
        return new KernelPlan(_model, prologue, _blockSteps, epilogue, new[] { embedding }, _layerWeights,
            new[] { finalNorm, head }, _buffers, layout, _buffers.IndexOf(residual));
    }

    private Buffer NewBuffer(string name, int width)
    {
        var b = new Buffer(name, width);
        _buffers.Add(b);
        return b;
    }

    private Buffer Define(string value) => _bufferOf[value] = NewBuffer(value, _graph.Widths[value]);

    /// <summary>A block weight made of <paramref name="localNames"/> (concatenated along rows when several).</summary>
    private WeightRef LayerWeight(int[] shape, params string[] localNames)
    {
        string name = string.Join("|", localNames);
        foreach (var w in _layerWeights) if (w.Name == name) return w;
        var sources = new string[localNames.Length];
        for (int i = 0; i < sources.Length; i++) sources[i] = "layers.{layer}." + localNames[i] + ".weight";
        var weight = new WeightRef(name, shape, sources, PerLayer: true) { Slot = _layerWeights.Count, MatrixDType = _model.Weights.DType };
        _layerWeights.Add(weight);
        return weight;
    }

    private static string Describe(GraphOp op) => op.Describe();

    private void EmitSingle(GraphOp op)
    {
        var fuses = new[] { Describe(op) };
        int width = _graph.Widths[op.Output];
        switch (op.Kind)
        {
            case OpKind.RmsNorm:
            {
                var input = _bufferOf[op.Inputs[0]];
                _blockSteps.Add(new RmsNormStep(input, LayerWeight(new[] { width }, op.Weight!), Define(op.Output), width) { Fuses = fuses });
                break;
            }
            case OpKind.Linear:
            {
                int inDim = _graph.Widths[op.Inputs[0]];
                var input = _bufferOf[op.Inputs[0]];
                _blockSteps.Add(new LinearStep(input, LayerWeight(new[] { width, inDim }, op.Weight!), Define(op.Output), inDim, width, null, null, false) { Fuses = fuses });
                break;
            }
            case OpKind.Rope:
            {
                var input = _bufferOf[op.Inputs[0]];
                bool inPlace = op.Inputs[0] != _graph.Input && Consumers(op.Inputs[0]) == 1;
                Buffer output;
                if (inPlace) output = _bufferOf[op.Output] = input;
                else
                {
                    output = Define(op.Output);
                    _blockSteps.Add(new CopyStep(input, output, width) { Fuses = new[] { $"copy '{op.Inputs[0]}' (still read after {Describe(op)})" } });
                }
                _blockSteps.Add(new RopeStep(output, width) { Fuses = fuses });
                break;
            }
            case OpKind.Attention:
            {
                var output = Define(op.Output);
                if (_queriesInQkv.TryGetValue(op.Inputs[0], out var queries))
                {
                    _blockSteps.Add(new AttentionStep(queries, null, null, output, width) { Fuses = fuses });
                }
                else
                {
                    var q = _bufferOf[op.Inputs[0]];
                    var k = _bufferOf[op.Inputs[1]];
                    var v = _bufferOf[op.Inputs[2]];
                    _blockSteps.Add(new AttentionStep(new View(q, 0, q.Width), new View(k, 0, k.Width), new View(v, 0, v.Width), output, width)
                    { Fuses = new[] { "KV-cache write", Describe(op) } });
                }
                break;
            }
            default:
            {
                var a = _bufferOf[op.Inputs[0]];
                Buffer? b = op.Inputs.Length > 1 ? _bufferOf[op.Inputs[1]] : null;
                _blockSteps.Add(new ElementwiseStep(op.Kind, a, b, Define(op.Output), width) { Fuses = fuses });
                break;
            }
        }
    }

    private int Consumers(string value)
    {
        int n = 0;
        foreach (var op in _graph.Ops) foreach (var input in op.Inputs) if (input == value) n++;
        return n;
    }

    private void EmitGroup(FusionGroup group)
    {
        GraphOp Op(string role) => _graph.Ops[group.Roles[role]];
        switch (group.Kind)
        {
            case FusionKind.QkvRopeKvWrite:
            {
                var norm = Op("norm");
                int qDim = _graph.Widths[Op("q").Output], kvDim = _graph.Widths[Op("k").Output];
                var qkv = NewBuffer("qkv", qDim + 2 * kvDim);
                var normalized = NewBuffer("qkv_normalized", _h.Dim);
                var normWeight = LayerWeight(new[] { _h.Dim }, norm.Weight!);
                var wqkv = LayerWeight(new[] { qDim + 2 * kvDim, _h.Dim }, Op("q").Weight!, Op("k").Weight!, Op("v").Weight!);
                _blockSteps.Add(new QkvStep(_bufferOf[norm.Inputs[0]], normWeight, wqkv, qkv, normalized, _h.Dim, qDim, kvDim) { Fuses = Ordered(group, "KV-cache write") });
                _queriesInQkv[Op("ropeQ").Output] = new View(qkv, 0, qDim);
                break;
            }
            case FusionKind.SwiGlu:
            {
                var gate = Op("gate");
                int hidden = _graph.Widths[gate.Output];
                bool hasNorm = group.Roles.ContainsKey("norm");
                string inputValue = hasNorm ? Op("norm").Inputs[0] : gate.Inputs[0];
                int inDim = _graph.Widths[inputValue];
                var gateUp = NewBuffer("gate_up", 2 * hidden);
                WeightRef? normWeight = hasNorm ? LayerWeight(new[] { inDim }, Op("norm").Weight!) : null;
                var weight = LayerWeight(new[] { 2 * hidden, inDim }, gate.Weight!, Op("up").Weight!);
                Buffer? normalized = hasNorm ? NewBuffer("gate_up_normalized", inDim) : null;
                var projectionRoles = hasNorm ? new[] { "norm", "gate", "up" } : new[] { "gate", "up" };
                _blockSteps.Add(new LinearStep(_bufferOf[inputValue], weight, gateUp, inDim, 2 * hidden, normWeight, normalized, false)
                { Fuses = DescribeRoles(group, projectionRoles) });
                _blockSteps.Add(new SwiGluStep(gateUp, Define(Op("mul").Output), hidden) { Fuses = DescribeRoles(group, "silu", "mul") });
                break;
            }
            case FusionKind.LinearResidual:
            {
                var linear = Op("linear");
                var add = Op("add");
                string residual = add.Inputs[0] == linear.Output ? add.Inputs[1] : add.Inputs[0];
                int inDim = _graph.Widths[linear.Inputs[0]], outDim = _graph.Widths[linear.Output];
                var target = _bufferOf[residual];
                _bufferOf[add.Output] = target;
                _blockSteps.Add(new LinearStep(_bufferOf[linear.Inputs[0]], LayerWeight(new[] { outDim, inDim }, linear.Weight!), target, inDim, outDim, null, null, true)
                { Fuses = Ordered(group) });
                break;
            }
            case FusionKind.NormLinear:
            {
                var norm = Op("norm");
                var linear = Op("linear");
                int inDim = _graph.Widths[norm.Output], outDim = _graph.Widths[linear.Output];
                var normalized = NewBuffer(linear.Output + "_normalized", inDim);
                _blockSteps.Add(new LinearStep(_bufferOf[norm.Inputs[0]], LayerWeight(new[] { outDim, inDim }, linear.Weight!), Define(linear.Output),
                    inDim, outDim, LayerWeight(new[] { inDim }, norm.Weight!), normalized, false) { Fuses = Ordered(group) });
                break;
            }
        }
    }

    /// <summary>The group's op descriptions in graph order, plus any extra work the kernel does.</summary>
    private string[] Ordered(FusionGroup group, params string[] extra)
    {
        var members = (int[])group.Members.Clone();
        System.Array.Sort(members);
        var list = new List<string>();
        foreach (int m in members) list.Add(Describe(_graph.Ops[m]));
        list.AddRange(extra);
        return list.ToArray();
    }

    private string[] DescribeRoles(FusionGroup group, params string[] roles)
    {
        var result = new string[roles.Length];
        for (int i = 0; i < roles.Length; i++) result[i] = Describe(_graph.Ops[group.Roles[roles[i]]]);
        return result;
    }
}
