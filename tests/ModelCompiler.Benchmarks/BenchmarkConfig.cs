using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace ModelCompiler.Benchmarks;

/// <summary>Short runs (the machine is shared and noisy: read the medians) plus the derived throughput columns.</summary>
public sealed class BenchmarkConfig : ManualConfig
{
    public BenchmarkConfig()
    {
        AddLogger(BenchmarkDotNet.Loggers.ConsoleLogger.Default);
        AddColumnProvider(DefaultColumnProviders.Instance);
        AddExporter(BenchmarkDotNet.Exporters.MarkdownExporter.GitHub);
        // In process: no build and launch per case (80 Linear cases), and the worker pool stays warm across cases.
        AddJob(Job.Default.WithWarmupCount(2).WithIterationCount(10).WithLaunchCount(1).WithToolchain(BenchmarkDotNet.Toolchains.InProcess.Emit.InProcessEmitToolchain.Instance));
        AddColumn(StatisticColumn.Median, new ThroughputColumn("GB/s", b => b.WeightBytes), new ThroughputColumn("GFLOP/s", b => b.Flops));
        WithOption(ConfigOptions.JoinSummary, true);
    }
}

/// <summary>What a benchmark moves or computes per invocation.</summary>
public interface IWorkSize
{
    double WeightBytes { get; }
    double Flops { get; }
}

/// <summary>A column of (work per call) / (median time per call), in units of 10⁹ per second.</summary>
public sealed class ThroughputColumn(string name, Func<IWorkSize, double> work) : IColumn
{
    public string Id => nameof(ThroughputColumn) + name;
    public string ColumnName => name;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => $"{name}: work per call / median time";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        if (report?.ResultStatistics is not { } stats) return "-";
        var instance = (IWorkSize)Activator.CreateInstance(benchmarkCase.Descriptor.Type)!;
        foreach (var parameter in benchmarkCase.Parameters.Items)
            benchmarkCase.Descriptor.Type.GetProperty(parameter.Name)?.SetValue(instance, parameter.Value);
        double amount = work(instance);
        return amount <= 0 ? "-" : (amount / stats.Median).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
    }
}
