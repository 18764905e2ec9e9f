using System.Globalization;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Planning;
using Xunit;
using PlanBuffer = ModelCompiler.Compiler.Planning.Buffer;
using static ModelCompiler.Tests.Compiler.Descriptions;

namespace ModelCompiler.Tests.Compiler;

/// <summary>The passes after parsing: fusion, memory planning, template expansion, determinism.</summary>
public sealed class PlanTests
{
    private static KernelPlan PlanOf(string text)
    {
        var parsed = DescriptionParser.Parse(text, "test.model.json");
        Assert.True(parsed.Description is not null, string.Join("\n", parsed.Diagnostics));
        return Planner.Plan(parsed.Description!);
    }

    private static string[] Kinds(IEnumerable<KernelStep> steps) => steps.Select(s => s.KindName).ToArray();

    /// <summary>A 'llama' description with TinyExplicit's sizes (its MLP is 80 wide).</summary>
    private static string TinyAsLlama()
    {
        string text = Edit(TinyExplicit, "\"architecture\": \"custom\"", "\"architecture\": \"llama\"");
        Assert.Contains("\"hiddenDim\": 80,", text);
        int block = OffsetOf(text, ",\n  \"block\":");
        return text.Substring(0, block) + "\n}\n";
    }

    // ------------------------------------------------------------------ fusion

    [Fact]
    public void Stories260K_fuses_into_the_expected_kernels()
    {
        var plan = PlanOf(Stories260K);
        Assert.Equal(new[] { "embedding" }, Kinds(plan.Prologue));
        Assert.Equal(new[] { "rmsnorm_qkv_rope_kvwrite", "paged_attention", "linear_residual", "rmsnorm_linear", "swiglu", "linear_residual" }, Kinds(plan.Block));
        Assert.Equal(new[] { "final_norm_lm_head" }, Kinds(plan.Epilogue));

        var qkv = Assert.IsType<QkvStep>(plan.Block[0]);
        Assert.Equal(new[] { 64 + 2 * 32, 64 }, qkv.Wqkv.Shape); // q (8 heads × 8) | k, v (4 heads × 8)
        Assert.Equal(new[] { "layers.{layer}.attention.wq.weight", "layers.{layer}.attention.wk.weight", "layers.{layer}.attention.wv.weight" }, qkv.Wqkv.Sources);

        var attention = Assert.IsType<AttentionStep>(plan.Block[1]);
        Assert.Same(qkv.Qkv, attention.Queries.Buffer);
        Assert.Equal((0, 64), (attention.Queries.ColumnOffset, attention.Queries.Width));
        Assert.Null(attention.Keys); // already written by the QKV kernel's epilogue

        var gateUp = Assert.IsType<LinearStep>(plan.Block[3]);
        Assert.NotNull(gateUp.Norm);
        Assert.Equal(new[] { "layers.{layer}.feed_forward.w1.weight", "layers.{layer}.feed_forward.w3.weight" }, gateUp.Weight.Sources);
        Assert.Equal((64, 2 * 172), (gateUp.InDim, gateUp.OutDim));

        var residual = plan.Buffers[plan.ResidualBufferIndex];
        var attnOut = Assert.IsType<LinearStep>(plan.Block[2]);
        var ffnOut = Assert.IsType<LinearStep>(plan.Block[5]);
        Assert.True(attnOut.AddToOutput && ffnOut.AddToOutput);
        Assert.Same(residual, attnOut.Output);
        Assert.Same(residual, ffnOut.Output);
        Assert.Equal((172, 64), (ffnOut.InDim, ffnOut.OutDim));

        // 1 embedding + 5 layers × 6 weights + final norm + head, the head tied to the embedding.
        Assert.Equal(1 + 5 * 6 + 2, plan.TotalWeights);
        Assert.Equal(new[] { "tok_embeddings.weight" }, plan.GlobalWeightsAfter[1].Sources);
    }

    [Fact]
    public void ParallelBlock_falls_back_to_unfused_kernels()
    {
        var plan = PlanOf(ParallelBlock);
        // The shared norm blocks the QKV and SwiGLU fusions and there is no gate; only the MLP's down
        // projection accumulates into the attention branch (that sum is read once, by the residual add).
        Assert.Equal(new[]
        {
            "rmsnorm", "linear", "linear", "linear", "rope", "rope", "kvwrite_paged_attention", "linear",
            "linear", "silu", "linear_residual", "add", "copy",
        }, Kinds(plan.Block));
        Assert.DoesNotContain(plan.Block, s => s is QkvStep or SwiGluStep);
        var copy = Assert.IsType<CopyStep>(plan.Block[^1]);
        Assert.Same(plan.Buffers[plan.ResidualBufferIndex], copy.Destination);
    }

