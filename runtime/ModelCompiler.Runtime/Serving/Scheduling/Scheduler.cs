using System;
using System.Collections.Generic;
using ModelCompiler.Runtime.KvCache;
using ModelCompiler.Runtime.Server;

namespace ModelCompiler.Runtime.Serving.Scheduling;

/// <summary>The scheduler's budgets.</summary>
/// <param name="MaxBatchTokens">Most tokens one step computes (decodes cost 1, prefill chunks their length).</param>
/// <param name="MaxSequences">Most running sequences (each step schedules each at most once).</param>
/// <param name="MaxContextTokens">Context length: a sequence that reaches it finishes with <see cref="FinishReason.Length"/>.</param>
/// <param name="AgingStepsPerPriorityLevel">A waiting sequence gains one priority level per this many steps waited, so none starves.</param>
public sealed record SchedulerOptions(int MaxBatchTokens, int MaxSequences, int MaxContextTokens, int AgingStepsPerPriorityLevel = 32)
{
    /// <summary>Throws when a budget is not positive.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxBatchTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxSequences);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxContextTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(AgingStepsPerPriorityLevel);
    }
}

/// <summary>A sequence's share of one step: compute tokens <c>[StartPosition, StartPosition + NumNewTokens)</c>.</summary>
/// <param name="Sequence">The sequence.</param>
/// <param name="StartPosition">Its computed-token count when scheduled.</param>
/// <param name="NumNewTokens">Tokens to compute this step (at least 1).</param>
public readonly record struct ScheduledSequence(Sequence Sequence, int StartPosition, int NumNewTokens)
{
    /// <summary>True when this step computes the sequence's last token, so its logits are sampled.</summary>
    public bool Samples => StartPosition + NumNewTokens == Sequence.NumTokens;
}

/// <summary>What one step runs: the scheduled sequences in batch order and the block copies to make first.</summary>
public sealed class SchedulerStep
{
    /// <summary>Sequences to compute, in batch order.</summary>
    public List<ScheduledSequence> Scheduled { get; } = new();
    /// <summary>Copy-on-write copies to perform on the KV pool before the forward pass, in order.</summary>
    public List<BlockCopy> BlockCopies { get; } = new();
    /// <summary>Sequences preempted this step (back to waiting, blocks freed).</summary>
    public List<Sequence> Preempted { get; } = new();
    /// <summary>Tokens in the batch.</summary>
    public int NumBatchTokens { get; internal set; }

    internal void Clear()
    {
        Scheduled.Clear();
        BlockCopies.Clear();
        Preempted.Clear();
        NumBatchTokens = 0;
    }
}

/// <summary>
/// Continuous batching over a <see cref="BlockManager"/>: a waiting queue and a running list, and each step
/// a batch under a token budget and a sequence limit. Running sequences go first (a decode costs one token,
/// a prefill chunk the rest of the budget), then waiting ones are admitted while blocks and budget allow,
/// so a long prompt is prefilled in chunks over several steps without stalling running decodes. It knows
/// sequences and block ids, nothing of tensors.
/// </summary>
/// <remarks>
/// <para>Order: highest effective priority first, earlier arrival on ties. Waiting sequences age (see
/// <see cref="SchedulerOptions.AgingStepsPerPriorityLevel"/>) and keep what they gained once running.</para>
/// <para>Preemption: when a running sequence needs a block and none is free, the lowest-ordered running
/// sequence not yet scheduled this step (possibly itself) loses its blocks and goes back to waiting with
/// its generated tokens kept, to be recomputed (its cached full blocks usually make that cheap). No
/// waiting sequence is admitted in a step that preempted.</para>
/// <para>What stays true: a sequence is in exactly one of waiting and running, or finished; exactly the
/// running ones hold block tables; running + the children they will fork ≤ MaxSequences.</para>
/// </remarks>
public sealed class Scheduler
{
    private readonly BlockManager _blocks;
    private readonly List<Sequence> _waiting = new();
    private readonly List<Sequence> _running = new();
    private readonly SchedulerStep _step = new();
    private readonly Comparison<Sequence> _firstToRun;
    private long _nextArrivalIndex;

