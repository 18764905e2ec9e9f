using System;
using System.Diagnostics;
using System.IO;

namespace ModelCompiler.Runtime.Diagnostics;

/// <summary>Resident memory of this process, from <c>/proc/self/status</c> on Linux.</summary>
public static class ProcessMemory
{
    private const string StatusPath = "/proc/self/status";

    /// <summary>Peak resident set size in bytes since start (or since <see cref="TryResetPeak"/>): <c>VmHWM</c>, else <see cref="Process.PeakWorkingSet64"/>.</summary>
    public static long PeakResidentBytes() => ReadStatusKilobytes("VmHWM:") is long kb ? kb * 1024 : CurrentProcessPeak();

    /// <summary>Resident set size in bytes now: <c>VmRSS</c>, else <see cref="Process.WorkingSet64"/>.</summary>
    public static long CurrentResidentBytes()
    {
        if (ReadStatusKilobytes("VmRSS:") is long kb) return kb * 1024;
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }

    /// <summary>
    /// Resets the peak (<c>VmHWM</c>) to the current RSS by writing 5 to <c>/proc/self/clear_refs</c>
    /// (Linux 4.0 and later), so a later <see cref="PeakResidentBytes"/> covers only what follows. False
    /// where that is not possible.
    /// </summary>
    public static bool TryResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return false;
        }
    }

    private static long CurrentProcessPeak()
    {
        using var process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }

    private static long? ReadStatusKilobytes(string key)
    {
        try
        {
            if (!File.Exists(StatusPath)) return null;
            foreach (string line in File.ReadLines(StatusPath))
            {
                if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
                // "VmHWM:	  123456 kB"
                var fields = line.Substring(key.Length).Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return fields.Length > 0 && long.TryParse(fields[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long kb) ? kb : null;
            }
        }
        catch (IOException)
        {
        }
        return null;
    }
}