    [Fact]
    public void Every_fused_kernel_names_the_ops_it_replaces()
    {
        var plan = PlanOf(Stories260K);
        Assert.Equal(new[] { "rmsnorm 'attn_in'", "linear 'q'", "linear 'k'", "linear 'v'", "rope 'q_rot'", "rope 'k_rot'", "KV-cache write" }, plan.Block[0].Fuses);
        Assert.Equal(new[] { "linear 'attn_out'", "add 'x_attn'" }, plan.Block[2].Fuses);
        Assert.Equal(new[] { "rmsnorm 'ffn_in'", "linear 'gate'", "linear 'up'" }, plan.Block[3].Fuses);
        Assert.Equal(new[] { "silu 'gate_act'", "mul 'ffn_hidden'" }, plan.Block[4].Fuses);
        // Every graph op of the template is accounted for exactly once in the block's kernels.
        var fused = plan.Block.SelectMany(s => s.Fuses).Where(f => f != "KV-cache write").ToList();
        Assert.Equal(16, fused.Count);
        Assert.Equal(fused.Count, fused.Distinct().Count());
    }

    // ------------------------------------------------------------------ last layer's rows

    [Fact]
    public void The_last_layer_compacts_the_residual_stream_after_its_attention()
    {
        var plan = PlanOf(Stories260K);
        var rows = LastLayerRows.Of(plan);
        Assert.NotNull(rows);
        Assert.IsType<AttentionStep>(plan.Block[rows.AttentionIndex]);
        Assert.Equal(new[] { "x" }, rows.Compacted.Select(b => b.Name));
        Assert.Equal(new[] { "attention.wo", "feed_forward.w1|feed_forward.w3", "feed_forward.w2" }, rows.RowsOnlyWeights.Select(w => w.Name));
    }

    [Fact]
    public void A_parallel_block_also_compacts_the_normalized_input_its_mlp_reads_after_the_attention()
    {
        var rows = LastLayerRows.Of(PlanOf(ParallelBlock));
        Assert.NotNull(rows);
        Assert.Equal(new[] { "x", "h" }, rows.Compacted.Select(b => b.Name));
    }

    [Fact]
    public void No_row_compaction_when_a_step_after_the_attention_reads_positions()
    {
        var plan = PlanOf(Stories260K);
        var attention = plan.Block.OfType<AttentionStep>().Single();
        var output = attention.Output;
        Assert.Null(LastLayerRows.Of(plan with { Block = [.. plan.Block, new RopeStep(output, output.Width)] }));
        Assert.Null(LastLayerRows.Of(plan with { Block = [.. plan.Block, attention] }));
        Assert.Null(LastLayerRows.Of(plan with { Block = plan.Block.Where(s => s is not AttentionStep).ToList() }));
    }

    // ------------------------------------------------------------------ memory

    public static TheoryData<string> Models => new() { "Stories260K", "TinyExplicit", "ParallelBlock", "TinyAsLlama" };

