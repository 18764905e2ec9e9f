namespace ModelCompiler.Compiler.Emit;

internal sealed partial class CudaEmitter
{
    /// <summary>
    /// The prelude: what NVRTC lacks without headers (fixed-width ints, <c>MC_EXPORT</c>), then every use of
    /// inline PTX behind a macro with a portable definition. The emulator defines <c>MC_EMULATION</c> and the
    /// CUDA built-ins itself (threadIdx, __syncthreads, shuffles, atomics, math); under it, and whenever
    /// <c>MC_USE_PTX</c> is not defined, the portable definitions are used, so g++ compiles the same text.
    /// </summary>
    internal const string Prelude = @"// ---- prelude: self-contained (no header files); NVRTC and the g++ emulator (MC_EMULATION) both compile it ----
#ifndef MC_EMULATION
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
// Under NVRTC a kernel needs no launcher; the emulator defines MC_EXPORT to emit mc_launch_NAME.
#define MC_EXPORT(name)
#define MC_ALIGN16 __align__(16)
#ifndef MC_NO_PTX
#define MC_USE_PTX 1
#endif
#else
#define MC_ALIGN16 alignas(16)
#endif

// Four floats loaded or stored as one 16-byte access (rows are 16-byte aligned where it is used).
struct MC_ALIGN16 mc_float4 { float x, y, z, w; };

// Read-only (non-coherent) global loads: weights and activations that no kernel writes while it runs.
#ifdef MC_USE_PTX
__device__ __forceinline__ mc_float4 mc_ldg_f4(const float* p)
{
    mc_float4 v;
    asm volatile(""ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4];"" : ""=f""(v.x), ""=f""(v.y), ""=f""(v.z), ""=f""(v.w) : ""l""(p));
    return v;
}
#define MC_LDG_F4(p) mc_ldg_f4(p)
#else
#define MC_LDG_F4(p) (*(const mc_float4*)(p))
#endif

// Sixteen bytes (8 halves, or 16 bytes of quants) loaded as one read-only access (16-byte aligned).
struct MC_ALIGN16 mc_uint4 { uint32_t x, y, z, w; };
#ifdef MC_USE_PTX
__device__ __forceinline__ mc_uint4 mc_ldg_u4(const void* p)
{
    mc_uint4 v;
    asm volatile(""ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"" : ""=r""(v.x), ""=r""(v.y), ""=r""(v.z), ""=r""(v.w) : ""l""(p));
    return v;
}
#define MC_LDG_U4(p) mc_ldg_u4(p)
#else
#define MC_LDG_U4(p) (*(const mc_uint4*)(p))
#endif

// f16 and bf16 as raw bits (uint16_t) with conversions: cvt on the GPU, bit arithmetic elsewhere.
#ifdef MC_USE_PTX
__device__ __forceinline__ float mc_f16_to_f32(uint16_t h)
{
    float f;
    asm(""cvt.f32.f16 %0, %1;"" : ""=f""(f) : ""h""(h));
    return f;
}
#define MC_F16_TO_F32(h) mc_f16_to_f32(h)
#else
__device__ __forceinline__ float mc_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
    if (exponent == 0x1fu) bits = sign | 0x7f800000u | (mantissa << 13);
    else if (exponent != 0) bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    else if (mantissa == 0) bits = sign;
    else
    {
        exponent = 113u;
        while ((mantissa & 0x400u) == 0) { mantissa <<= 1; exponent--; }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    union { uint32_t u; float f; } c; c.u = bits;
    return c.f;
}
#define MC_F16_TO_F32(h) mc_f16_to_f32(h)
#endif
__device__ __forceinline__ float mc_bf16_to_f32(uint16_t b)
{
    union { uint32_t u; float f; } c; c.u = (uint32_t)b << 16;
    return c.f;
}
#define MC_BF16_TO_F32(b) mc_bf16_to_f32(b)
// ---- end of prelude ----
";

    /// <summary>
    /// Device templates the kernels instantiate with the model's constants. Every kernel's semantics are
    /// those of the CPU kernel named in its comment (runtime/ModelCompiler.Runtime/Kernels).
    /// </summary>
    internal const string Library = @"// ---- library: device templates instantiated by the kernels below with the model's constants ----
