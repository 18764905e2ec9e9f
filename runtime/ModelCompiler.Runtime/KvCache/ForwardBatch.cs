using System;

namespace ModelCompiler.Runtime.KvCache;

/// <summary>Which of a sequence's new tokens get a logits row in a <see cref="ForwardBatch"/>.</summary>
public enum LogitsRows
{
    /// <summary>None: a prefill chunk that does not reach the end of the prompt samples nothing.</summary>
    None,
    /// <summary>The last new token only (generation).</summary>
    Last,
    /// <summary>Every new token (scoring and tests).</summary>
    All,
}

/// <summary>
/// The input of one forward pass: the new tokens of several sequences, packed back to back, with each
/// sequence's positions and block table. A sequence's new tokens occupy consecutive positions
/// <c>[StartPosition, StartPosition + Length)</c>; attention for a token at position p reads positions
/// <c>[0, p]</c> of its own sequence through the block table. Buffers are allocated once and reused.
/// </summary>
public sealed class ForwardBatch
{
    /// <summary>Creates a batch with room for <paramref name="maxTokens"/> tokens and <paramref name="maxSequences"/> sequences.</summary>
    public ForwardBatch(int maxTokens, int maxSequences, int maxBlocksPerSequence, int blockSize)
    {
        BlockSize = blockSize;
        MaxTokens = maxTokens;
        MaxSequences = maxSequences;
        MaxBlocksPerSequence = maxBlocksPerSequence;
        TokenIds = new int[maxTokens];
        Positions = new int[maxTokens];
        SequenceOfToken = new int[maxTokens];
        LogitsTokenIndices = new int[maxTokens];
        SequenceStart = new int[maxSequences];
        SequenceLength = new int[maxSequences];
        StartPosition = new int[maxSequences];
        BlockTables = new int[maxSequences * maxBlocksPerSequence];
    }

    /// <summary>Tokens per KV block.</summary>
    public int BlockSize { get; }
    /// <summary>Capacity in tokens.</summary>
    public int MaxTokens { get; }
    /// <summary>Capacity in sequences.</summary>
    public int MaxSequences { get; }
    /// <summary>Row length of <see cref="BlockTables"/>.</summary>
    public int MaxBlocksPerSequence { get; }

    /// <summary>Number of tokens in the batch.</summary>
    public int NumTokens { get; private set; }
    /// <summary>Number of sequences in the batch.</summary>
    public int NumSequences { get; private set; }
    /// <summary>Number of tokens whose logits are computed (rows of the logits output).</summary>
    public int NumLogits { get; private set; }

    /// <summary><c>[MaxTokens]</c> token id of each packed token.</summary>
    public int[] TokenIds { get; }
    /// <summary><c>[MaxTokens]</c> position of each packed token within its sequence.</summary>
    public int[] Positions { get; }
    /// <summary><c>[MaxTokens]</c> index (into the per-sequence arrays) of each token's sequence.</summary>
    public int[] SequenceOfToken { get; }
    /// <summary><c>[MaxTokens]</c> packed token index of each logits row, in order.</summary>
    public int[] LogitsTokenIndices { get; }
    /// <summary><c>[MaxSequences]</c> packed index of each sequence's first token.</summary>
    public int[] SequenceStart { get; }
    /// <summary><c>[MaxSequences]</c> number of new tokens of each sequence.</summary>
    public int[] SequenceLength { get; }
    /// <summary><c>[MaxSequences]</c> position of each sequence's first new token.</summary>
    public int[] StartPosition { get; }
    /// <summary><c>[MaxSequences, MaxBlocksPerSequence]</c> KV-pool block ids of each sequence, by logical block.</summary>
    public int[] BlockTables { get; }

    /// <summary>Empties the batch.</summary>
    public void Clear()
    {
        NumTokens = 0;
        NumSequences = 0;
        NumLogits = 0;
    }

    /// <summary>
    /// Appends a sequence's new tokens. <paramref name="blockTable"/> must cover every position up to
    /// <c>startPosition + tokens.Length - 1</c>. With <paramref name="allLogits"/> every new token gets a
    /// logits row (for scoring and tests); otherwise only the last one does (generation).
    /// </summary>
    public void AddSequence(ReadOnlySpan<int> tokens, int startPosition, ReadOnlySpan<int> blockTable, bool allLogits = false) =>
        AddSequence(tokens, startPosition, blockTable, allLogits ? LogitsRows.All : LogitsRows.Last);

    /// <summary>
    /// Appends a sequence's new tokens, as <see cref="AddSequence(ReadOnlySpan{int}, int, ReadOnlySpan{int}, bool)"/>
    /// does, with <paramref name="logitsRows"/> choosing which of them get a logits row.
    /// </summary>
    public void AddSequence(ReadOnlySpan<int> tokens, int startPosition, ReadOnlySpan<int> blockTable, LogitsRows logitsRows)
    {
        if (tokens.Length == 0) throw new ArgumentException("A sequence needs at least one new token.", nameof(tokens));
        if (NumSequences == MaxSequences) throw new InvalidOperationException($"The batch already holds {MaxSequences} sequences.");
        if (NumTokens + tokens.Length > MaxTokens) throw new InvalidOperationException($"The batch holds at most {MaxTokens} tokens.");
        if (startPosition < 0) throw new ArgumentOutOfRangeException(nameof(startPosition));
        int lastPosition = startPosition + tokens.Length - 1;
        int blocksNeeded = lastPosition / BlockSize + 1;
        if (blocksNeeded > MaxBlocksPerSequence) throw new ArgumentException($"Position {lastPosition} is past the longest sequence a block table can hold ({MaxBlocksPerSequence * BlockSize} tokens).", nameof(startPosition));
        if (blockTable.Length < blocksNeeded) throw new ArgumentException($"The block table has {blockTable.Length} blocks; positions up to {lastPosition} need {blocksNeeded}.", nameof(blockTable));
        if (blockTable.Length > MaxBlocksPerSequence) throw new ArgumentException($"A block table holds at most {MaxBlocksPerSequence} blocks.", nameof(blockTable));

        int s = NumSequences++;
        SequenceStart[s] = NumTokens;
        SequenceLength[s] = tokens.Length;
        StartPosition[s] = startPosition;
        var row = BlockTables.AsSpan(s * MaxBlocksPerSequence, MaxBlocksPerSequence);
        row.Fill(-1);
        blockTable.CopyTo(row);
        for (int i = 0; i < tokens.Length; i++)
        {
            int t = NumTokens++;
            TokenIds[t] = tokens[i];
            Positions[t] = startPosition + i;
            SequenceOfToken[t] = s;
            if (logitsRows == LogitsRows.All || (logitsRows == LogitsRows.Last && i == tokens.Length - 1)) LogitsTokenIndices[NumLogits++] = t;
        }
    }

    /// <summary>The block table row of sequence <paramref name="sequence"/>.</summary>
    public ReadOnlySpan<int> BlockTable(int sequence) => BlockTables.AsSpan(sequence * MaxBlocksPerSequence, MaxBlocksPerSequence);
}
