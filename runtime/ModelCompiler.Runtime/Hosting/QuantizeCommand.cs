using System;
using System.CommandLine;
using System.Globalization;
using System.IO;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Tokenization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// The <c>quantize</c> command: reads the engine's weights (any supported file, or deterministic random
/// weights) and writes every tensor the engine reads as a GGUF file of the requested type, with the model's
/// vocabulary embedded (<see cref="TokenizerChoice"/>), then reads the file back and binds it as the engine
/// would, to check it.
/// </summary>
internal static class QuantizeCommand
{
    public static Command Create(CompiledModel engine)
    {
        var config = engine.Config;
        var to = new Option<string>("--to") { Description = "Target type: q8_0, q4_0, bf16, f16 (or f32).", Required = true };
        var output = new Option<string>("--out") { Description = "GGUF file to write.", Required = true };
        var tokenizerOption = TokenizerChoice.CreateOption(config);
        var weightOptions = new WeightOptions(config);
        var command = new Command("quantize", "Convert the model's weights (and its vocabulary) to a GGUF file of another type.") { to, output, tokenizerOption };
        weightOptions.AddTo(command);
        command.SetAction(result =>
        {
            string toName = result.GetValue(to)!;
            if (!WeightDTypes.TryParse(toName, out var target))
                return Fail($"--to must be one of q8_0, q4_0, bf16, f16, f32; got '{toName}'");
            if (!weightOptions.TryGetSelection(result, out var selection, out string error)) return Fail(error);
            string outPath = result.GetValue(output)!;
            var tokenizer = LoadTokenizer(config, result.GetValue(tokenizerOption), selection.WeightsPath);
            var source = WeightOptions.Open(config, selection, note => Console.Error.WriteLine("note: " + note));
            GgufExportResult written;
            using (source) written = GgufExport.Write(source, config, target, outPath, engine.WeightSpecs, tokenizer);
            foreach (var name in written.FallbackTensors)
                Console.Error.WriteLine($"note: {name} has rows that are not whole {WeightDTypes.Name(target)} blocks; written as f16");

            // Read back what was written and bind it as the engine would: every tensor it reads is there, with its shape.
            var check = WeightFiles.OpenChecked(outPath, config, out _);
            WeightBinder.Bind(engine.WeightSpecs, check, config).Dispose();
            if (tokenizer is not null && !GgufVocabulary.TryLoad(outPath, config.VocabSize, out _))
                throw new ModelLoadException($"{outPath}: the vocabulary written is missing on reading back");
            Console.Error.WriteLine(string.Format(CultureInfo.InvariantCulture, "wrote {0}: {1} ({2}), {3} tensors, {4}, {5} bytes",
                outPath, written.Architecture, WeightDTypes.Name(target), written.Tensors.Count,
                tokenizer is null ? "no vocabulary" : $"{written.VocabularySize}-token vocabulary", new FileInfo(outPath).Length));
            return 0;
        });
        return command;
    }

    // The tokenizer the engine would use with these weights. An explicit --tokenizer must load; the default one
    // may be absent (a model without a shipped tokenizer), and then the file is written without a vocabulary.
    private static Llama2cTokenizer? LoadTokenizer(ModelConfig config, string? explicitPath, string? weightsPath)
    {
        if (explicitPath is not null) return Llama2cTokenizer.Load(explicitPath, config.VocabSize);
        if (TokenizerChoice.TryLoadEmbedded(config, weightsPath, out var embedded)) return embedded;
        string defaultPath = SharedPaths.Resolve(config.TokenizerPath);
        if (File.Exists(defaultPath)) return Llama2cTokenizer.Load(defaultPath, config.VocabSize);
        Console.Error.WriteLine($"note: tokenizer file not found: {defaultPath}; the GGUF file gets no vocabulary (pass --tokenizer FILE to embed one)");
        return null;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine("error: " + message);
        return ModelHost.UsageOrInputError;
    }
}