#define MC_FULL_MASK 0xffffffffu
// A finite stand-in for -infinity: exp(MC_NO_SCORE - m) is 0 for any real score m, without INFINITY.
#define MC_NO_SCORE (-3.0e38f)

__device__ __forceinline__ float mc_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MC_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float mc_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(MC_FULL_MASK, v, o));
    return v;
}

// Sum over a block of NT threads (a multiple of 32), returned to every thread; red holds NT/32 floats.
template <int NT>
__device__ __forceinline__ float mc_block_sum(float v, float* red)
{
    v = mc_warp_sum(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < NT / 32; i++) total += red[i];
    return total;
}

template <int NT>
__device__ __forceinline__ float mc_block_max(float v, float* red)
{
    v = mc_warp_max(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = red[0];
    for (int i = 1; i < NT / 32; i++) m = fmaxf(m, red[i]);
    return m;
}

// Σ_i w[i] · x[i] (· g[i] when NORM) over columns [k0, k0 + KLEN) by one warp's lane; VEC: 16-byte loads.
template <int KLEN, bool VEC, bool NORM>
__device__ __forceinline__ float mc_lane_dot(const float* __restrict__ w, const float* __restrict__ x, const float* __restrict__ g, int k0, int lane)
{
    float acc = 0.0f;
    if (VEC)
    {
#pragma unroll 4
        for (int i = k0 + lane * 4; i < k0 + KLEN; i += 128)
        {
            mc_float4 wv = MC_LDG_F4(w + i), xv = MC_LDG_F4(x + i);
            if (NORM) { mc_float4 gv = MC_LDG_F4(g + i); xv.x *= gv.x; xv.y *= gv.y; xv.z *= gv.z; xv.w *= gv.w; }
            acc += wv.x * xv.x + wv.y * xv.y + wv.z * xv.z + wv.w * xv.w;
        }
    }
    else
    {
        for (int i = k0 + lane; i < k0 + KLEN; i += 32) acc += w[i] * x[i] * (NORM ? g[i] : 1.0f);
    }
    return acc;
}

// Weight types of the projection kernels (template argument WT), with GGUF row layouts: a row of IN
// weights is IN f32 | IN f16 | IN bf16 | IN/32 Q8_0 blocks (f16 scale d, 32 int8 q; w = d·q; 34 B) |
// IN/32 Q4_0 blocks (f16 scale d, 16 B: element j is the low nibble of byte j, j + 16 the high one;
// w = d·(q − 8); 18 B). Rows are contiguous; a matrix starts 16-byte aligned. Norm vectors stay f32.
#define MC_W_F32 0
#define MC_W_F16 1
#define MC_W_BF16 2
#define MC_W_Q8_0 3
#define MC_W_Q4_0 4

// Bytes of one row of IN weights of type WT.
template <int WT, int IN>
__device__ __forceinline__ constexpr int64_t mc_row_bytes()
{
    return WT == MC_W_F32 ? (int64_t)IN * 4 : WT == MC_W_F16 || WT == MC_W_BF16 ? (int64_t)IN * 2
        : WT == MC_W_Q8_0 ? (int64_t)(IN / 32) * 34 : (int64_t)(IN / 32) * 18;
}

// A 16-bit float of type WT (f16 or bf16) as f32.
template <int WT>
__device__ __forceinline__ float mc_half(uint32_t bits)
{
    if constexpr (WT == MC_W_BF16) return MC_BF16_TO_F32((uint16_t)bits);
    else return MC_F16_TO_F32((uint16_t)bits);
}

// Weight c of a row of type WT, as f32.
template <int WT>
__device__ __forceinline__ float mc_weight_at(const uint8_t* __restrict__ row, int c)
{
    if constexpr (WT == MC_W_F32) return ((const float*)row)[c];
    else if constexpr (WT == MC_W_F16 || WT == MC_W_BF16) return mc_half<WT>(((const uint16_t*)row)[c]);
    else if constexpr (WT == MC_W_Q8_0)
    {
        const uint8_t* block = row + (int64_t)(c >> 5) * 34;
        return MC_F16_TO_F32(*(const uint16_t*)block) * (float)(int8_t)block[2 + (c & 31)];
    }
    else
    {
        const uint8_t* block = row + (int64_t)(c >> 5) * 18;
        const int j = c & 31;
        const int q = j < 16 ? (block[2 + j] & 15) : (block[2 + j - 16] >> 4);
        return MC_F16_TO_F32(*(const uint16_t*)block) * (float)(q - 8);
    }
}

// x[i] · g[i] (NORM) or x[i].
template <bool NORM>
__device__ __forceinline__ float mc_xn(const float* __restrict__ x, const float* __restrict__ g, int i)
{
    return NORM ? x[i] * g[i] : x[i];
}

// mc_lane_dot for a weight row of type WT (wrow: the row's first byte). f16/bf16 with VEC: 16-byte loads
// of 8 weights (KLEN and k0 multiples of 8). Q8_0/Q4_0: 8 lanes per block, 4 blocks per warp step, so a
// warp reads 4 consecutive blocks per step (KLEN and k0 multiples of 32).
template <int WT, int KLEN, bool VEC, bool NORM>
__device__ __forceinline__ float mc_lane_dot_w(const uint8_t* __restrict__ wrow, const float* __restrict__ x, const float* __restrict__ g, int k0, int lane)
{
    if constexpr (WT == MC_W_F32) return mc_lane_dot<KLEN, VEC, NORM>((const float*)wrow, x, g, k0, lane);
    else if constexpr (WT == MC_W_F16 || WT == MC_W_BF16)
    {
        const uint16_t* w = (const uint16_t*)wrow;
        float acc = 0.0f;
        if (VEC)
        {
#pragma unroll 2
            for (int i = k0 + lane * 8; i < k0 + KLEN; i += 256)
            {
                mc_uint4 wv = MC_LDG_U4(w + i);
                mc_float4 xa = MC_LDG_F4(x + i), xb = MC_LDG_F4(x + i + 4);
                if (NORM)
                {
                    mc_float4 ga = MC_LDG_F4(g + i), gb = MC_LDG_F4(g + i + 4);
                    xa.x *= ga.x; xa.y *= ga.y; xa.z *= ga.z; xa.w *= ga.w;
                    xb.x *= gb.x; xb.y *= gb.y; xb.z *= gb.z; xb.w *= gb.w;
                }
                acc += mc_half<WT>(wv.x & 0xffffu) * xa.x + mc_half<WT>(wv.x >> 16) * xa.y
                     + mc_half<WT>(wv.y & 0xffffu) * xa.z + mc_half<WT>(wv.y >> 16) * xa.w
                     + mc_half<WT>(wv.z & 0xffffu) * xb.x + mc_half<WT>(wv.z >> 16) * xb.y
                     + mc_half<WT>(wv.w & 0xffffu) * xb.z + mc_half<WT>(wv.w >> 16) * xb.w;
            }
        }
        else
        {
            for (int i = k0 + lane; i < k0 + KLEN; i += 32) acc += mc_half<WT>(w[i]) * mc_xn<NORM>(x, g, i);
        }
        return acc;
    }
    else
    {
        constexpr int BLOCK_BYTES = WT == MC_W_Q8_0 ? 34 : 18;
        const int sub = lane & 7;
        float acc = 0.0f;
        for (int b = (k0 >> 5) + (lane >> 3); b < ((k0 + KLEN) >> 5); b += 4)
        {
            const uint8_t* block = wrow + (int64_t)b * BLOCK_BYTES;
            const float d = MC_F16_TO_F32(*(const uint16_t*)block);
            const uint16_t* q = (const uint16_t*)(block + 2);
            const int i = b * 32;
            float s;
            if constexpr (WT == MC_W_Q8_0)
            {
                // Lane sub: quants 4·sub .. 4·sub + 3 (two 16-bit loads: the quants are 2-byte aligned).
                const uint32_t lo = q[2 * sub], hi = q[2 * sub + 1];
                const int c = i + 4 * sub;
                s = (float)(int8_t)(lo & 0xffu) * mc_xn<NORM>(x, g, c) + (float)(int8_t)(lo >> 8) * mc_xn<NORM>(x, g, c + 1)
                  + (float)(int8_t)(hi & 0xffu) * mc_xn<NORM>(x, g, c + 2) + (float)(int8_t)(hi >> 8) * mc_xn<NORM>(x, g, c + 3);
            }
            else
            {
                // Lane sub: bytes 2·sub, 2·sub + 1: elements 2·sub, 2·sub + 1 (low nibbles), + 16 (high nibbles).
                const uint32_t p = q[sub];
                const int c = i + 2 * sub;
                s = (float)((int)(p & 15u) - 8) * mc_xn<NORM>(x, g, c) + (float)((int)((p >> 8) & 15u) - 8) * mc_xn<NORM>(x, g, c + 1)
                  + (float)((int)((p >> 4) & 15u) - 8) * mc_xn<NORM>(x, g, c + 16) + (float)((int)(p >> 12) - 8) * mc_xn<NORM>(x, g, c + 17);
            }
            acc += d * s;
        }
        return acc;
    }
}

// 1/sqrt(mean(x²) + eps) of up to TT rows (x row r of token j: rows ? rows[t0 + j] : t0 + j), one warp
// per row, into inv[TT]; every thread of the block reaches the barrier at the end.
template <int IN, int TT>
__device__ __forceinline__ void mc_inverse_rms(const float* __restrict__ x, const int* __restrict__ rows, float eps, int t0, int nt, float* inv)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int j = warp; j < nt; j += (int)(blockDim.x >> 5))
    {
        const float* xr = x + (int64_t)(rows ? rows[t0 + j] : t0 + j) * IN;
        float s = 0.0f;
        for (int i = lane; i < IN; i += 32) s += xr[i] * xr[i];
        s = mc_warp_sum(s);
        if (lane == 0) inv[j] = 1.0f / sqrtf(s / (float)IN + eps);
    }
    __syncthreads();
}

