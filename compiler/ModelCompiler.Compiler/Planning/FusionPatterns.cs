using System.Collections.Generic;
using ModelCompiler.Compiler.Graph;

namespace ModelCompiler.Compiler.Planning;

/// <summary>Which fusion a group of ops takes part in.</summary>
internal enum FusionKind
{
    /// <summary>RMSNorm → q, k, v projections → RoPE(q), RoPE(k) → KV write (attention reads q from the result).</summary>
    QkvRopeKvWrite,
    /// <summary>[RMSNorm →] gate, up projections as one → silu(gate) · up.</summary>
    SwiGlu,
    /// <summary>Projection whose result is added to a residual that dies there: accumulate in place.</summary>
    LinearResidual,
    /// <summary>RMSNorm read only by one projection: normalise on the projection's input.</summary>
    NormLinear,
}

/// <summary>A set of graph ops that become one kernel step, emitted at the position of the last of them.</summary>
internal sealed record FusionGroup(FusionKind Kind, int[] Members, int Anchor)
{
    /// <summary>Role → op index, for the emitter of this group (e.g. "norm", "q", "k", "v").</summary>
    public Dictionary<string, int> Roles { get; } = new();
}

/// <summary>
/// Finds fusion opportunities in a block graph by pattern. A pattern applies only when every value it
/// hides is read by nothing outside the group, so fusing never changes what the graph computes.
/// Patterns are tried from the largest to the smallest; an op joins at most one group.
/// </summary>
internal sealed class FusionPatterns
{
    private readonly BlockGraph _graph;
    private readonly Dictionary<string, int> _producer = new();
    private readonly Dictionary<string, List<int>> _consumers = new();
    private readonly int[] _groupOf;
    private readonly List<FusionGroup> _groups = new();

    private FusionPatterns(BlockGraph graph)
    {
        _graph = graph;
        _groupOf = new int[graph.Ops.Count];
        for (int i = 0; i < _groupOf.Length; i++) _groupOf[i] = -1;
        for (int i = 0; i < graph.Ops.Count; i++)
        {
            _producer[graph.Ops[i].Output] = i;
            foreach (var input in graph.Ops[i].Inputs)
            {
                if (!_consumers.TryGetValue(input, out var list)) _consumers[input] = list = new List<int>();
                list.Add(i);
            }
        }
    }

    /// <summary>The groups found in <paramref name="graph"/>, and for each op the group it joined (-1: none).</summary>
    public static (IReadOnlyList<FusionGroup> Groups, int[] GroupOf) Find(BlockGraph graph)
    {
        var p = new FusionPatterns(graph);
        for (int i = 0; i < graph.Ops.Count; i++) if (graph.Ops[i].Kind == OpKind.Attention) p.TryQkv(i);
        for (int i = 0; i < graph.Ops.Count; i++) if (graph.Ops[i].Kind == OpKind.Mul) p.TrySwiGlu(i);
        for (int i = 0; i < graph.Ops.Count; i++) if (graph.Ops[i].Kind == OpKind.Add) p.TryLinearResidual(i);
        for (int i = 0; i < graph.Ops.Count; i++) if (graph.Ops[i].Kind == OpKind.RmsNorm) p.TryNormLinear(i);
        return (p._groups, p._groupOf);
    }

    public IReadOnlyList<int> Consumers(string value) =>
        _consumers.TryGetValue(value, out var list) ? list : (IReadOnlyList<int>)System.Array.Empty<int>();

    /// <summary>The op defining <paramref name="value"/> if it is of <paramref name="kind"/>, free, and read only by <paramref name="consumer"/>.</summary>
    private int PrivateProducer(string value, OpKind kind, int consumer)
    {
        if (value == _graph.Output || !_producer.TryGetValue(value, out int op)) return -1;
        if (_graph.Ops[op].Kind != kind || _groupOf[op] >= 0) return -1;
        var consumers = Consumers(value);
        return consumers.Count == 1 && consumers[0] == consumer ? op : -1;
    }

    /// <summary>The free RMSNorm defining <paramref name="value"/> when exactly <paramref name="readers"/> read it.</summary>
    private int NormReadOnlyBy(string value, params int[] readers)
    {
        if (value == _graph.Output || !_producer.TryGetValue(value, out int op)) return -1;
        if (_graph.Ops[op].Kind != OpKind.RmsNorm || _groupOf[op] >= 0) return -1;
        var consumers = new HashSet<int>(Consumers(value));
        return consumers.SetEquals(readers) && consumers.Count == readers.Length ? op : -1;
    }

