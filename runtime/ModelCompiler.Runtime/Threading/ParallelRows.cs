namespace ModelCompiler.Runtime.Threading;

/// <summary>A row-wise operation: <see cref="Rows"/> handles rows <c>[first, end)</c>, independently of every other row.</summary>
internal interface IRowRange
{
    /// <summary>Processes rows <c>[first, end)</c>.</summary>
    void Rows(int first, int end);
}

/// <summary>
/// Runs a row-wise elementwise step (RMSNorm, SwiGLU, the RoPE + KV-write epilogue, a copy) over the worker pool
/// split by rows when the batch is large enough to pay for the hand-off, else on the calling thread. Each row is
/// computed by the same code either way, so results do not depend on the split.
/// </summary>
internal static class ParallelRows
{
    /// <summary>
    /// Floats touched below which a step stays on the calling thread: a hand-off costs ~1–2 µs, about what a thread
    /// takes for this many elements of the cheapest of these steps. Decode (one token, or a few sequences' tokens)
    /// stays inline; a prefill's steps were serial work while the other threads waited (~5% of a Llama110M prefill).
    /// </summary>
    public const long MinParallelFloats = 1 << 14;

    /// <summary>Chunks per thread: a few, so that a thread the OS deschedules costs little.</summary>
    private const int ChunksPerThread = 4;

    /// <summary>Runs <paramref name="body"/> over rows <c>[0, numRows)</c> (<paramref name="floatsPerRow"/> decides whether to split).</summary>
    public static void Run<TBody>(ref TBody body, int numRows, long floatsPerRow) where TBody : struct, IRowRange
    {
        int threads = WorkerPool.ThreadCount;
        if (threads <= 1 || numRows < 2 || numRows * floatsPerRow < MinParallelFloats)
        {
            if (numRows > 0) body.Rows(0, numRows);
            return;
        }
        var job = new Job<TBody> { Body = body, NumRows = numRows, NumChunks = System.Math.Min(numRows, threads * ChunksPerThread) };
        WorkerPool.Run(ref job, job.NumChunks);
    }

    /// <summary>
    /// Where share <paramref name="share"/> of <paramref name="count"/> items dealt evenly into <paramref name="shares"/>
    /// begins (share i is <c>[i·n/k, (i+1)·n/k)</c>, so sizes differ by at most one; <paramref name="share"/> =
    /// <paramref name="shares"/> gives the end).
    /// </summary>
    public static int ShareStart(int count, int shares, int share) => (int)((long)count * share / shares);

    private struct Job<TBody> : IParallelJob where TBody : struct, IRowRange
    {
        public TBody Body;
        public int NumRows, NumChunks;

        public void Execute(int chunk) => Body.Rows(ShareStart(NumRows, NumChunks, chunk), ShareStart(NumRows, NumChunks, chunk + 1));
    }
}