// Decode/prefill projection y[t, o] (+)= Σ_i W[o, i] · xn[t, i], xn = NORM ? x · inv_rms · g : x. One warp per
// output row, TT tokens per block (a weight row is read once for TT tokens), grid (ceil(OUT / warps),
// ceil(numTokens / TT), KSPLIT). KSPLIT > 1 splits the columns and accumulates with atomicAdd (only with
// ADD, whose output already holds the residual). rows (GATHER) picks x's rows (the logits rows).
// WT: the weight type (MC_W_*), w the matrix's first byte.
template <int WT, int IN, int OUT, int TT, int KSPLIT, bool VEC, bool NORM, bool ADD>
__device__ __forceinline__ void mc_matvec(const float* __restrict__ x, const int* __restrict__ rows, const float* __restrict__ g, float eps,
    const void* __restrict__ w, float* __restrict__ y, int numTokens)
{
    __shared__ float inv[TT];
    const int t0 = blockIdx.y * TT;
    const int nt = numTokens - t0 < TT ? numTokens - t0 : TT;
    if (NORM) mc_inverse_rms<IN, TT>(x, rows, eps, t0, nt, inv);
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * (int)(blockDim.x >> 5) + (int)(threadIdx.x >> 5);
    if (o >= OUT) return;
    constexpr int KLEN = IN / KSPLIT;
    const int k0 = (int)blockIdx.z * KLEN;
    const uint8_t* wr = (const uint8_t*)w + (int64_t)o * mc_row_bytes<WT, IN>();
#pragma unroll
    for (int j = 0; j < TT; j++)
    {
        if (j >= nt) break;
        const float* xr = x + (int64_t)(rows ? rows[t0 + j] : t0 + j) * IN;
        float s = mc_warp_sum(mc_lane_dot_w<WT, KLEN, VEC, NORM>(wr, xr, g, k0, lane));
        if (lane == 0)
        {
            if (NORM) s *= inv[j];
            float* out = y + (int64_t)(t0 + j) * OUT + o;
            if (KSPLIT > 1) atomicAdd(out, s);
            else if (ADD) *out += s;
            else *out = s;
        }
    }
}