    private void Add(FusionGroup group)
    {
        int index = _groups.Count;
        _groups.Add(group);
        foreach (int m in group.Members) _groupOf[m] = index;
    }

    private static FusionGroup Group(FusionKind kind, params (string Role, int Op)[] members)
    {
        var ops = new int[members.Length];
        int anchor = -1;
        for (int i = 0; i < members.Length; i++)
        {
            ops[i] = members[i].Op;
            if (members[i].Op > anchor) anchor = members[i].Op;
        }
        var g = new FusionGroup(kind, ops, anchor);
        foreach (var (role, op) in members) g.Roles[role] = op;
        return g;
    }

    private void TryQkv(int attention)
    {
        var a = _graph.Ops[attention];
        int ropeQ = PrivateProducer(a.Inputs[0], OpKind.Rope, attention);
        int ropeK = PrivateProducer(a.Inputs[1], OpKind.Rope, attention);
        if (ropeQ < 0 || ropeK < 0) return;
        int q = PrivateProducer(_graph.Ops[ropeQ].Inputs[0], OpKind.Linear, ropeQ);
        int k = PrivateProducer(_graph.Ops[ropeK].Inputs[0], OpKind.Linear, ropeK);
        int v = PrivateProducer(a.Inputs[2], OpKind.Linear, attention);
        if (q < 0 || k < 0 || v < 0) return;
        string input = _graph.Ops[q].Inputs[0];
        if (_graph.Ops[k].Inputs[0] != input || _graph.Ops[v].Inputs[0] != input) return;
        // One concatenated bias needs all three or none.
        if (_graph.Ops[k].Bias != _graph.Ops[q].Bias || _graph.Ops[v].Bias != _graph.Ops[q].Bias) return;
        int norm = NormReadOnlyBy(input, q, k, v);
        if (norm < 0) return; // the fused kernel normalises its input; without a norm the ops stay separate
        Add(Group(FusionKind.QkvRopeKvWrite, ("norm", norm), ("q", q), ("k", k), ("v", v), ("ropeQ", ropeQ), ("ropeK", ropeK)));
    }

    private void TrySwiGlu(int mul)
    {
        var m = _graph.Ops[mul];
        for (int order = 0; order < 2; order++)
        {
            string activated = m.Inputs[order], upValue = m.Inputs[1 - order];
            if (activated == upValue) return;
            int silu = PrivateProducer(activated, OpKind.Silu, mul);
            if (silu < 0) continue;
            int gate = PrivateProducer(_graph.Ops[silu].Inputs[0], OpKind.Linear, silu);
            int up = PrivateProducer(upValue, OpKind.Linear, mul);
            if (gate < 0 || up < 0 || _graph.Ops[gate].Inputs[0] != _graph.Ops[up].Inputs[0]) continue;
            if (_graph.Ops[gate].Bias != _graph.Ops[up].Bias) continue;
            int norm = NormReadOnlyBy(_graph.Ops[gate].Inputs[0], gate, up);
            var group = norm >= 0
                ? Group(FusionKind.SwiGlu, ("norm", norm), ("gate", gate), ("up", up), ("silu", silu), ("mul", mul))
                : Group(FusionKind.SwiGlu, ("gate", gate), ("up", up), ("silu", silu), ("mul", mul));
            Add(group);
            return;
        }
    }

    private void TryLinearResidual(int add)
    {
        var op = _graph.Ops[add];
        if (_groupOf[add] >= 0) return;
        for (int order = 0; order < 2; order++)
        {
            string residual = op.Inputs[order], projected = op.Inputs[1 - order];
            if (residual == projected) return;
            int linear = PrivateProducer(projected, OpKind.Linear, add);
            if (linear < 0) continue;
            // The residual is overwritten in place, so nothing may read it after this add, and it must
            // not be what the projection itself reads.
            bool readLater = false;
            foreach (int c in Consumers(residual)) if (c > add) readLater = true;
            if (readLater || residual == _graph.Output || _graph.Ops[linear].Inputs[0] == residual) continue;
            Add(Group(FusionKind.LinearResidual, ("linear", linear), ("add", add)));
            return;
        }
    }

    private void TryNormLinear(int norm)
    {
        var consumers = Consumers(_graph.Ops[norm].Output);
        if (_groupOf[norm] >= 0 || consumers.Count != 1 || _graph.Ops[norm].Output == _graph.Output) return;
        int linear = consumers[0];
        if (_graph.Ops[linear].Kind != OpKind.Linear || _groupOf[linear] >= 0) return;
        Add(Group(FusionKind.NormLinear, ("norm", norm), ("linear", linear)));
    }
}
