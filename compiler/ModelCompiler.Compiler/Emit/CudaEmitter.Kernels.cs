using System;
using System.Collections.Generic;
using ModelCompiler.Compiler.Description;
using ModelCompiler.Compiler.Graph;
using ModelCompiler.Compiler.Planning;

namespace ModelCompiler.Compiler.Emit;

internal sealed partial class CudaEmitter
{
    private static Arg ArenaArg(Planning.Buffer b) => new("Arena", b.OffsetInFloats);

    private Arg WeightArg(WeightRef w) => w.PerLayer ? new Arg("LayerWeight", w.Slot) : new Arg("Weight", _plan.TableIndex(w, 0));

    private static readonly Arg NumTokens = new("NumTokens");

    /// <summary>16-byte loads need a width and a buffer offset that are multiples of 4 floats.</summary>
    private static bool Vectorizable(int width, params Planning.Buffer[] buffers)
    {
        if (width % 4 != 0) return false;
        foreach (var b in buffers) if (b.OffsetInFloats % 4 != 0 || b.Width % 4 != 0) return false;
        return true;
    }

    /// <summary>A weight type a matrix can have at run time: its name (the kernel suffix), the library's MC_W_ constant and the C type of the pointer.</summary>
    private sealed record WeightType(string Name, string Macro, string CType)
    {
        public bool IsF32 => Name == "f32";
        public bool IsHalf => Name is "f16" or "bf16";
        public bool IsBlock => Name is "q8_0" or "q4_0";
        /// <summary>The kernel name for this type: the f32 kernel keeps the base name, the others add <c>_NAME</c>.</summary>
        public string Kernel(string baseName) => IsF32 ? baseName : baseName + "_" + Name;
    }

    private static readonly WeightType[] AllWeightTypes =
    {
        new("f32", "MC_W_F32", "float"), new("f16", "MC_W_F16", "uint16_t"), new("bf16", "MC_W_BF16", "uint16_t"),
        new("q8_0", "MC_W_Q8_0", "uint8_t"), new("q4_0", "MC_W_Q4_0", "uint8_t"),
    };

    /// <summary>The types a matrix whose rows hold <paramref name="rowLength"/> weights can have: block types need whole blocks of 32.</summary>
    private static IEnumerable<WeightType> WeightTypesFor(int rowLength)
    {
        foreach (var t in AllWeightTypes)
            if (!t.IsBlock || rowLength % 32 == 0) yield return t;
    }

    /// <summary>
    /// Whether type <paramref name="t"/> takes the 16-byte path: f32 as decided by <see cref="Vectorizable"/>; f16/bf16
    /// also need rows and parts of whole 8-weight groups (16-byte aligned); the block types read x by element.
    /// </summary>
    private static bool VecFor(WeightType t, bool vecF32, int rowLength, int partLength) =>
        vecF32 && (!t.IsHalf || (rowLength % 8 == 0 && partLength % 8 == 0));

    private static string TypeNote(WeightType t) => t.IsF32 ? "" : $"; weights {t.Name} ({(t.IsHalf ? "raw bits" : "GGUF blocks")}), selected at run time by the bound matrix's type";