    /// <summary>Creates a scheduler over <paramref name="blocks"/>.</summary>
    public Scheduler(BlockManager blocks, SchedulerOptions options)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _blocks = blocks;
        Options = options;
        int aging = options.AgingStepsPerPriorityLevel;
        _firstToRun = (a, b) =>
        {
            int byPriority = b.EffectivePriority(aging).CompareTo(a.EffectivePriority(aging));
            if (byPriority != 0) return byPriority;
            int byArrival = a.ArrivalIndex.CompareTo(b.ArrivalIndex);
            return byArrival != 0 ? byArrival : a.ChoiceIndex.CompareTo(b.ChoiceIndex);
        };
    }

    /// <summary>The budgets.</summary>
    public SchedulerOptions Options { get; }
    /// <summary>The block manager.</summary>
    public BlockManager Blocks => _blocks;
    /// <summary>Waiting sequences (new and preempted), in no particular order.</summary>
    public IReadOnlyList<Sequence> Waiting => _waiting;
    /// <summary>Running sequences.</summary>
    public IReadOnlyList<Sequence> Running => _running;
    /// <summary>True while any sequence waits or runs.</summary>
    public bool HasWork => _waiting.Count > 0 || _running.Count > 0;
    /// <summary>Preemptions so far.</summary>
    public long NumPreemptions { get; private set; }
    /// <summary>Steps scheduled so far.</summary>
    public long NumSteps { get; private set; }

    /// <summary>Queues a new sequence (with its <see cref="Sequence.PendingChildren"/>, if any).</summary>
    public void Add(Sequence sequence)
    {
        ArgumentNullException.ThrowIfNull(sequence);
        if (sequence.Status != SequenceStatus.Waiting || sequence.ArrivalIndex >= 0)
            throw new InvalidOperationException($"{sequence} was already added.");
        if (1 + sequence.PendingChildren.Count > Options.MaxSequences)
            throw new ArgumentException($"{1 + sequence.PendingChildren.Count} choices exceed the {Options.MaxSequences} sequences a step can run.", nameof(sequence));
        sequence.ArrivalIndex = _nextArrivalIndex++;
        _waiting.Add(sequence);
    }

    /// <summary>
    /// Chooses this step's batch. The returned object is reused by the next call. After running it, call
    /// <see cref="CompleteStep"/>.
    /// </summary>
    public SchedulerStep Schedule()
    {
        _step.Clear();
        NumSteps++;
        foreach (var waiting in _waiting) waiting.NumStepsWaited++;
        int budget = Options.MaxBatchTokens;

        _running.Sort(_firstToRun);
        bool preempted = false;
        for (int i = 0; i < _running.Count && budget > 0; i++)
        {
            var sequence = _running[i];
            int start = sequence.NumComputedTokens;
            int numNew = Math.Min(sequence.NumTokens - start, budget);
            if (numNew <= 0) throw new InvalidOperationException($"{sequence} is running with nothing to compute.");
            while (!_blocks.CanAppend(sequence.Id, start + numNew))
            {
                // The last running sequence is the lowest ordered one not scheduled yet (those before i are).
                var victim = _running[^1];
                Preempt(victim);
                preempted = true;
                if (victim == sequence) break;
            }
            if (sequence.Status != SequenceStatus.Running) break;   // it preempted itself: none below it is left
            if (_blocks.Append(sequence.Id, start + numNew) is { } copy) _step.BlockCopies.Add(copy);
            Schedule(sequence, start, numNew);
            budget -= numNew;
        }
        if (!preempted) Admit(ref budget);
        return _step;
    }

    /// <summary>
    /// Advances the computed counts of the step's sequences (their KV is now written) and lets the block
    /// manager cache the blocks they filled. Call after the forward pass, before sampling's bookkeeping.
    /// </summary>
    public void CompleteStep(SchedulerStep step)
    {
        foreach (var scheduled in step.Scheduled)
        {
            var sequence = scheduled.Sequence;
            sequence.NumComputedTokens = scheduled.StartPosition + scheduled.NumNewTokens;
            _blocks.CacheFullBlocks(sequence.Id, sequence.Tokens, sequence.NumComputedTokens);
        }
    }

    /// <summary>
    /// Starts <paramref name="parent"/>'s pending children now that its prompt is computed: each forks the
    /// parent's block table (the partly filled last block is copied when first written) and runs.
    /// </summary>
    public IReadOnlyList<Sequence> ForkChildren(Sequence parent)
    {
        if (parent.Status != SequenceStatus.Running || parent.NumComputedTokens != parent.NumTokens)
            throw new InvalidOperationException($"{parent} cannot fork: its tokens are not all computed.");
        var children = parent.PendingChildren.ToArray();
        parent.PendingChildren.Clear();
        foreach (var child in children)
        {
            if (!child.Tokens.SequenceEqual(parent.Tokens)) throw new InvalidOperationException($"Child {child} does not share its parent's tokens.");
            _blocks.Fork(parent.Id, child.Id);
            child.NumComputedTokens = parent.NumComputedTokens;
            child.NumCachedPromptTokens = parent.NumCachedPromptTokens;
            child.ArrivalIndex = parent.ArrivalIndex;
            child.NumStepsWaited = parent.NumStepsWaited;
            child.Status = SequenceStatus.Running;
            _running.Add(child);
        }
        return children;
    }

    /// <summary>
    /// Post-processes a sampled token: a stop token finishes the sequence (and is not appended); otherwise it
    /// is appended and the sequence finishes when it reaches its token limit or the context length. A
    /// finished sequence's blocks are freed at once. Returns why it finished, or null.
    /// </summary>
    public FinishReason? AppendToken(Sequence sequence, int tokenId)
    {
        if (sequence.Status != SequenceStatus.Running) throw new InvalidOperationException($"{sequence} is not running.");
        if (sequence.IsStopToken(tokenId))
        {
            Finish(sequence, FinishReason.Stop);
            return FinishReason.Stop;
        }
        sequence.AppendToken(tokenId);
        if (sequence.NumGeneratedTokens >= sequence.MaxTokens || sequence.NumTokens >= Options.MaxContextTokens)
        {
            Finish(sequence, FinishReason.Length);
            return FinishReason.Length;
        }
        return null;
    }

    /// <summary>Ends <paramref name="sequence"/> and frees its blocks at once.</summary>
    public void Finish(Sequence sequence, FinishReason reason)
    {
        if (sequence.Status != SequenceStatus.Running) throw new InvalidOperationException($"{sequence} is not running.");
        _running.Remove(sequence);
        _blocks.Free(sequence.Id);
        sequence.Status = reason == FinishReason.Cancelled ? SequenceStatus.Cancelled : SequenceStatus.Finished;
        sequence.FinishReason = reason;
    }

    /// <summary>
    /// Cancels <paramref name="sequence"/> wherever it is (waiting, running, or a pending child), freeing any
    /// blocks it holds; its pending children are cancelled with it. Does nothing to a finished sequence.
    /// </summary>
    public void Abort(Sequence sequence)
    {
        if (sequence.IsFinished) return;
        if (sequence.Status == SequenceStatus.Running)
        {
            _running.Remove(sequence);
            _blocks.Free(sequence.Id);
        }
        else
        {
            _waiting.Remove(sequence);
            foreach (var holder in _waiting) holder.PendingChildren.Remove(sequence);
            foreach (var holder in _running) holder.PendingChildren.Remove(sequence);
        }
        sequence.Status = SequenceStatus.Cancelled;
        sequence.FinishReason = FinishReason.Cancelled;
        foreach (var child in sequence.PendingChildren)
        {
            child.Status = SequenceStatus.Cancelled;
            child.FinishReason = FinishReason.Cancelled;
        }
        sequence.PendingChildren.Clear();
    }

    private void Admit(ref int budget)
    {
        _waiting.Sort(_firstToRun);
        int reservedSlots = 0;
        foreach (var running in _running) reservedSlots += running.PendingChildren.Count;
        while (_waiting.Count > 0 && budget > 0)
        {
            var sequence = _waiting[0];
            int slots = 1 + sequence.PendingChildren.Count;
            if (_running.Count + reservedSlots + slots > Options.MaxSequences) break;
            int cached = _blocks.NumCachedPrefixTokens(sequence.Tokens);
            int numNew = Math.Min(sequence.NumTokens - cached, budget);
            // Head of line: when the first in order does not fit, nobody behind it jumps ahead, or a long
            // prompt could wait forever behind a stream of short ones.
            if (!_blocks.CanAllocate(sequence.Tokens, cached + numNew)) break;
            int computed = _blocks.Allocate(sequence.Id, sequence.Tokens, cached + numNew);
            _waiting.RemoveAt(0);
            sequence.NumComputedTokens = computed;
            if (sequence.NumCachedPromptTokens < 0) sequence.NumCachedPromptTokens = Math.Min(computed, sequence.NumPromptTokens);
            sequence.Status = SequenceStatus.Running;
            _running.Add(sequence);
            reservedSlots += sequence.PendingChildren.Count;
            Schedule(sequence, computed, numNew);
            budget -= numNew;
        }
    }

    private void Schedule(Sequence sequence, int start, int numNew)
    {
        _step.Scheduled.Add(new ScheduledSequence(sequence, start, numNew));
        _step.NumBatchTokens += numNew;
    }

    private void Preempt(Sequence victim)
    {
        _running.Remove(victim);
        _blocks.Free(victim.Id);
        victim.NumComputedTokens = 0;
        victim.Status = SequenceStatus.Waiting;
        victim.NumPreemptions++;
        _waiting.Add(victim);
        _step.Preempted.Add(victim);
        NumPreemptions++;
    }
}