// Slot (in floats) of a token's K/V row in one layer's [numBlocks, BS, KVD] pool, through its block table.
template <int BS, int KVD>
__device__ __forceinline__ int64_t mc_cache_slot(const int* __restrict__ blockTables, int blockTableStride, int sequence, int position)
{
    int block = blockTables[sequence * blockTableStride + position / BS];
    return ((int64_t)block * BS + position % BS) * KVD;
}

// RMSNorm + q|k|v projection + RoPE on q and k + K/V written to the paged cache. One warp computes a
// rotation pair of rows (2i, 2i+1 interleaved; i, i + HD/2 half) of one head for TT tokens, rotates
// them by the token's angle (formed in double, as the CPU does) and stores q, k, v into the qkv row and
// k, v into the token's cache slot. Grid (ceil(pairs / warps), ceil(numTokens / TT)).
template <int WT, int DIM, int QD, int KVD, int HD, int BS, int TT, bool VEC, bool INTERLEAVED>
__device__ __forceinline__ void mc_qkv_rope_kvwrite(const float* __restrict__ x, const float* __restrict__ g, float eps, const void* __restrict__ w,
    float* __restrict__ qkv, const int* __restrict__ positions, const int* __restrict__ sequenceOfToken, const int* __restrict__ blockTables,
    int blockTableStride, float* __restrict__ keyCache, float* __restrict__ valueCache, int numTokens, double theta)
{
    constexpr int QKVD = QD + 2 * KVD;
    constexpr int HALF = HD / 2;
    __shared__ float inv[TT];
    const int t0 = blockIdx.y * TT;
    const int nt = numTokens - t0 < TT ? numTokens - t0 : TT;
    mc_inverse_rms<DIM, TT>(x, (const int*)0, eps, t0, nt, inv);
    const int lane = threadIdx.x & 31;
    const int pair = blockIdx.x * (int)(blockDim.x >> 5) + (int)(threadIdx.x >> 5);
    if (pair >= QKVD / 2) return;
    const int head = pair / HALF, i = pair % HALF;
    const int r0 = head * HD + (INTERLEAVED ? 2 * i : i);
    const int r1 = r0 + (INTERLEAVED ? 1 : HALF);
    const double inverseFrequency = pow(theta, -2.0 * (double)i / (double)HD);
    for (int j = 0; j < nt; j++)
    {
        const int t = t0 + j;
        const float* xr = x + (int64_t)t * DIM;
        float a = mc_warp_sum(mc_lane_dot_w<WT, DIM, VEC, true>((const uint8_t*)w + (int64_t)r0 * mc_row_bytes<WT, DIM>(), xr, g, 0, lane)) * inv[j];
        float b = mc_warp_sum(mc_lane_dot_w<WT, DIM, VEC, true>((const uint8_t*)w + (int64_t)r1 * mc_row_bytes<WT, DIM>(), xr, g, 0, lane)) * inv[j];
        if (lane != 0) continue;
        const int position = positions[t];
        if (r0 < QD + KVD)
        {
            double angle = (double)position * inverseFrequency;
            float c = (float)cos(angle), s = (float)sin(angle);
            float ra = a * c - b * s, rb = a * s + b * c;
            a = ra; b = rb;
        }
        qkv[(int64_t)t * QKVD + r0] = a;
        qkv[(int64_t)t * QKVD + r1] = b;
        if (r0 >= QD)
        {
            int64_t slot = mc_cache_slot<BS, KVD>(blockTables, blockTableStride, sequenceOfToken[t], position);
            float* cache = r0 < QD + KVD ? keyCache : valueCache;
            int column = r0 < QD + KVD ? r0 - QD : r0 - QD - KVD;
            cache[slot + column] = a;
            cache[slot + column + (r1 - r0)] = b;
        }
    }
}

