using System;
using System.CommandLine;
using ModelCompiler.Runtime.Tokenization;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// Which tokenizer a command uses, in order: <c>--tokenizer FILE</c> (a llama2.c tokenizer.bin or a GGUF file's
/// vocabulary, by magic bytes); else the vocabulary embedded in a GGUF <c>--weights</c> file, as llama.cpp uses it;
/// else the description's tokenizer file in the shared folder. A GGUF weights file whose vocabulary this runtime
/// cannot read (a <c>gpt2</c> one, say) is an error that says to pass <c>--tokenizer</c>, never a silent fallback
/// to a tokenizer the file was not trained with.
/// </summary>
internal static class TokenizerChoice
{
    /// <summary>The <c>--tokenizer</c> option of generate, serve and quantize.</summary>
    public static Option<string> CreateOption(ModelConfig config) => new("--tokenizer")
    {
        Description = $"Tokenizer: a llama2.c tokenizer.bin or a GGUF file's vocabulary; default: the vocabulary of a GGUF --weights file, else {config.TokenizerPath} in the shared folder.",
    };

    /// <summary>Loads the tokenizer for <paramref name="config"/>; <paramref name="weightsPath"/> is null for random weights.</summary>
    /// <exception cref="ModelLoadException">The chosen file is missing or unusable.</exception>
    public static Llama2cTokenizer Load(ModelConfig config, string? tokenizerPath, string? weightsPath)
    {
        if (tokenizerPath is not null) return Llama2cTokenizer.Load(tokenizerPath, config.VocabSize);
        if (TryLoadEmbedded(config, weightsPath, out var embedded)) return embedded;
        return Llama2cTokenizer.Load(SharedPaths.Resolve(config.TokenizerPath), config.VocabSize);
    }

    /// <summary>
    /// The vocabulary embedded in <paramref name="weightsPath"/> when it is a GGUF file that has one; false for
    /// random weights, other formats and GGUF files without a vocabulary.
    /// </summary>
    public static bool TryLoadEmbedded(ModelConfig config, string? weightsPath, out Llama2cTokenizer tokenizer)
    {
        tokenizer = null!;
        return weightsPath is not null
            && WeightFiles.DetectFormat(weightsPath) == WeightFileFormat.Gguf
            && GgufVocabulary.TryLoad(weightsPath, config.VocabSize, out tokenizer);
    }

    /// <summary>The weights file a parse result selects (<c>--weights</c>, else the description's), or null for <c>--random-weights</c>.</summary>
    public static string? WeightsPath(ParseResult result, ModelConfig config) =>
        result.GetValue<int?>("--random-weights") is not null ? null : result.GetValue<string>("--weights") ?? SharedPaths.Resolve(config.WeightsPath);
}