    private void EmitStep(KernelStep step, CudaStageName stage)
    {
        string name = step.KernelName();
        int bs = _plan.Model.Runtime.KvBlockSize;
        string tiles = $"ceil(T / {Int(TokensPerTile)})";
        switch (step)
        {
            case EmbeddingStep s:
                foreach (var t in WeightTypesFor(s.Dim))
                    Kernel(t.Kernel(name), s, "CpuKernels.Embedding (an id outside the vocabulary gives a zero row)" + TypeNote(t),
                        $"const int* __restrict__ tokenIds, const {t.CType}* __restrict__ table, float* __restrict__ x, int numTokens",
                        $"const int t = blockIdx.y;\nconst int id = tokenIds[t];\nconst bool valid = id >= 0 && id < {Int(_h.VocabSize)};\n" +
                        (t.IsF32
                            ? $"for (int c = threadIdx.x; c < {Int(s.Dim)}; c += blockDim.x) x[(int64_t)t * {Int(s.Dim)} + c] = valid ? table[(int64_t)id * {Int(s.Dim)} + c] : 0.0f;"
                            : $"const uint8_t* row = (const uint8_t*)table + (int64_t)(valid ? id : 0) * mc_row_bytes<{t.Macro}, {Int(s.Dim)}>();\n" +
                              $"for (int c = threadIdx.x; c < {Int(s.Dim)}; c += blockDim.x) x[(int64_t)t * {Int(s.Dim)} + c] = valid ? mc_weight_at<{t.Macro}>(row, c) : 0.0f;"),
                        "grid (1, T, 1), block 128");
                Add(name, stage, 1, CudaCountName.Tokens, 1, 1, 128, 1, new Arg("TokenIds"), WeightArg(s.Table), ArenaArg(s.Output), NumTokens);
                break;

            case RmsNormStep s:
                Kernel(name, s, "CpuKernels.RmsNorm",
                    "const float* __restrict__ x, const float* __restrict__ g, float* __restrict__ y, int numTokens",
                    $"__shared__ float red[{Int(ElementwiseThreads / 32)}];\nconst float* xr = x + (int64_t)blockIdx.y * {Int(s.Width)};\nfloat* yr = y + (int64_t)blockIdx.y * {Int(s.Width)};\n" +
                    $"float sum = 0.0f;\nfor (int c = threadIdx.x; c < {Int(s.Width)}; c += {Int(ElementwiseThreads)}) sum += xr[c] * xr[c];\n" +
                    $"const float inv = 1.0f / sqrtf(mc_block_sum<{Int(ElementwiseThreads)}>(sum, red) / {F(s.Width)} + {F(_h.NormEps)});\n" +
                    $"for (int c = threadIdx.x; c < {Int(s.Width)}; c += {Int(ElementwiseThreads)}) yr[c] = xr[c] * inv * g[c];",
                    $"grid (1, T, 1), block {Int(ElementwiseThreads)}");
                Add(name, stage, 1, CudaCountName.Tokens, 1, 1, ElementwiseThreads, ArenaArg(s.Input), WeightArg(s.Norm), ArenaArg(s.Output), NumTokens);
                break;

            case LinearStep s:
                EmitLinear(s, name, stage, tiles);
                break;

            case QkvStep s:
            {
                bool vec = Vectorizable(s.Dim, s.Input);
                bool bias = s.Bias is not null;
                int pairs = (s.QDim + 2 * s.KvDim) / 2;
                uint gridX = (uint)Blocks(pairs, ProjectionThreads / 32);
                // With a q|k|v bias (Qwen2) the kernel takes it after w and adds it before the rotation; without one
                // the signature has no bias parameter, so models without bias keep their kernels unchanged.
                foreach (var t in WeightTypesFor(s.Dim))
                    Kernel(t.Kernel(name), s, "CpuKernels.RmsNormQkvRopeKvWrite" + (bias ? " with AddBias between the projection and RoPE" : "") + "; one warp per rotation pair of rows" + TypeNote(t),
                        $"const float* __restrict__ x, const float* __restrict__ g, const {t.CType}* __restrict__ w, " + (bias ? "const float* __restrict__ bias, " : "") + "float* __restrict__ qkv, " +
                        "const int* __restrict__ positions, const int* __restrict__ sequenceOfToken, const int* __restrict__ blockTables, int blockTableStride, " +
                        "mc_kv_t* __restrict__ keyCache, mc_kv_t* __restrict__ valueCache, int numTokens",
                        $"mc_qkv_rope_kvwrite<{t.Macro}, {Int(s.Dim)}, {Int(s.QDim)}, {Int(s.KvDim)}, {Int(_h.HeadDim)}, {Int(bs)}, {Int(TokensPerTile)}, {Bool(VecFor(t, vec, s.Dim, s.Dim))}, {Bool(_h.RopeStyle == RopeStyle.Interleaved)}, {Bool(bias)}>(\n" +
                        $"    x, g, {F(_h.NormEps)}, w, {(bias ? "bias" : "(const float*)0")}, qkv, positions, sequenceOfToken, blockTables, blockTableStride, keyCache, valueCache, numTokens, {D(_h.RopeTheta)});",
                        $"grid ({Int((int)gridX)}, {tiles}, 1), block {Int(ProjectionThreads)}; RoPE {(_h.RopeStyle == RopeStyle.Interleaved ? "interleaved" : "half")}, theta {D(_h.RopeTheta)}");
                var qkvArgs = new List<Arg> { ArenaArg(s.Input), WeightArg(s.Norm), WeightArg(s.Wqkv) };
                if (s.Bias is not null) qkvArgs.Add(WeightArg(s.Bias));
                qkvArgs.AddRange(new[] { ArenaArg(s.Qkv), new Arg("Positions"), new Arg("SequenceOfToken"), new Arg("BlockTables"), new Arg("BlockTableStride"),
                    new Arg("KeyCache"), new Arg("ValueCache"), NumTokens });
                Add(name, stage, gridX, CudaCountName.Tokens, TokensPerTile, 1, ProjectionThreads, 2, qkvArgs.ToArray());
                break;
            }

            case RopeStep s:
            {
                int half = _h.HeadDim / 2;
                bool interleaved = _h.RopeStyle == RopeStyle.Interleaved;
                Kernel(name, s, "CpuKernels.Rope; one thread per rotation pair",
                    "float* __restrict__ rows, const int* __restrict__ positions, int numTokens",
                    $"const int t = blockIdx.y;\nfor (int p = threadIdx.x; p < {Int(s.Width / 2)}; p += blockDim.x)\n{{\n" +
                    $"    const int head = p / {Int(half)}, i = p % {Int(half)};\n" +
                    $"    float* r0 = rows + (int64_t)t * {Int(s.Width)} + head * {Int(_h.HeadDim)} + {(interleaved ? "2 * i" : "i")};\n" +
                    $"    float* r1 = r0 + {(interleaved ? "1" : Int(half))};\n" +
                    $"    const double angle = (double)positions[t] * pow({D(_h.RopeTheta)}, -2.0 * (double)i / {D(_h.HeadDim)});\n" +
                    "    const float c = (float)cos(angle), s = (float)sin(angle), a = *r0, b = *r1;\n" +
                    "    *r0 = a * c - b * s;\n    *r1 = a * s + b * c;\n}",
                    "grid (1, T, 1), block 128");
                Add(name, stage, 1, CudaCountName.Tokens, 1, 1, 128, ArenaArg(s.Buffer), new Arg("Positions"), NumTokens);
                break;
            }

            case AttentionStep s:
                EmitAttention(s, name, stage);
                break;

            case SwiGluStep s:
                Elementwise(name, s, stage, s.Hidden, "CpuKernels.SwiGlu",
                    "const float* __restrict__ gateUp, float* __restrict__ y, int numTokens",
                    $"const float* row = gateUp + (int64_t)blockIdx.y * {Int(2 * s.Hidden)};\nconst float gate = row[c];\n" +
                    $"y[(int64_t)blockIdx.y * {Int(s.Hidden)} + c] = gate / (1.0f + expf(-gate)) * row[{Int(s.Hidden)} + c];",
                    ArenaArg(s.GateUp), ArenaArg(s.Output), NumTokens);
                break;

            case ElementwiseStep s:
            {
                string at = $"(int64_t)blockIdx.y * {Int(s.Width)} + c";
                if (s.Op == OpKind.Silu)
                    Elementwise(name, s, stage, s.Width, "CpuKernels.Silu", "const float* a, float* y, int numTokens",
                        $"const float v = a[{at}];\ny[{at}] = v / (1.0f + expf(-v));", ArenaArg(s.A), ArenaArg(s.Output), NumTokens);
                else
                    Elementwise(name, s, stage, s.Width, s.Op == OpKind.Add ? "CpuKernels.Add" : "CpuKernels.Mul", "const float* a, const float* b, float* y, int numTokens",
                        $"y[{at}] = a[{at}] {(s.Op == OpKind.Add ? "+" : "*")} b[{at}];", ArenaArg(s.A), ArenaArg(s.B!), ArenaArg(s.Output), NumTokens);
                break;
            }

            case CopyStep s:
            {
                string at = $"(int64_t)blockIdx.y * {Int(s.Width)} + c";
                Elementwise(name, s, stage, s.Width, "a copy", "const float* __restrict__ source, float* __restrict__ destination, int numTokens",
                    $"destination[{at}] = source[{at}];", ArenaArg(s.Source), ArenaArg(s.Destination), NumTokens);
                break;
            }

            case LogitsStep s:
            {
                bool vec = Vectorizable(s.Dim, s.Input);
                uint gridX = (uint)Blocks(s.VocabSize, ProjectionThreads / 32);
                foreach (var t in WeightTypesFor(s.Dim))
                    Kernel(t.Kernel(name), s, "CpuKernels.GatherRows + RmsNormLinear; the gather is an index into x, the norm folded into the dot products" + TypeNote(t),
                        $"const float* __restrict__ x, const int* __restrict__ logitsTokenIndices, const float* __restrict__ g, const {t.CType}* __restrict__ w, float* __restrict__ logits, int numLogits",
                        $"mc_matvec<{t.Macro}, {Int(s.Dim)}, {Int(s.VocabSize)}, {Int(TokensPerTile)}, 1, {Bool(VecFor(t, vec, s.Dim, s.Dim))}, true, false>(x, logitsTokenIndices, g, {F(_h.NormEps)}, w, logits, numLogits);",
                        $"grid ({Int((int)gridX)}, ceil(numLogits / {Int(TokensPerTile)}), 1), block {Int(ProjectionThreads)}");
                Add(name, stage, gridX, CudaCountName.Logits, TokensPerTile, 1, ProjectionThreads, 3, ArenaArg(s.Input), new Arg("LogitsTokenIndices"), WeightArg(s.Norm), WeightArg(s.Head),
                    new Arg("Logits"), new Arg("NumLogits"));
                break;
            }

            default:
                throw new InvalidOperationException($"The CUDA emitter has no kernel for {step.GetType().Name}.");
        }
    }