// Flash-decoding attention, pass 1: block (h, t, split) scores positions [split·CHUNK, +CHUNK) ∩ [0, p]
// of token t's sequence (one thread per position) for query head h and writes the split's unnormalised
// output, max and sum to partial[t, h, split, HD + 2]. Prefill uses it too: each token has its own p.
template <int NH, int NKV, int HD, int BS, int CHUNK, int NSPLIT, int QSTRIDE, int QOFF>
__device__ __forceinline__ void mc_attention_partial(const float* __restrict__ q, const int* __restrict__ positions, const int* __restrict__ sequenceOfToken,
    const int* __restrict__ blockTables, int blockTableStride, const float* __restrict__ keyCache, const float* __restrict__ valueCache,
    float* __restrict__ partial)
{
    constexpr int KVD = NKV * HD;
    __shared__ float qs[HD];
    __shared__ float weights[CHUNK];
    __shared__ int64_t slots[CHUNK];
    __shared__ float red[CHUNK / 32];
    const int h = blockIdx.x, t = blockIdx.y, split = blockIdx.z, tid = threadIdx.x;
    const int kvHead = h / (NH / NKV);
    const int last = positions[t], start = split * CHUNK;
    float* out = partial + (((int64_t)t * NH + h) * NSPLIT + split) * (HD + 2);
    if (start > last)
    {
        for (int d = tid; d < HD; d += CHUNK) out[d] = 0.0f;
        if (tid == 0) { out[HD] = MC_NO_SCORE; out[HD + 1] = 0.0f; }
        return;
    }
    const int sequence = sequenceOfToken[t];
    for (int d = tid; d < HD; d += CHUNK) qs[d] = q[(int64_t)t * QSTRIDE + QOFF + h * HD + d];
    __syncthreads();
    const int position = start + tid;
    float score = MC_NO_SCORE;
    if (position <= last)
    {
        int64_t slot = mc_cache_slot<BS, KVD>(blockTables, blockTableStride, sequence, position) + kvHead * HD;
        slots[tid] = slot;
        const float* k = keyCache + slot;
        float dot = 0.0f;
#pragma unroll 8
        for (int d = 0; d < HD; d++) dot += qs[d] * k[d];
        score = dot * (1.0f / sqrtf((float)HD));
    }
    const float m = mc_block_max<CHUNK>(score, red);
    const float p = position <= last ? expf(score - m) : 0.0f;
    weights[tid] = p;
    const float l = mc_block_sum<CHUNK>(p, red);
    const int count = last - start + 1 < CHUNK ? last - start + 1 : CHUNK;
    for (int d = tid; d < HD; d += CHUNK)
    {
        float acc = 0.0f;
        for (int j = 0; j < count; j++) acc += weights[j] * valueCache[slots[j] + d];
        out[d] = acc;
    }
    if (tid == 0) { out[HD] = m; out[HD + 1] = l; }
}

