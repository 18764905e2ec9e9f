using System;
using System.Runtime.InteropServices;

namespace ModelCompiler.Runtime.Interop;

/// <summary>
/// Native memory for large, long-lived buffers that are streamed every forward pass (packed and converted weights),
/// placed so that Linux can back it with 2 MiB transparent huge pages.
/// </summary>
/// <remarks>
/// Why: a batch-1 decode step reads every weight once, tens of MB in one stream. On 4 KiB pages that is a TLB miss
/// every 4 KiB, and inside a virtual machine each miss is a two-level (nested) page walk; on 2 MiB pages the whole
/// model needs a few dozen TLB entries. Most distributions set transparent huge pages to <c>madvise</c>, so the
/// buffer must ask: it is allocated 2 MiB-aligned and marked with <c>madvise(MADV_HUGEPAGE)</c> before anything
/// touches it, so the first-touch page faults already take huge pages. Elsewhere (other systems, or the call
/// fails) the memory is ordinary: the hint changes speed only, never contents.
/// </remarks>
internal static unsafe partial class LargePages
{
    /// <summary>Huge page size (x86-64 Linux).</summary>
    public const nuint HugePageSizeInBytes = 2 << 20;
    /// <summary>Below this size a buffer is allocated with the ordinary 64-byte alignment (half a huge page would be wasted).</summary>
    public const nuint MinSizeInBytes = 4 << 20;
    private const int MadvHugePage = 14;

    /// <summary>
    /// Allocates <paramref name="sizeInBytes"/> bytes (at least 64-byte aligned; 2 MiB-aligned and marked for huge pages
    /// from <see cref="MinSizeInBytes"/> on Linux). Free with <see cref="Free"/> or <see cref="NativeMemory.AlignedFree"/>.
    /// </summary>
    public static void* Allocate(nuint sizeInBytes)
    {
        if (sizeInBytes < MinSizeInBytes || !OperatingSystem.IsLinux()) return NativeMemory.AlignedAlloc(Math.Max(sizeInBytes, 1), 64);
        // Rounded up to whole huge pages so the tail is not a 4 KiB-page remainder.
        nuint size = (sizeInBytes + HugePageSizeInBytes - 1) & ~(HugePageSizeInBytes - 1);
        void* p = NativeMemory.AlignedAlloc(size, HugePageSizeInBytes);
        Advise(p, size);
        return p;
    }

    /// <summary>Frees memory from <see cref="Allocate"/>.</summary>
    public static void Free(void* p) => NativeMemory.AlignedFree(p);

    /// <summary>
    /// Marks the whole huge pages inside <c>[p, p + sizeInBytes)</c> for transparent huge pages; returns whether the
    /// kernel accepted the hint. Only a hint: failure (no THP support, not Linux) leaves the memory as it was.
    /// </summary>
    public static bool Advise(void* p, nuint sizeInBytes)
    {
        if (!OperatingSystem.IsLinux()) return false;
        nuint start = ((nuint)p + HugePageSizeInBytes - 1) & ~(HugePageSizeInBytes - 1);
        nuint end = ((nuint)p + sizeInBytes) & ~(HugePageSizeInBytes - 1);
        if (end <= start) return false;
        try
        {
            return Madvise((void*)start, end - start, MadvHugePage) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);
}