    private void Elementwise(string name, KernelStep step, CudaStageName stage, int width, string semantics, string parameters, string body, params Arg[] args)
    {
        uint gridX = (uint)Blocks(width, ElementwiseThreads);
        Kernel(name, step, semantics, parameters,
            $"const int c = blockIdx.x * {Int(ElementwiseThreads)} + threadIdx.x;\nif (c >= {Int(width)}) return;\n" + body,
            $"grid ({Int((int)gridX)}, T, 1), block {Int(ElementwiseThreads)}");
        Add(name, stage, gridX, CudaCountName.Tokens, 1, 1, ElementwiseThreads, args);
    }

    private void EmitLinear(LinearStep s, string name, CudaStageName stage, string tiles)
    {
        bool norm = s.Norm is not null;
        bool vec = Vectorizable(s.InDim, s.Input);
        int rowBlocks = Blocks(s.OutDim, ProjectionThreads / 32);
        // Split-K where too few row blocks would leave SMs idle (an H100 has 132): only when accumulating
        // into the residual, whose atomicAdds then need no zeroed output. Each part keeps whole 128-column
        // strides so the 16-byte loads stay aligned.
        int kSplit = 1;
        if (s.AddToOutput && !norm && rowBlocks < 120 && s.InDim >= 1024)
            foreach (int k in new[] { 4, 2 })
                if (s.InDim % (k * (vec ? 128 : 32)) == 0 && rowBlocks * k <= 264) { kSplit = k; break; }
        string baseSemantics = norm ? "CpuKernels.RmsNormLinear; the norm folded into the dot products"
            : s.AddToOutput ? "CpuKernels.LinearAddResidual" : "CpuKernels.Linear";
        string semantics = baseSemantics + "; one warp per output row" + (kSplit > 1 ? $", split-K in {Int(kSplit)} parts accumulated with atomicAdd" : "");
        foreach (var t in WeightTypesFor(s.InDim))
            Kernel(t.Kernel(name), s, semantics + TypeNote(t),
                $"const float* __restrict__ x, const float* __restrict__ g, const {t.CType}* __restrict__ w, float* __restrict__ y, int numTokens",
                $"mc_matvec<{t.Macro}, {Int(s.InDim)}, {Int(s.OutDim)}, {Int(TokensPerTile)}, {Int(kSplit)}, {Bool(VecFor(t, vec, s.InDim, s.InDim / kSplit))}, {Bool(norm)}, {Bool(s.AddToOutput)}>(x, (const int*)0, g, {F(_h.NormEps)}, w, y, numTokens);",
                $"grid ({Int(rowBlocks)}, {tiles}, {Int(kSplit)}), block {Int(ProjectionThreads)}");
        // A projection without a norm still takes g (a null pointer): one signature for every projection.
        var args = new[] { ArenaArg(s.Input), s.Norm is null ? new Arg("Null") : WeightArg(s.Norm), WeightArg(s.Weight), ArenaArg(s.Output), NumTokens };
        // The prefill variant on tensor cores: f16/bf16 matrices with rows of whole 32-weight chunks only.
        Launch? prefill = null;
        if (s.InDim % 32 == 0)
        {
            string mma = name + "_mma";
            int mmaBlocks = Blocks(s.OutDim, MmaRows);
            foreach (var t in AllWeightTypes)
            {
                if (!t.IsHalf) continue;
                Kernel(t.Kernel(mma), s, baseSemantics + $"; prefill on tensor cores (mma.sync m16n8k16, f32 accumulation), x as a hi + lo pair of {t.Name}, " +
                    $"{Int(MmaRows)} rows × {Int(MmaTokens)} tokens per block" + TypeNote(t),
                    $"const float* __restrict__ x, const float* __restrict__ g, const {t.CType}* __restrict__ w, float* __restrict__ y, int numTokens",
                    $"mc_gemm_mma<{t.Macro}, {Int(s.InDim)}, {Int(s.OutDim)}, {Bool(vec)}, {Bool(norm)}, {Bool(s.AddToOutput)}>(x, g, {F(_h.NormEps)}, w, y, numTokens);",
                    $"grid ({Int(mmaBlocks)}, ceil(T / {Int(MmaTokens)}), 1), block {Int(MmaThreads)}; instead of {name} when T >= {Int(PrefillMinTokens)}");
            }
            prefill = new Launch(mma, stage, (uint)mmaBlocks, CudaCountName.Tokens, MmaTokens, 1, MmaThreads, args, 2);
        }
        _launches.Add(new Launch(name, stage, (uint)rowBlocks, CudaCountName.Tokens, TokensPerTile, (uint)kSplit, ProjectionThreads, args, 2, prefill));
        // A projection's own bias ('bias' on a linear op) as a broadcast add after it, so that every variant
        // (split-K atomics, the tensor-core GEMM, += into the residual) stays as it is; as on the CPU (AddBias after the product).
        if (s.Bias is not null)
            Elementwise(name + "_bias", s, stage, s.OutDim, "CpuKernels.AddBias (the projection's bias, after it)",
                "float* __restrict__ y, const float* __restrict__ bias, int numTokens",
                $"y[(int64_t)blockIdx.y * {Int(s.OutDim)} + c] += bias[c];", ArenaArg(s.Output), WeightArg(s.Bias), NumTokens);
    }