// Flash-decoding attention, pass 2: block (h, t) rescales the splits to their common max and writes
// output[t, h·HD + d] = Σ_s acc_s[d]·e^(m_s − M) / Σ_s l_s·e^(m_s − M).
template <int NH, int HD, int NSPLIT>
__device__ __forceinline__ void mc_attention_combine(const float* __restrict__ partial, float* __restrict__ output)
{
    const int h = blockIdx.x, t = blockIdx.y;
    const float* in = partial + ((int64_t)t * NH + h) * NSPLIT * (HD + 2);
    float m = MC_NO_SCORE;
    for (int s = 0; s < NSPLIT; s++) m = fmaxf(m, in[s * (HD + 2) + HD]);
    float l = 0.0f;
    for (int s = 0; s < NSPLIT; s++) l += in[s * (HD + 2) + HD + 1] * expf(in[s * (HD + 2) + HD] - m);
    for (int d = threadIdx.x; d < HD; d += blockDim.x)
    {
        float acc = 0.0f;
        for (int s = 0; s < NSPLIT; s++) acc += in[s * (HD + 2) + d] * expf(in[s * (HD + 2) + HD] - m);
        output[(int64_t)t * NH * HD + h * HD + d] = acc / l;
    }
}

// Greedy sampling on the device: tokens[r] = argmax_v logits[r, v], ties to the lower id (as Sampler.Argmax).
template <int VOCAB, int NT>
__device__ __forceinline__ void mc_argmax(const float* __restrict__ logits, int* __restrict__ tokens)
{
    __shared__ float bestValues[NT / 32];
    __shared__ int bestIds[NT / 32];
    const float* row = logits + (int64_t)blockIdx.y * VOCAB;
    float best = MC_NO_SCORE;
    int id = VOCAB;
    for (int v = threadIdx.x; v < VOCAB; v += NT)
        if (row[v] > best) { best = row[v]; id = v; }
    for (int o = 16; o > 0; o >>= 1)
    {
        float ob = __shfl_xor_sync(MC_FULL_MASK, best, o);
        int oi = __shfl_xor_sync(MC_FULL_MASK, id, o);
        if (ob > best || (ob == best && oi < id)) { best = ob; id = oi; }
    }
    if ((threadIdx.x & 31) == 0) { bestValues[threadIdx.x >> 5] = best; bestIds[threadIdx.x >> 5] = id; }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        for (int i = 1; i < NT / 32; i++)
            if (bestValues[i] > best || (bestValues[i] == best && bestIds[i] < id)) { best = bestValues[i]; id = bestIds[i]; }
        tokens[blockIdx.y] = id < VOCAB ? id : 0;
    }
}
// ---- end of library ----
";
}
