using System;
using System.Threading.Tasks;

namespace ModelCompiler.Runtime.Server;

/// <summary>
/// A backend that is still being built: the server can listen (and <c>/health</c> answer 503) while
/// weights load in the background. Name and context length are known up front from the engine's
/// description; everything else forwards to the loaded backend once <paramref name="loading"/> completes.
/// Disposing disposes the loaded backend when it is disposable.
/// </summary>
public sealed class DeferredBackend(string modelName, int maxContextTokens, Task<IGenerationBackend> loading) : IGenerationBackend, IDisposable
{
    private static readonly EngineMetrics s_empty = new(0, 0, 0, 0, 0, 0, 0, 0, 0);

    /// <summary>The loading task (faulted when the weights cannot be loaded).</summary>
    public Task<IGenerationBackend> Loading => loading;

    /// <inheritdoc />
    public string ModelName => modelName;

    /// <inheritdoc />
    public int MaxContextTokens => maxContextTokens;

    /// <inheritdoc />
    public bool IsReady => loading.IsCompletedSuccessfully && loading.Result.IsReady;

    /// <inheritdoc />
    public EngineMetrics Metrics => loading.IsCompletedSuccessfully ? loading.Result.Metrics : s_empty;

    /// <inheritdoc />
    public bool TryStart(GenerationRequest request, out IGenerationStream? stream)
    {
        if (loading.IsCompletedSuccessfully) return loading.Result.TryStart(request, out stream);
        stream = null;
        return false;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (loading.IsCompletedSuccessfully && loading.Result is IDisposable disposable) disposable.Dispose();
    }
}