    private void EmitAttention(AttentionStep s, string name, CudaStageName stage)
    {
        int bs = _plan.Model.Runtime.KvBlockSize;
        int numSplits = Blocks(_h.MaxSeqLen, AttentionChunk);
        int kvDim = _h.KvDim;
        _scratchFloats = Math.Max(_scratchFloats, _plan.Model.Runtime.MaxBatchTokens * _h.NumHeads * numSplits * (_h.HeadDim + 2));
        var cacheArgs = new[] { new Arg("Positions"), new Arg("SequenceOfToken"), new Arg("BlockTables"), new Arg("BlockTableStride"), new Arg("KeyCache"), new Arg("ValueCache") };
        if (s.Keys is not null && s.Values is not null)
        {
            string writer = name + "_kvwrite";
            Kernel(writer, s, "CpuKernels.KvWrite (this step's keys and values into their cache slots)",
                "const float* __restrict__ k, const float* __restrict__ v, const int* __restrict__ positions, const int* __restrict__ sequenceOfToken, " +
                "const int* __restrict__ blockTables, int blockTableStride, mc_kv_t* __restrict__ keyCache, mc_kv_t* __restrict__ valueCache, int numTokens",
                $"const int t = blockIdx.y;\nconst int64_t slot = mc_cache_slot<{Int(bs)}, {Int(kvDim)}>(blockTables, blockTableStride, sequenceOfToken[t], positions[t]);\n" +
                $"for (int c = threadIdx.x; c < {Int(kvDim)}; c += blockDim.x)\n{{\n" +
                $"    keyCache[slot + c] = mc_to_kv(k[(int64_t)t * {Int(s.Keys.Buffer.Width)} + {Int(s.Keys.ColumnOffset)} + c]);\n" +
                $"    valueCache[slot + c] = mc_to_kv(v[(int64_t)t * {Int(s.Values.Buffer.Width)} + {Int(s.Values.ColumnOffset)} + c]);\n}}",
                "grid (1, T, 1), block 128");
            var args = new System.Collections.Generic.List<Arg> { ArenaArg(s.Keys.Buffer), ArenaArg(s.Values.Buffer) };
            args.AddRange(cacheArgs);
            args.Add(NumTokens);
            Add(writer, stage, 1, CudaCountName.Tokens, 1, 1, 128, args.ToArray());
        }

        string partial = name + "_partial";
        Kernel(partial, s, $"CpuKernels.PagedAttention, pass 1 of flash decoding: {Int(numSplits)} splits of {Int(AttentionChunk)} positions, one thread per position, through the block table",
            "const float* __restrict__ q, const int* __restrict__ positions, const int* __restrict__ sequenceOfToken, const int* __restrict__ blockTables, int blockTableStride, " +
            "const mc_kv_t* __restrict__ keyCache, const mc_kv_t* __restrict__ valueCache, float* __restrict__ partial",
            $"mc_attention_partial<{Int(_h.NumHeads)}, {Int(_h.NumKvHeads)}, {Int(_h.HeadDim)}, {Int(bs)}, {Int(AttentionChunk)}, {Int(numSplits)}, {Int(s.Queries.Buffer.Width)}, {Int(s.Queries.ColumnOffset)}>(\n" +
            "    q, positions, sequenceOfToken, blockTables, blockTableStride, keyCache, valueCache, partial);",
            $"grid ({Int(_h.NumHeads)}, T, {Int(numSplits)}), block {Int(AttentionChunk)}; scratch [T, {Int(_h.NumHeads)}, {Int(numSplits)}, {Int(_h.HeadDim + 2)}] f32");
        var partialArgs = new System.Collections.Generic.List<Arg> { ArenaArg(s.Queries.Buffer) };
        partialArgs.AddRange(cacheArgs);
        partialArgs.Add(new Arg("Scratch", 0));
        Add(partial, stage, (uint)_h.NumHeads, CudaCountName.Tokens, 1, (uint)numSplits, AttentionChunk, partialArgs.ToArray());

        string combine = name + "_combine";
        int threads = Math.Min(1024, Blocks(_h.HeadDim, 32) * 32);
        Kernel(combine, s, "CpuKernels.PagedAttention, pass 2 of flash decoding: the splits rescaled to their common max and normalised",
            "const float* __restrict__ partial, float* __restrict__ output",
            $"mc_attention_combine<{Int(_h.NumHeads)}, {Int(_h.HeadDim)}, {Int(numSplits)}>(partial, output);",
            $"grid ({Int(_h.NumHeads)}, T, 1), block {Int(threads)}");
        Add(combine, stage, (uint)_h.NumHeads, CudaCountName.Tokens, 1, 1, (uint)threads, new Arg("Scratch", 0), ArenaArg(s.Output));
    }

