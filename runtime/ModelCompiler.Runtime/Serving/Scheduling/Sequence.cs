using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using ModelCompiler.Runtime.Sampling;
using ModelCompiler.Runtime.Server;

namespace ModelCompiler.Runtime.Serving.Scheduling;

/// <summary>Where a <see cref="Sequence"/> is in its life.</summary>
public enum SequenceStatus
{
    /// <summary>In the scheduler's waiting queue: new, or preempted and to be recomputed.</summary>
    Waiting,
    /// <summary>Holds a block table and is scheduled each step while the budget allows.</summary>
    Running,
    /// <summary>Ended by a stop token or a length limit; its blocks are freed.</summary>
    Finished,
    /// <summary>Cancelled (client gone, deadline passed); its blocks are freed.</summary>
    Cancelled,
}

/// <summary>
/// One generated sequence (one choice of a request): state only, no behaviour beyond bookkeeping. Its
/// tokens are the prompt followed by the generated tokens; <see cref="NumComputedTokens"/> of them have KV
/// in the cache. As in vLLM v1 there are no prefill and decode phases: each step the scheduler gives a
/// running sequence up to <c>NumTokens - NumComputedTokens</c> tokens, and when the computed count
/// reaches the token count the step's last logits are sampled into a new token. Its block table lives in
/// the <see cref="KvCache.BlockManager"/> under <see cref="Id"/>.
/// </summary>
public sealed class Sequence
{
    private readonly List<int> _tokens;
    private readonly HashSet<int> _stopTokenIds;

    /// <summary>Creates a waiting sequence.</summary>
    /// <param name="id">Unique id (also its block table's key).</param>
    /// <param name="promptTokens">Prompt token ids, at least one.</param>
    /// <param name="maxTokens">Most tokens to generate.</param>
    /// <param name="sampling">How to sample; its seed seeds this sequence's own sampler.</param>
    /// <param name="priority">Higher runs first.</param>
    /// <param name="stopTokenIds">Tokens that end the sequence (not appended, not reported).</param>
    /// <param name="choiceIndex">Which choice of its request this is (parallel sampling).</param>
    /// <param name="wantsLogprobs">Whether its sampled tokens report log-probabilities (the logits row must come to the host).</param>
    public Sequence(long id, ReadOnlySpan<int> promptTokens, int maxTokens, SamplingOptions sampling, int priority = 0,
        IEnumerable<int>? stopTokenIds = null, int choiceIndex = 0, bool wantsLogprobs = false)
    {
        if (promptTokens.Length == 0) throw new ArgumentException("A sequence needs at least one prompt token.", nameof(promptTokens));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxTokens);
        ArgumentNullException.ThrowIfNull(sampling);
        Id = id;
        _tokens = new List<int>(promptTokens.Length + Math.Min(maxTokens, 4096));
        foreach (int token in promptTokens) _tokens.Add(token);
        NumPromptTokens = promptTokens.Length;
        MaxTokens = maxTokens;
        Sampling = sampling;
        Priority = priority;
        ChoiceIndex = choiceIndex;
        WantsLogprobs = wantsLogprobs;
        _stopTokenIds = stopTokenIds is null ? new HashSet<int>() : new HashSet<int>(stopTokenIds);
    }

    /// <summary>Unique id; the key of its block table.</summary>
    public long Id { get; }
    /// <summary>Which choice of its request this is (0 for the first).</summary>
    public int ChoiceIndex { get; }
    /// <summary>Prompt followed by the generated tokens.</summary>
    public ReadOnlySpan<int> Tokens => CollectionsMarshal.AsSpan(_tokens);
    /// <summary>Prompt plus generated tokens.</summary>
    public int NumTokens => _tokens.Count;
    /// <summary>Tokens of the prompt.</summary>
    public int NumPromptTokens { get; }
    /// <summary>Tokens generated so far (kept across preemption).</summary>
    public int NumGeneratedTokens => _tokens.Count - NumPromptTokens;
    /// <summary>The generated tokens.</summary>
    public ReadOnlySpan<int> GeneratedTokens => Tokens[NumPromptTokens..];
    /// <summary>Most tokens to generate.</summary>
    public int MaxTokens { get; }
    /// <summary>How tokens are sampled.</summary>
    public SamplingOptions Sampling { get; }
    /// <summary>Whether its sampled tokens report log-probabilities, which needs the logits row on the host.</summary>
    public bool WantsLogprobs { get; }
    /// <summary>This sequence's sampler, created by the model runner on the first sample; it carries the random state across steps and preemptions.</summary>
    public Sampler? Sampler { get; set; }
    /// <summary>Base priority: higher runs first.</summary>
    public int Priority { get; }
    /// <summary>Order of arrival at the scheduler (earlier first on equal priority); children share their parent's.</summary>
    public long ArrivalIndex { get; internal set; } = -1;
    /// <summary>Steps spent waiting, in total (aging: the effective priority rises with it).</summary>
    public int NumStepsWaited { get; internal set; }
    /// <summary>Times this sequence was preempted.</summary>
    public int NumPreemptions { get; internal set; }
    /// <summary>Life-cycle state.</summary>
    public SequenceStatus Status { get; internal set; } = SequenceStatus.Waiting;
    /// <summary>Why it ended, once <see cref="IsFinished"/>.</summary>
    public FinishReason? FinishReason { get; internal set; }
    /// <summary>Leading tokens whose KV is in the cache.</summary>
    public int NumComputedTokens { get; internal set; }
    /// <summary>Prompt tokens found in the prefix cache at the first admission (-1 before it).</summary>
    public int NumCachedPromptTokens { get; internal set; } = -1;
    /// <summary>True once finished or cancelled.</summary>
    public bool IsFinished => Status is SequenceStatus.Finished or SequenceStatus.Cancelled;

    /// <summary>
    /// Sibling choices (parallel sampling) not started yet: when this sequence's prompt is computed they
    /// fork its block table and sample their first tokens from the same logits.
    /// </summary>
    public List<Sequence> PendingChildren { get; } = new();

    /// <summary>Effective priority: the base priority plus one level per <paramref name="agingStepsPerLevel"/> steps waited.</summary>
    public int EffectivePriority(int agingStepsPerLevel) => Priority + NumStepsWaited / agingStepsPerLevel;

    /// <summary>True when <paramref name="tokenId"/> ends this sequence.</summary>
    public bool IsStopToken(int tokenId) => _stopTokenIds.Contains(tokenId);

    internal void AppendToken(int tokenId) => _tokens.Add(tokenId);

    /// <inheritdoc />
    public override string ToString() => $"sequence {Id} ({Status}, {NumComputedTokens}/{NumTokens} computed, {NumGeneratedTokens} generated)";
}
