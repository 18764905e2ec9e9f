using System;
using System.CommandLine;
using ModelCompiler.Runtime.Cuda;
using ModelCompiler.Runtime.Cuda.Emulation;
using ModelCompiler.Runtime.Engine;
using ModelCompiler.Runtime.Interop.Cuda;
using ModelCompiler.Runtime.Weights;

namespace ModelCompiler.Runtime.Hosting;

/// <summary>
/// Where the model runs, after <c>--device</c> was resolved: <see cref="Device"/> is null for the CPU.
/// <see cref="Note"/>, when not null, is the one line saying why <c>auto</c> fell back to the CPU; the
/// commands print it once the weights opened, so a bad weights file still fails with one line.
/// </summary>
internal sealed record DeviceChoice(ICudaDevice? Device, string? Note)
{
    /// <summary>Creates the runner: the CPU engine, or <see cref="CudaModelRunner"/> owning <see cref="Device"/>.</summary>
    /// <exception cref="ModelLoadException">The kernels could not be compiled or loaded, or a driver call failed (one line, exit code 2).</exception>
    public IModelRunner CreateRunner(CompiledModel engine, IWeightSource source)
    {
        if (Device is null) return new ModelRunner(engine, source);
        string name = Device.Name;
        try
        {
            return new CudaModelRunner(Device, engine, source, ownsDevice: true);
        }
        catch (Exception e) when (e is CudaException or NvrtcCompileException or EmulatorCompileException or NotSupportedException)
        {
            throw new ModelLoadException($"{name}: {e.Message.Split('\n')[0].Trim()}");
        }
    }
}

/// <summary>
/// <c>--device auto|cpu|cuda</c>, shared by generate and bench: auto runs on the first CUDA GPU when one is
/// usable (driver, device, NVRTC, and a CUDA plan in the engine), else on the CPU with one line saying why;
/// cuda fails with one line and exit code 2 when no GPU is usable; cpu never probes. The hidden value
/// <c>emulator</c> runs the generated CUDA source on the CPU emulator (g++), for tests.
/// </summary>
internal sealed class DeviceOptions
{
    public DeviceOptions()
    {
        Device = new Option<string>("--device")
        {
            Description = "Where to run: auto (a CUDA GPU when one is usable, else the CPU), cpu or cuda.",
            DefaultValueFactory = _ => "auto",
        };
    }

    public Option<string> Device { get; }

    /// <summary>Adds the option to <paramref name="command"/>.</summary>
    public void AddTo(Command command) => command.Options.Add(Device);

    /// <summary>
    /// Resolves the option for <paramref name="engine"/>; on failure <paramref name="error"/> is one line
    /// (<c>--device cuda: reason</c>) for the user.
    /// </summary>
    public bool TryResolve(ParseResult result, CompiledModel engine, out DeviceChoice choice, out string error)
    {
        string value = (result.GetValue(Device) ?? "auto").Trim().ToLowerInvariant();
        choice = new DeviceChoice(null, null);
        error = "";
        switch (value)
        {
            case "cpu":
                return true;
            case "emulator":
                if (engine.CudaPlan is null) { error = $"--device emulator: {engine.Config.Name} was compiled without a CUDA plan"; return false; }
                choice = new DeviceChoice(new CudaEmulatorDevice(), null);
                return true;
            case "auto":
            case "cuda":
                string reason;
                if (engine.CudaPlan is null)
                    reason = $"{engine.Config.Name} was compiled without a CUDA plan";
                else if (CudaDriverDevice.TryCreate(out CudaDriverDevice? gpu, out reason) && gpu is not null)
                {
                    choice = new DeviceChoice(gpu, null);
                    return true;
                }
                if (value == "cuda")
                {
                    error = "--device cuda: " + reason;
                    return false;
                }
                choice = new DeviceChoice(null, $"running on the CPU: {reason}");
                return true;
            default:
                error = $"--device must be auto, cpu or cuda; got '{value}'";
                return false;
        }
    }
}
