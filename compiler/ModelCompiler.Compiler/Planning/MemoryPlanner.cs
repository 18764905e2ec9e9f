using System.Collections.Generic;

namespace ModelCompiler.Compiler.Planning;

/// <summary>
/// Static memory planning: every activation buffer goes into one arena, placed first-fit by liveness so
/// buffers whose lifetimes do not overlap share memory. The block's steps run once per layer, and every
/// block buffer is written before it is read within an iteration, so per-iteration liveness is exact;
/// only the residual stream lives across iterations (it is pinned for the whole pass).
/// </summary>
internal static class MemoryPlanner
{
    /// <summary>Offsets are multiples of this many floats (64 bytes: a cache line, a Vector512).</summary>
    public const int AlignmentInFloats = 16;

    /// <summary>Sets every buffer's offset; returns the arena size in floats.</summary>
    public static int Place(IReadOnlyList<Buffer> buffers, IReadOnlyList<KernelStep> prologue, IReadOnlyList<KernelStep> block,
        IReadOnlyList<KernelStep> epilogue, Buffer pinned, int maxBatchTokens)
    {
        var first = new Dictionary<Buffer, int>();
        var last = new Dictionary<Buffer, int>();
        int time = 0;
        foreach (var steps in new[] { prologue, block, epilogue })
            foreach (var step in steps)
            {
                foreach (var b in Touched(step))
                {
                    if (!first.ContainsKey(b)) first[b] = time;
                    last[b] = time;
                }
                time++;
            }
        first[pinned] = 0;
        last[pinned] = time;

        var order = new List<Buffer>();
        foreach (var b in buffers) if (first.ContainsKey(b)) order.Add(b);
        // Earliest first, then largest first; ties keep declaration order (List.Sort is not stable, so compare indices).
        order.Sort((a, b) =>
        {
            int c = first[a].CompareTo(first[b]);
            if (c != 0) return c;
            c = b.Width.CompareTo(a.Width);
            return c != 0 ? c : IndexOf(buffers, a).CompareTo(IndexOf(buffers, b));
        });

        var placed = new List<Buffer>();
        int arenaSize = 0;
        foreach (var b in order)
        {
            int size = Align(maxBatchTokens * b.Width);
            int offset = 0;
            bool moved = true;
            while (moved)
            {
                moved = false;
                foreach (var p in placed)
                {
                    bool livesOverlap = first[p] <= last[b] && first[b] <= last[p];
                    int pSize = Align(maxBatchTokens * p.Width);
                    bool memoryOverlaps = p.OffsetInFloats < offset + size && offset < p.OffsetInFloats + pSize;
                    if (livesOverlap && memoryOverlaps)
                    {
                        offset = p.OffsetInFloats + pSize;
                        moved = true;
                    }
                }
            }
            b.OffsetInFloats = offset;
            placed.Add(b);
            if (offset + size > arenaSize) arenaSize = offset + size;
        }
        return arenaSize;
    }

    private static int IndexOf(IReadOnlyList<Buffer> buffers, Buffer b)
    {
        for (int i = 0; i < buffers.Count; i++) if (ReferenceEquals(buffers[i], b)) return i;
        return -1;
    }

    private static int Align(int floats) => (floats + AlignmentInFloats - 1) / AlignmentInFloats * AlignmentInFloats;

    /// <summary>Every buffer a step reads or writes.</summary>
    public static IEnumerable<Buffer> Touched(KernelStep step)
    {
        switch (step)
        {
            case EmbeddingStep s: yield return s.Output; break;
            case RmsNormStep s: yield return s.Input; yield return s.Output; break;
            case LinearStep s:
                yield return s.Input; yield return s.Output;
                if (s.Normalized is not null) yield return s.Normalized;
                break;
            case QkvStep s: yield return s.Input; yield return s.Qkv; yield return s.Normalized; break;
            case RopeStep s: yield return s.Buffer; break;
            case AttentionStep s:
                yield return s.Queries.Buffer; yield return s.Output;
                if (s.Keys is not null) yield return s.Keys.Buffer;
                if (s.Values is not null) yield return s.Values.Buffer;
                break;
            case SwiGluStep s: yield return s.GateUp; yield return s.Output; break;
            case ElementwiseStep s:
                yield return s.A; yield return s.Output;
                if (s.B is not null) yield return s.B;
                break;
            case CopyStep s: yield return s.Source; yield return s.Destination; break;
            case LogitsStep s: yield return s.Input; yield return s.Gathered; yield return s.Normalized; break;
        }
    }
}
