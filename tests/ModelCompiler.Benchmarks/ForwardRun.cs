using System.Diagnostics;
using System.Reflection;
using ModelCompiler.Runtime;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Benchmarks;

/// <summary>The Llama110M engine compiled from models/Llama110M/llama110m.model.json, as the model project compiles it.</summary>
[ModelEngine("llama110m.model.json")]
internal sealed partial class Llama110MBenchEngine;

/// <summary>
/// <c>quick forward [dtype] [sequences] [context] [tokens] [passes] [prompt]</c>: whole forward passes of the generated Llama110M
/// engine on random weights (two threads), the same batch pass after pass: <c>sequences</c> sequences of <c>tokens</c>
/// new tokens each, ending at position <c>context - 1</c> (<c>f32 16 192 1</c>: a serving step of 16 decodes; <c>f32 1 128
/// 128</c>: a 128-token prefill; <c>f32 1 256 1</c>: one decode step), the sequences' KV blocks dealt round-robin as a serving
/// engine's are; with <c>prompt</c> above 0, one more sequence brings a whole prompt of that many tokens (<c>f32 15 192 1 40
/// 128</c>: a serving step that admits a request beside 15 decodes). Prints the median, p10 and fastest pass.
/// <para>With <c>MC_AB=Namespace.Type.field</c> (a static int or bool of the runtime, e.g. a temporary switch) the field is
/// set (to true, or to <c>MC_AB_VALUE</c>, default 1) on every odd pass and cleared on every even one, and the median of the per-pair ratios (set ÷ cleared) is
/// printed as well: the two variants then share every disturbance of a noisy machine.</para>
/// </summary>
internal static class ForwardRun
{
    public static void Run(string[] args)
    {
        string dtypeName = args.Length > 0 ? args[0] : "f32";
        int numSequences = args.Length > 1 ? int.Parse(args[1]) : 16;
        int context = args.Length > 2 ? int.Parse(args[2]) : 192;
        int tokens = args.Length > 3 ? int.Parse(args[3]) : 1;
        int passes = args.Length > 4 ? int.Parse(args[4]) : 60;
        int promptTokens = args.Length > 5 ? int.Parse(args[5]) : 0;
        if (!WeightDTypes.TryParse(dtypeName, out var dtype)) throw new ArgumentException($"unknown dtype {dtypeName}");
        ModelCompiler.Runtime.Threading.WorkerPool.SetThreadCount(2);

        var engine = new Llama110MBenchEngine();
        IWeightSource source = InMemoryWeightSource.CreateRandomLlama(engine.Config, 1);
        if (dtype != WeightDType.F32) source = new ConvertedWeightSource(source, dtype);
        using var runner = new ModelRunner(engine, source);
        var batch = runner.CreateBatch();
        var random = new Random(2);
        // Blocks dealt one at a time round-robin, as sequences that grow side by side take them in a serving engine, so
        // that no sequence's blocks are contiguous.
        int blockSize = runner.Blocks.BlockSize;
        for (int s = 0; s < numSequences; s++) runner.Blocks.Allocate(s, Math.Min(context, blockSize));
        for (int filled = blockSize; filled < context; filled += blockSize)
            for (int s = 0; s < numSequences; s++) runner.Blocks.Append(s, Math.Min(context, filled + blockSize));
        for (int s = 0; s < numSequences; s++)
        {
            var ids = Enumerable.Range(0, tokens).Select(_ => random.Next(3, engine.Config.VocabSize)).ToArray();
            batch.AddSequence(ids, context - tokens, runner.Blocks.BlockTable(s));
        }
        if (promptTokens > 0)
        {
            runner.Blocks.Allocate(numSequences, promptTokens);
            var ids = Enumerable.Range(0, promptTokens).Select(_ => random.Next(3, engine.Config.VocabSize)).ToArray();
            batch.AddSequence(ids, 0, runner.Blocks.BlockTable(numSequences));
        }
        // Every position before the batch's gets keys and values once (what earlier steps would have cached).
        if (context > tokens)
        {
            var history = runner.CreateBatch();
            for (int s = 0; s < numSequences; s++)
            {
                history.Clear();
                var ids = Enumerable.Range(0, context - tokens).Select(_ => random.Next(3, engine.Config.VocabSize)).ToArray();
                for (int start = 0; start < ids.Length; start += engine.Config.MaxBatchTokens)
                {
                    history.Clear();
                    int count = Math.Min(engine.Config.MaxBatchTokens, ids.Length - start);
                    history.AddSequence(ids.AsSpan(start, count), start, runner.Blocks.BlockTable(s), ModelCompiler.Runtime.KvCache.LogitsRows.None);
                    runner.Forward(history);
                }
            }
        }

        FieldInfo? field = null;
        if (Environment.GetEnvironmentVariable("MC_AB") is { Length: > 0 } name)
        {
            int dot = name.LastIndexOf('.');
            var type = typeof(ModelRunner).Assembly.GetType(name[..dot]) ?? throw new ArgumentException($"MC_AB: no type {name[..dot]}");
            field = type.GetField(name[(dot + 1)..], BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic) ?? throw new ArgumentException($"MC_AB: no static field {name}");
        }
        int setValue = int.TryParse(Environment.GetEnvironmentVariable("MC_AB_VALUE"), out int v) ? v : 1;
        void Switch(bool on)
        {
            if (field is null) return;
            field.SetValue(null, field.FieldType == typeof(bool) ? on : (object)(on ? setValue : 0));
        }

        var cleared = new List<double>();
        var set = new List<double>();
        for (int p = 0; p < passes + 4; p++)
        {
            bool on = field is not null && p % 2 == 1;
            Switch(on);
            long start = Stopwatch.GetTimestamp();
            runner.Forward(batch);
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (p >= 4) (on ? set : cleared).Add(seconds);
        }
        Switch(false);
        Report(field is null ? "" : "cleared ", cleared);
        if (field is null) return;
        Report("set     ", set);
        var ratios = set.Zip(cleared, (a, b) => a / b).Order().ToList();
        Console.WriteLine($"{field.DeclaringType!.Name}.{field.Name}: set / cleared per pair, median {ratios[ratios.Count / 2]:F3} (p25 {ratios[ratios.Count / 4]:F3}, p75 {ratios[3 * ratios.Count / 4]:F3}, {ratios.Count} pairs)");

        void Report(string label, List<double> times)
        {
            var sorted = times.Order().ToList();
            Console.WriteLine($"{label}{dtypeName} forward, {numSequences} sequence(s) x {tokens} token(s) ending at position {context - 1}" +
                (promptTokens > 0 ? $" and a prompt of {promptTokens}: " : ": ") +
                $"median {sorted[sorted.Count / 2] * 1e3:F3} ms  p10 {sorted[sorted.Count / 10] * 1e3:F3} ms  fastest {sorted[0] * 1e3:F3} ms");
        }
    }
}