    private static string TextOf(string model) => model switch
    {
        "Stories260K" => Stories260K,
        "TinyExplicit" => TinyExplicit,
        "ParallelBlock" => ParallelBlock,
        _ => TinyAsLlama(),
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void Buffers_live_at_the_same_step_never_share_memory(string model)
    {
        var plan = PlanOf(TextOf(model));
        int tokens = plan.Model.Runtime.MaxBatchTokens;
        var residual = plan.Buffers[plan.ResidualBufferIndex];

        // Liveness recomputed here: the steps in execution order (block once: its buffers are rewritten
        // every layer), each buffer live from its first to its last touch, the residual throughout.
        var steps = plan.Prologue.Concat(plan.Block).Concat(plan.Epilogue).ToList();
        var live = new Dictionary<PlanBuffer, (int First, int Last)>(ReferenceEqualityComparer.Instance);
        for (int t = 0; t < steps.Count; t++)
            foreach (var b in MemoryPlanner.Touched(steps[t]))
                live[b] = live.TryGetValue(b, out var l) ? (l.First, t) : (t, t);
        live[residual] = (0, steps.Count - 1);

        Assert.Equal(plan.Buffers.Count, live.Count); // no buffer is declared and never used
        foreach (var b in plan.Buffers)
        {
            Assert.True(b.OffsetInFloats >= 0 && b.OffsetInFloats % 16 == 0, $"{b} at {b.OffsetInFloats}");
            Assert.True(b.OffsetInFloats + tokens * b.Width <= plan.ArenaSizeInFloats, $"{b} runs past the arena");
        }
        foreach (var a in plan.Buffers)
            foreach (var b in plan.Buffers)
            {
                if (ReferenceEquals(a, b)) continue;
                bool together = live[a].First <= live[b].Last && live[b].First <= live[a].Last;
                bool overlap = a.OffsetInFloats < b.OffsetInFloats + tokens * b.Width && b.OffsetInFloats < a.OffsetInFloats + tokens * a.Width;
                Assert.False(together && overlap, $"{a} and {b} are live together and overlap in the arena");
            }

        // Every step's buffers are pairwise disjoint (a kernel never reads what it is overwriting, except in place).
        foreach (var step in steps)
        {
            var touched = MemoryPlanner.Touched(step).Distinct(ReferenceEqualityComparer.Instance).Cast<PlanBuffer>().ToList();
            for (int i = 0; i < touched.Count; i++)
                for (int j = i + 1; j < touched.Count; j++)
                    Assert.False(touched[i].OffsetInFloats < touched[j].OffsetInFloats + tokens * touched[j].Width &&
                                 touched[j].OffsetInFloats < touched[i].OffsetInFloats + tokens * touched[i].Width,
                        $"{step.KindName}: {touched[i]} overlaps {touched[j]}");
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void The_arena_reuses_memory(string model)
    {
        var plan = PlanOf(TextOf(model));
        int tokens = plan.Model.Runtime.MaxBatchTokens;
        long sum = plan.Buffers.Sum(b => (long)tokens * b.Width);
        Assert.True(plan.ArenaSizeInFloats < sum, $"arena {plan.ArenaSizeInFloats} floats, buffers {sum}");
        Assert.True(plan.ArenaSizeInFloats >= plan.Buffers.Max(b => tokens * b.Width));
    }

    [Fact]
    public void Stories260K_arena_size_is_pinned()
    {
        // x [512,64] | qkv [512,128], later gate_up [512,344] | ... worked out by hand from the liveness
        // in the generated comment: 32768 (x) + 176128 (gate_up) + 88064 (ffn_hidden) = 296960.
        var plan = PlanOf(Stories260K);
        Assert.Equal(32768 + 176128 + 88064, plan.ArenaSizeInFloats);
    }

    // ------------------------------------------------------------------ template = explicit graph

    [Fact]
    public void Llama_template_and_the_hand_written_block_give_the_same_engine()
    {
        string llama = Compile(TinyAsLlama()).Source ?? throw new Xunit.Sdk.XunitException("llama description failed");
        var custom = Compile(TinyExplicit);
        Assert.Empty(custom.Diagnostics);
        string[] a = llama.Split('\n'), b = custom.Source!.Split('\n');
        Assert.Contains("architecture 'llama'", a[1]);
        Assert.Contains("architecture 'custom'", b[1]);
        // Everything after the header: constants, config, weight table, Forward.
        Assert.Equal(a.Skip(4), b.Skip(4));
    }

    [Fact]
    public void Llama_template_and_the_hand_written_block_give_the_same_plan()
    {
        var a = PlanOf(TinyAsLlama());
        var b = PlanOf(TinyExplicit);
        Assert.Equal(Kinds(a.Block), Kinds(b.Block));
        Assert.Equal(a.Block.Select(s => s.Signature()), b.Block.Select(s => s.Signature()));
        Assert.Equal(a.Block.Select(s => s.KernelName()), b.Block.Select(s => s.KernelName()));
        Assert.Equal(a.LayerWeights.Select(w => w.Name + w.ShapeText), b.LayerWeights.Select(w => w.Name + w.ShapeText));
        Assert.Equal(a.ArenaSizeInFloats, b.ArenaSizeInFloats);
    }

    // ------------------------------------------------------------------ determinism

    [Theory]
    [MemberData(nameof(Models))]
    public void Output_is_deterministic(string model)
    {
        string text = TextOf(model);
        string first = Compile(text).Source!;
        Assert.Equal(first, Compile(text).Source);
        Assert.Equal(first, Compile(text.Replace("\n", "\r\n")).Source); // line endings of the description don't leak
        Assert.DoesNotContain("\r", first);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Output_does_not_depend_on_the_current_culture(string model)
    {
        string text = TextOf(model);
        string invariant = Compile(text).Source!;
        var saved = (CultureInfo.CurrentCulture, CultureInfo.CurrentUICulture);
        try
        {
            var culture = CommaCulture();
            CultureInfo.CurrentCulture = culture;
            CultureInfo.CurrentUICulture = culture;
            Assert.Equal("1,5", 1.5.ToString(CultureInfo.CurrentCulture)); // the culture really is different
            Assert.Equal(invariant, Compile(text).Source);
            // Diagnostics too (they carry numbers).
            var bad = Compile(Edit(Stories260K, "\"normEps\": 1e-5", "\"normEps\": 1.5"));
            Assert.Contains("'hyperparameters.normEps' is 1.5", bad.Diagnostics.Single().Message);
        }
        finally
        {
            (CultureInfo.CurrentCulture, CultureInfo.CurrentUICulture) = saved;
        }
    }

    /// <summary>de-DE when the runtime has culture data; otherwise (invariant globalization) a culture built to look like it.</summary>
    private static CultureInfo CommaCulture()
    {
        try { return CultureInfo.GetCultureInfo("de-DE"); }
        catch (CultureNotFoundException) { }
        var c = (CultureInfo)CultureInfo.InvariantCulture.Clone();
        c.NumberFormat.NumberDecimalSeparator = ",";
        c.NumberFormat.NumberGroupSeparator = ".";
        c.NumberFormat.NegativeSign = "\u2212";
        c.NumberFormat.PositiveInfinitySymbol = "∞";
        return c;
    }
}
