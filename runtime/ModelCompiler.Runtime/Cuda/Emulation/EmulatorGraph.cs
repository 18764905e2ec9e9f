using System.Collections.Generic;

namespace ModelCompiler.Runtime.Cuda.Emulation;

/// <summary>A captured launch: everything needed to run it again.</summary>
internal sealed record RecordedLaunch(EmulatorKernel Kernel, Dim3 Grid, Dim3 Block, int SharedMemoryBytes, KernelArg[] Args);

/// <summary>The emulator's CUDA graph: the launches recorded between BeginCapture and EndCapture, in order.</summary>
internal sealed class EmulatorGraph(IReadOnlyList<RecordedLaunch> launches) : ICudaGraph
{
    /// <summary>The recorded launches.</summary>
    public IReadOnlyList<RecordedLaunch> Launches { get; } = launches;

    /// <summary>True once disposed.</summary>
    public bool IsDisposed { get; private set; }

    public void Dispose() => IsDisposed = true;
}
