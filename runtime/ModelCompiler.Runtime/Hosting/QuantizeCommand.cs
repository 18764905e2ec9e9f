using System;
using System.CommandLine;
using System.Globalization;
using System.IO;
using ModelCompiler.Runtime.Quantization;
using ModelCompiler.Runtime.Weights;
using ModelCompiler.Runtime.Weights.Gguf;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// The <c>quantize</c> command: reads the engine's weights (any supported file, or deterministic random
/// weights) and writes them as a GGUF file of the requested type, then reads the file back to check it.
/// </summary>
internal static class QuantizeCommand
{
    public static Command Create(CompiledModel engine)
    {
        var config = engine.Config;
        var to = new Option<string>("--to") { Description = "Target type: q8_0, q4_0, bf16, f16 (or f32).", Required = true };
        var output = new Option<string>("--out") { Description = "GGUF file to write.", Required = true };
        var weightOptions = new WeightOptions(config);
        var command = new Command("quantize", "Convert the model's weights to a GGUF file of another type.") { to, output };
        weightOptions.AddTo(command);
        command.SetAction(result =>
        {
            string toName = result.GetValue(to)!;
            if (!WeightDTypes.TryParse(toName, out var target))
                return Fail($"--to must be one of q8_0, q4_0, bf16, f16, f32; got '{toName}'");
            if (!weightOptions.TryGetSelection(result, out var selection, out string error)) return Fail(error);
            string outPath = result.GetValue(output)!;
            var source = WeightOptions.Open(config, selection, note => Console.Error.WriteLine("note: " + note));
            GgufExportResult written;
            using (source) written = GgufExport.WriteLlama(source, config, target, outPath);
            foreach (var name in written.FallbackTensors)
                Console.Error.WriteLine($"note: {name} has rows that are not whole {WeightDTypes.Name(target)} blocks; written as f16");

            // Read back what was written, as the engine would load it.
            using (var check = GgufFile.Open(outPath)) check.CheckAgainst(config);
            Console.Error.WriteLine(string.Format(CultureInfo.InvariantCulture, "wrote {0}: {1} tensors, {2} bytes, {3}",
                outPath, written.Tensors.Count, new FileInfo(outPath).Length, WeightDTypes.Name(target)));
            return 0;
        });
        return command;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine("error: " + message);
        return ModelHost.UsageOrInputError;
    }
}
