using System;

namespace ModelCompiler.Runtime.Sampling;

/// <summary>
/// How the next token is chosen. The defaults are greedy decoding. Every value is checked when it is set,
/// including through <c>with</c>, so an invalid record cannot exist.
/// </summary>
/// <param name="Temperature">0 for greedy (argmax); otherwise logits are divided by it before the softmax. Finite, at least 0.</param>
/// <param name="TopK">Keep only the K most likely tokens; 0 keeps all.</param>
/// <param name="TopP">Nucleus sampling: keep the smallest most-likely set whose probability reaches P; 1 keeps all. In (0, 1].</param>
/// <param name="Seed">Seed of the sampler's SplitMix64 generator: equal seeds give equal samples.</param>
public sealed record SamplingOptions(float Temperature = 0, int TopK = 0, float TopP = 1, ulong Seed = 0)
{
    private readonly float _temperature = CheckTemperature(Temperature);
    private readonly int _topK = CheckTopK(TopK);
    private readonly float _topP = CheckTopP(TopP);

    /// <summary>0 for greedy (argmax); otherwise logits are divided by it before the softmax.</summary>
    public float Temperature { get => _temperature; init => _temperature = CheckTemperature(value); }

    /// <summary>Keep only the K most likely tokens; 0 keeps all.</summary>
    public int TopK { get => _topK; init => _topK = CheckTopK(value); }

    /// <summary>Keep the smallest most-likely set of tokens whose probability reaches P; 1 keeps all.</summary>
    public float TopP { get => _topP; init => _topP = CheckTopP(value); }

    private static float CheckTemperature(float value) =>
        value >= 0 && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(Temperature), value, "Temperature must be a finite number >= 0 (0 means greedy).");

    private static int CheckTopK(int value) =>
        value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(TopK), value, "TopK must be >= 0 (0 means no top-k cut).");

    private static float CheckTopP(float value) =>
        value > 0 && value <= 1 ? value : throw new ArgumentOutOfRangeException(nameof(TopP), value, "TopP must be in (0, 1] (1 means no nucleus cut).");
}
