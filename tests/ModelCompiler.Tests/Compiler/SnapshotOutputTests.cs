using ModelCompiler.Compiler;
using ModelCompiler.Compiler.Emit;
using ModelCompiler.Tests.Snapshots;
using Xunit;

namespace ModelCompiler.Tests.Compiler;

/// <summary>Baselines of the generated engine source (review the .verified.txt files when they change).</summary>
public sealed class SnapshotOutputTests
{
    private static string CompileFile(string path, string? ns, string className)
    {
        string fileName = Path.GetFileName(path);
        var result = ModelCompilerDriver.Compile(Descriptions.Read(path), fileName, new EngineClassInfo(ns, className, fileName));
        Assert.Empty(result.Diagnostics);
        Assert.NotNull(result.Source);
        return result.Source!;
    }

    [Fact]
    public void Stories260K_engine() =>
        Snapshot.Match(CompileFile(Descriptions.Stories260KPath, "Stories260K", "Stories260KEngine"), "Stories260KEngine");

    [Fact]
    public void Stories260K_engine_cuda_part()
    {
        var result = ModelCompilerDriver.Compile(Descriptions.Read(Descriptions.Stories260KPath), "stories260K.model.json",
            new EngineClassInfo("Stories260K", "Stories260KEngine", "stories260K.model.json"));
        Assert.NotNull(result.CudaEngineSource);
        Snapshot.Match(result.CudaEngineSource!, "Stories260KEngine.Cuda");
    }

    [Fact]
    public void TinyExplicit_engine() =>
        Snapshot.Match(CompileFile(Descriptions.TinyExplicitPath, "ModelCompiler.Tests.Engines", "TinyExplicitEngine"), "TinyExplicitEngine");

    [Fact]
    public void Kv_cache_comments_name_the_cpu_layout_and_the_element_type()
    {
        // The CPU pool is transposed per block ([kvDim, blockSize]) and f16 when the description says so;
        // the CUDA part keeps its own [blocks, blockSize, kvDim] f32 pool and comment.
        string path = Path.Combine(Descriptions.RepoRoot, "tests", "ModelCompiler.Tests", "TestModels", "stories260K_f16kv.model.json");
        string source = CompileFile(path, "T", "Stories260KF16KvEngine");
        Assert.Contains("qkv [T, 128] f32, K/V cache [blocks, 32, 16] f16 (per block [kvDim, blockSize])", source);
        Assert.Contains("q qkv[:, 0:64] f32, K/V cache [blocks, 32, 16] f16 (per block [kvDim, blockSize]) -> attn [T, 64] f32", source);
        Assert.DoesNotContain("blockSize, 32]", source);
    }

    [Fact]
    public void ParallelBlock_engine() =>
        Snapshot.Match(CompileFile(Descriptions.ParallelBlockPath, null, "ParallelBlockEngine"), "ParallelBlockEngine");
}