    private void EmitSampler()
    {
        int idBits = 1;
        while ((1 << idBits) <= _h.VocabSize) idBits++;
        string shapes = $"logits [numLogits, {Int(_h.VocabSize)}] f32, params [numLogits, 6] i32 -> token ids [numLogits] i32";
        string name = KernelStep.HashedName("sample_tokens", shapes);
        Kernel(name, null,
            "sampling on the device with the draw contract of Sampler.Sample(logits, uniform), one block per row\n" +
            "//   greedy rows (params mode 0): the argmax, ties to the lower id\n" +
            "//   sampled rows: weights exp((logit - max) / T) in whole 2^-40 units, top-k, the top-p nucleus, and the first token whose running\n" +
            "//   mass exceeds floor(uniform * mass / 2^64), the uniform drawn on the host by the sequence's own generator\n" +
            $"//   bound: {Int(SampleCandidates)} candidates; a larger top-k or top-p nucleus gives a negative id and the host samples that row\n" +
            $"//   {shapes}",
            "const float* __restrict__ logits, const int* __restrict__ params, int* __restrict__ tokens, int numLogits",
            $"mc_sample<{Int(_h.VocabSize)}, {Int(SampleThreads)}, {Int(SampleCandidates)}, {Int(idBits)}>(logits, params, tokens);",
            $"grid (1, numLogits, 1), block {Int(SampleThreads)}");
        Add(name, CudaStageName.Sampling, 1, CudaCountName.Logits, 1, 1, SampleThreads, new Arg("Logits"), new Arg("SamplingParams"), new Arg("SampledTokens"), new Arg("NumLogits"));
    }
}
