using System;
using System.Collections.Generic;
using System.IO;
using ModelCompiler.Runtime.Weights.Gguf;
using ModelCompiler.Runtime.Weights.Safetensors;

namespace ModelCompiler.Runtime.Weights;

/// <summary>The weight file formats <see cref="WeightFiles"/> tells apart.</summary>
public enum WeightFileFormat
{
    /// <summary>llama2.c <c>run.c</c> checkpoint (anything that is neither of the others).</summary>
    Llama2c,
    /// <summary>GGUF (magic "GGUF").</summary>
    Gguf,
    /// <summary>safetensors (an 8-byte header length, then a JSON object).</summary>
    Safetensors,
}

/// <summary>
/// Opens a weight file of any supported format for a compiled model: picks the reader from the file's
/// magic bytes (not its extension), then checks the file against the model's configuration.
/// </summary>
public static class WeightFiles
{
    /// <summary>
    /// The format of <paramref name="path"/> by its first bytes: "GGUF" → GGUF; a little-endian u64 N that fits
    /// in the file followed by '{' → safetensors; anything else → llama2.c (whose reader validates its header).
    /// </summary>
    public static WeightFileFormat DetectFormat(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"weights file not found: {path}");
        if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase))
            throw new ModelLoadException($"{path}: sharded safetensors checkpoints (an index over several files) are not supported; merge the shards into one model.safetensors");
        Span<byte> head = stackalloc byte[9];
        long length;
        int numRead;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            length = stream.Length;
            numRead = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"{path}: cannot open weights file ({e.Message})");
        }
        if (numRead >= 4 && head[..4].SequenceEqual(GgufFile.Magic)) return WeightFileFormat.Gguf;
        if (numRead == 9 && head[8] == (byte)'{')
        {
            ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(head);
            if (headerLength >= 2 && headerLength <= (ulong)(length - 8)) return WeightFileFormat.Safetensors;
        }
        return WeightFileFormat.Llama2c;
    }

    /// <summary>Opens <paramref name="path"/> with the reader its magic bytes call for, without checking it against a model.</summary>
    public static IWeightSource Open(string path) => DetectFormat(path) switch
    {
        WeightFileFormat.Gguf => GgufFile.Open(path),
        WeightFileFormat.Safetensors => SafetensorsFile.Open(path),
        _ => OpenLlama2c(path),
    };

    /// <summary>
    /// Opens <paramref name="path"/> and checks it against <paramref name="config"/>. Differences the engine
    /// cannot run are a <see cref="ModelLoadException"/>; harmless ones (metadata that does not change the
    /// computation) are returned in <paramref name="notes"/> for the caller to report.
    /// </summary>
    public static IWeightSource OpenChecked(string path, ModelConfig config, out IReadOnlyList<string> notes)
    {
        var source = Open(path);
        try
        {
            notes = source switch
            {
                GgufFile gguf => gguf.CheckAgainst(config),
                SafetensorsFile safetensors => safetensors.CheckAgainst(config),
                Llama2cCheckpoint checkpoint => CheckLlama2c(checkpoint, config),
                _ => Array.Empty<string>(),
            };
            return source;
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    private static IReadOnlyList<string> CheckLlama2c(Llama2cCheckpoint checkpoint, ModelConfig config)
    {
        checkpoint.CheckAgainst(config);
        return Array.Empty<string>();
    }

    private static Llama2cCheckpoint OpenLlama2c(string path)
    {
        try
        {
            return Llama2cCheckpoint.Open(path);
        }
        catch (ModelLoadException e) when (e.Message.Contains("not a llama2.c checkpoint", StringComparison.Ordinal))
        {
            // Nothing recognised the file: say which formats were tried, not just the last one.
            throw new ModelLoadException($"{path}: not a GGUF, safetensors or llama2.c weights file ({e.Message.Substring(path.Length + 2)})");
        }
    }
}
