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
#define MC_ALIGN16 __attribute__((aligned(16)))
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

// f32 to f16/bf16 bits, rounded to nearest even: cvt on the GPU (bf16 from sm_80), bit arithmetic elsewhere.
__device__ __forceinline__ uint16_t mc_f32_to_f16_bits(float f)
{
    union { float f; uint32_t u; } c; c.f = f;
    const uint32_t sign = (c.u >> 16) & 0x8000u, ax = c.u & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u)
    {
        if (ax < 0x33000000u) return (uint16_t)sign;
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e, half = 1u << (shift - 1u), rem = m & ((1u << shift) - 1u);
        uint32_t r = m >> shift;
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (ax >> 13) - (112u << 10);
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}
__device__ __forceinline__ uint16_t mc_f32_to_bf16_bits(float f)
{
    union { float f; uint32_t u; } c; c.f = f;
    if ((c.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((c.u >> 16) | 0x40u);
    return (uint16_t)((c.u + 0x7fffu + ((c.u >> 16) & 1u)) >> 16);
}
#ifdef MC_USE_PTX
__device__ __forceinline__ uint16_t mc_f32_to_f16(float f)
{
    uint16_t h;
    asm(""cvt.rn.f16.f32 %0, %1;"" : ""=h""(h) : ""f""(f));
    return h;
}
#define MC_F32_TO_F16(f) mc_f32_to_f16(f)
#else
#define MC_F32_TO_F16(f) mc_f32_to_f16_bits(f)
#endif
#if defined(MC_USE_PTX) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ uint16_t mc_f32_to_bf16(float f)
{
    uint16_t h;
    asm(""cvt.rn.bf16.f32 %0, %1;"" : ""=h""(h) : ""f""(f));
    return h;
}
#define MC_F32_TO_BF16(f) mc_f32_to_bf16(f)
#else
#define MC_F32_TO_BF16(f) mc_f32_to_bf16_bits(f)
#endif

// Tensor-core D += A·B for one warp, m16n8k16, f16 (or bf16) inputs and f32 accumulators, in the PTX
// fragment layout (g = lane / 4, t = lane % 4; a pair is two 16-bit values in one register, low half first):
//   a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9];
//   b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g];
//   d[0], d[1] = D[g][2t, 2t+1], d[2], d[3] = D[g+8][2t, 2t+1].
// mma.sync on sm_80 and later; elsewhere (and in the emulator) the same fragments gathered with shuffles
// and summed in f32, k in order. Every lane of the warp must call it.
template <bool BF16>
__device__ __forceinline__ void mc_mma_m16n8k16_portable(float* d, const uint32_t* a, const uint32_t* b)
{
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float s[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    for (int q = 0; q < 4; q++)
    {
        // Lane 4g + q holds A rows g, g+8 at k = 2q, 2q+1, 2q+8, 2q+9; lane 4n + q holds B column n there.
        const uint32_t a0 = __shfl_sync(0xffffffffu, a[0], 4 * g + q), a1 = __shfl_sync(0xffffffffu, a[1], 4 * g + q);
        const uint32_t a2 = __shfl_sync(0xffffffffu, a[2], 4 * g + q), a3 = __shfl_sync(0xffffffffu, a[3], 4 * g + q);
        uint32_t bl[2], bh[2];
        for (int e = 0; e < 2; e++)
        {
            bl[e] = __shfl_sync(0xffffffffu, b[0], 4 * (2 * t + e) + q);
            bh[e] = __shfl_sync(0xffffffffu, b[1], 4 * (2 * t + e) + q);
        }
        for (int e = 0; e < 2; e++)
        {
            const uint32_t rows[2][2] = { { a0, a2 }, { a1, a3 } };
            for (int r = 0; r < 2; r++)
            {
                const uint32_t lo = rows[r][0], hi = rows[r][1];
                if (BF16)
                    s[2 * r + e] += MC_BF16_TO_F32((uint16_t)(lo & 0xffffu)) * MC_BF16_TO_F32((uint16_t)(bl[e] & 0xffffu))
                                  + MC_BF16_TO_F32((uint16_t)(lo >> 16)) * MC_BF16_TO_F32((uint16_t)(bl[e] >> 16))
                                  + MC_BF16_TO_F32((uint16_t)(hi & 0xffffu)) * MC_BF16_TO_F32((uint16_t)(bh[e] & 0xffffu))
                                  + MC_BF16_TO_F32((uint16_t)(hi >> 16)) * MC_BF16_TO_F32((uint16_t)(bh[e] >> 16));
                else
                    s[2 * r + e] += MC_F16_TO_F32((uint16_t)(lo & 0xffffu)) * MC_F16_TO_F32((uint16_t)(bl[e] & 0xffffu))
                                  + MC_F16_TO_F32((uint16_t)(lo >> 16)) * MC_F16_TO_F32((uint16_t)(bl[e] >> 16))
                                  + MC_F16_TO_F32((uint16_t)(hi & 0xffffu)) * MC_F16_TO_F32((uint16_t)(bh[e] & 0xffffu))
                                  + MC_F16_TO_F32((uint16_t)(hi >> 16)) * MC_F16_TO_F32((uint16_t)(bh[e] >> 16));
            }
        }
    }
    for (int i = 0; i < 4; i++) d[i] += s[i];
}
#if defined(MC_USE_PTX) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MC_MMA_M16N8K16_F16(d, a, b) asm volatile( \
    ""mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"" \
    : ""+f""((d)[0]), ""+f""((d)[1]), ""+f""((d)[2]), ""+f""((d)[3]) : ""r""((a)[0]), ""r""((a)[1]), ""r""((a)[2]), ""r""((a)[3]), ""r""((b)[0]), ""r""((b)[1]))
#define MC_MMA_M16N8K16_BF16(d, a, b) asm volatile( \
    ""mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"" \
    : ""+f""((d)[0]), ""+f""((d)[1]), ""+f""((d)[2]), ""+f""((d)[3]) : ""r""((a)[0]), ""r""((a)[1]), ""r""((a)[2]), ""r""((a)[3]), ""r""((b)[0]), ""r""((b)[1]))
#else
#define MC_MMA_M16N8K16_F16(d, a, b) mc_mma_m16n8k16_portable<false>((d), (a), (b))
#define MC_MMA_M16N8K16_BF16(d, a, b) mc_mma_m16n8k16_portable<true>((d), (a), (b))
#endif
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

// Prefill projection on tensor cores: y[t, o] (+)= Σ_i W[o, i] · xn[t, i], W f16 or bf16 (WT) as raw bits,
// xn = NORM ? x · inv_rms · g : x, f32 accumulation (m16n8k16). xn is split into two values of W's type,
// hi = round(xn) and lo = round(xn − hi), and both go through the tensor cores (two mma per fragment), so
// the activations keep 22 (f16) or 16 (bf16) significant bits instead of 11 or 8. A block of 4 warps
// computes 64 rows × 32 tokens (warp w: rows 16w .. 16w + 15, four 8-token fragments); K in chunks of 32
// through shared memory. Grid (ceil(OUT / 64), ceil(numTokens / 32)); IN a multiple of 32; VEC: x rows
// 16-byte aligned. Each output is owned by one lane, so ADD needs no atomics.
template <int WT, int IN, int OUT, bool VEC, bool NORM, bool ADD>
__device__ __forceinline__ void mc_gemm_mma(const float* __restrict__ x, const float* __restrict__ g, float eps, const void* __restrict__ w,
    float* __restrict__ y, int numTokens)
{
    constexpr int BM = 64, BN = 32, BK = 32, LDS = BK + 8;
    __shared__ MC_ALIGN16 uint16_t ws[BM * LDS];
    __shared__ MC_ALIGN16 uint16_t xs[BN * LDS];
    __shared__ MC_ALIGN16 uint16_t xl[BN * LDS];
    __shared__ float inv[BN];
    const int m0 = blockIdx.x * BM, t0 = blockIdx.y * BN;
    const int nt = numTokens - t0 < BN ? numTokens - t0 : BN;
    if (NORM) mc_inverse_rms<IN, BN>(x, (const int*)0, eps, t0, nt, inv);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    float acc[4][4];
    for (int j = 0; j < 4; j++) for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    const uint16_t* wh = (const uint16_t*)w;
    for (int k0 = 0; k0 < IN; k0 += BK)
    {
        for (int p = tid; p < BM * BK / 8; p += 128)
        {
            const int r = p >> 2, c = (p & 3) * 8;
            mc_uint4 v = { 0u, 0u, 0u, 0u };
            if (m0 + r < OUT) v = MC_LDG_U4(wh + (int64_t)(m0 + r) * IN + k0 + c);
            *(mc_uint4*)(ws + r * LDS + c) = v;
        }
        for (int p = tid; p < BN * BK / 4; p += 128)
        {
            const int n = p >> 3, c = (p & 7) * 4;
            mc_float4 v = { 0.0f, 0.0f, 0.0f, 0.0f };
            if (n < nt)
            {
                const float* xr = x + (int64_t)(t0 + n) * IN + k0 + c;
                if (VEC) v = MC_LDG_F4(xr);
                else { v.x = xr[0]; v.y = xr[1]; v.z = xr[2]; v.w = xr[3]; }
                if (NORM)
                {
                    const float s = inv[n];
                    v.x *= g[k0 + c] * s; v.y *= g[k0 + c + 1] * s; v.z *= g[k0 + c + 2] * s; v.w *= g[k0 + c + 3] * s;
                }
            }
            const float e[4] = { v.x, v.y, v.z, v.w };
            for (int q = 0; q < 4; q++)
            {
                uint16_t hi, lo;
                if (WT == MC_W_BF16) { hi = MC_F32_TO_BF16(e[q]); lo = MC_F32_TO_BF16(e[q] - MC_BF16_TO_F32(hi)); }
                else { hi = MC_F32_TO_F16(e[q]); lo = MC_F32_TO_F16(e[q] - MC_F16_TO_F32(hi)); }
                xs[n * LDS + c + q] = hi;
                xl[n * LDS + c + q] = lo;
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16)
        {
            const uint16_t* ar = ws + (warp * 16 + gq) * LDS + kk + 2 * tq;
            uint32_t a[4];
            a[0] = *(const uint32_t*)ar;
            a[1] = *(const uint32_t*)(ar + 8 * LDS);
            a[2] = *(const uint32_t*)(ar + 8);
            a[3] = *(const uint32_t*)(ar + 8 * LDS + 8);
#pragma unroll
            for (int j = 0; j < 4; j++)
            {
                const int at = (j * 8 + gq) * LDS + kk + 2 * tq;
                uint32_t b[2], bl[2];
                b[0] = *(const uint32_t*)(xs + at);
                b[1] = *(const uint32_t*)(xs + at + 8);
                bl[0] = *(const uint32_t*)(xl + at);
                bl[1] = *(const uint32_t*)(xl + at + 8);
                if (WT == MC_W_BF16) { MC_MMA_M16N8K16_BF16(acc[j], a, bl); MC_MMA_M16N8K16_BF16(acc[j], a, b); }
                else { MC_MMA_M16N8K16_F16(acc[j], a, bl); MC_MMA_M16N8K16_F16(acc[j], a, b); }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 4; i++)
        {
            const int o = m0 + warp * 16 + gq + (i >> 1) * 8, n = j * 8 + 2 * tq + (i & 1);
            if (o < OUT && n < nt)
            {
                float* out = y + (int64_t)(t0 + n) * OUT + o;
                if (ADD) *out += acc[j][i];
                else *out = acc[j][i];
            }
        }
}

// Slot (in elements of mc_kv_t) of a token's K/V row in one layer's [numBlocks, BS, KVD] pool, through its block table.
template <int BS, int KVD>
__device__ __forceinline__ int64_t mc_cache_slot(const int* __restrict__ blockTables, int blockTableStride, int sequence, int position)
{
    int block = blockTables[sequence * blockTableStride + position / BS];
    return ((int64_t)block * BS + position % BS) * KVD;
}

// RMSNorm + q|k|v projection (+ the q|k|v bias when BIAS, as Qwen2 has: added before the rotation) + RoPE
// on q and k + K/V written to the paged cache. One warp computes a rotation pair of rows (2i, 2i+1
// interleaved; i, i + HD/2 half) of one head for TT tokens, rotates them by the token's angle (formed in
// double, as the CPU does) and stores q, k, v into the qkv row and k, v into the token's cache slot.
// Grid (ceil(pairs / warps), ceil(numTokens / TT)).
template <int WT, int DIM, int QD, int KVD, int HD, int BS, int TT, bool VEC, bool INTERLEAVED, bool BIAS>
__device__ __forceinline__ void mc_qkv_rope_kvwrite(const float* __restrict__ x, const float* __restrict__ g, float eps, const void* __restrict__ w,
    const float* __restrict__ bias, float* __restrict__ qkv, const int* __restrict__ positions, const int* __restrict__ sequenceOfToken, const int* __restrict__ blockTables,
    int blockTableStride, mc_kv_t* __restrict__ keyCache, mc_kv_t* __restrict__ valueCache, int numTokens, double theta)
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
        if (BIAS) { a += bias[r0]; b += bias[r1]; }
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
            mc_kv_t* cache = r0 < QD + KVD ? keyCache : valueCache;
            int column = r0 < QD + KVD ? r0 - QD : r0 - QD - KVD;
            cache[slot + column] = mc_to_kv(a);
            cache[slot + column + (r1 - r0)] = mc_to_kv(b);
        }
    }
}

// Flash-decoding attention, pass 1: block (h, t, split) scores positions [split·CHUNK, +CHUNK) ∩ [0, p]
// of token t's sequence (one thread per position) for query head h and writes the split's unnormalised
// output, max and sum to partial[t, h, split, HD + 2]. Prefill uses it too: each token has its own p.
template <int NH, int NKV, int HD, int BS, int CHUNK, int NSPLIT, int QSTRIDE, int QOFF>
__device__ __forceinline__ void mc_attention_partial(const float* __restrict__ q, const int* __restrict__ positions, const int* __restrict__ sequenceOfToken,
    const int* __restrict__ blockTables, int blockTableStride, const mc_kv_t* __restrict__ keyCache, const mc_kv_t* __restrict__ valueCache,
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
        const mc_kv_t* k = keyCache + slot;
        float dot = 0.0f;
#pragma unroll 8
        for (int d = 0; d < HD; d++) dot += qs[d] * mc_from_kv(k[d]);
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
        for (int j = 0; j < count; j++) acc += weights[j] * mc_from_kv(valueCache[slots[j] + d]);
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

// ---- sampling on the device (the draw contract of runtime/ModelCompiler.Runtime/Sampling/Sampler.cs) ----
// Per-row parameters, written by the host before the launch (MC_SAMPLE_PARAM_INTS ints per logits row):
//   [0] mode: 0 greedy (argmax), 1 sample;  [1] 1/T as float bits;  [2] top-k (0: no cut);  [3] top-p as float bits;
//   [4], [5] the row's uniform, low and high 32 bits: a number in [0, 1) as a 64-bit binary fraction, drawn on
//   the host by the sequence's own generator (Sampler.NextUniform), so seeds behave as on the CPU.
// A row the kernel cannot sample within its bound of MC candidates gets a negative id instead, and the host
// samples that row from its logits with the same uniform (never a different answer, only a slower one):
#define MC_SAMPLE_PARAM_INTS 6
#define MC_SAMPLE_TOP_K_ABOVE_BOUND (-1)      // top-k above the candidate bound
#define MC_SAMPLE_NUCLEUS_ABOVE_BOUND (-2)    // top-p without top-k whose nucleus has more tokens than the bound

// Sampler.Weight, operation for operation: exp((logit - max) / T) in units of 2^-40 of the most likely token,
// truncated to a whole number. Every operation is one correctly rounded IEEE float operation written so that
// the compiler cannot contract or reorder it (the _rn intrinsics and explicit fmaf), so host and device agree to the bit.
__device__ __forceinline__ float mc_sample_weight(float logit, float max, float inverseTemperature)
{
    const float x = __fmul_rn(__fadd_rn(logit, -max), inverseTemperature);
    if (!(x >= -28.0f)) return 0.0f;
    const float n = rintf(__fmul_rn(x, 1.44269504f));
    float r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = __fadd_rn(fmaf(p, __fmul_rn(r, r), r), 1.0f);
    return truncf(__fmul_rn(p, __int_as_float((127 + 40 + (int)n) << 23)));
}

// Likelihood order as one unique 64-bit key: the weight's float bits (non-negative floats order as integers)
// above IDB bits of (2^IDB - 1 - id), so a larger key is a larger weight, then a lower id. Every real key is
// above 0 (2^IDB > VOCAB), which pads the sort.
template <int IDB>
__device__ __forceinline__ uint64_t mc_sample_key(float weight, int id)
{
    return ((uint64_t)__float_as_uint(weight) << IDB) | (uint64_t)(((1u << IDB) - 1u) - (unsigned)id);
}

// Exclusive prefix sum over a block of NT threads (a multiple of 32); total gets the block's sum. sums holds NT/32.
template <int NT>
__device__ __forceinline__ uint64_t mc_block_exclusive_scan(uint64_t v, uint64_t* sums, uint64_t& total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t inclusive = v;
    for (int o = 1; o < 32; o <<= 1)
    {
        const uint64_t t = __shfl_up_sync(MC_FULL_MASK, inclusive, o);
        if (lane >= o) inclusive += t;
    }
    __syncthreads();
    if (lane == 31) sums[warp] = inclusive;
    __syncthreads();
    uint64_t before = 0;
    total = 0;
    for (int i = 0; i < NT / 32; i++)
    {
        if (i < warp) before += sums[i];
        total += sums[i];
    }
    return before + inclusive - v;
}

// One logits row per block of NT threads: tokens[r] is the token Sampler.Sample(row r, uniform r) picks.
//   greedy rows: the argmax, ties to the lower id (Sampler.Argmax).
//   no cut: the token whose running mass, in id order, first exceeds the draw point; each thread owns a
//     contiguous run of ids, one block-wide scan of the runs' masses finds the owner of the point.
//   top-k and/or top-p: the K = top-k (or, for top-p alone, min(CAP, VOCAB)) most likely tokens, found by a
//     radix select over the likelihood keys (8-bit digits, most significant first, a shared histogram per pass,
//     stopping once a digit's keys are all in), compacted into shared memory and bitonic-sorted; the nucleus
//     and the draw are prefix sums over that list. Nothing sorts the whole vocabulary.
// Bound: CAP candidates (top-k above CAP, or a nucleus of more than CAP tokens without top-k, give the
// negative codes above). All masses are 64-bit integer sums, exact in any order.
template <int VOCAB, int NT, int CAP, int IDB>
__device__ __forceinline__ void mc_sample(const float* __restrict__ logits, const int* __restrict__ params, int* __restrict__ tokens)
{
    static_assert(VOCAB <= (1 << 23) && (1 << IDB) > VOCAB && IDB <= 24, ""masses of up to 2^23 weights of 2^40 fit 64 bits; keys need IDB id bits"");
    static_assert(NT % 32 == 0, ""whole warps"");
    constexpr int NW = NT / 32;
    constexpr int RUN = (VOCAB + NT - 1) / NT;     // ids per thread in the id-order draw
    constexpr int PASSES = (31 + IDB + 7) / 8;     // 8-bit digits of a key
    __shared__ float bestValues[NW];
    __shared__ int bestIds[NW];
    __shared__ uint64_t sums[NW];
    __shared__ unsigned int histogram[256];
    __shared__ int selectedDigit, numKept, nucleusEnd;
    __shared__ unsigned int countAbove, countAt;
    __shared__ uint64_t keys[CAP];                 // the candidates, most likely first once sorted
    __shared__ uint64_t cumulative[CAP];           // their running masses
    const int row = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float* x = logits + (int64_t)row * VOCAB;
    const int* p = params + (int64_t)row * MC_SAMPLE_PARAM_INTS;

    // The argmax (first index of the largest logit); its logit is the max the weights subtract.
    float best = -__int_as_float(0x7f800000);
    int id = VOCAB;
    for (int v = tid; v < VOCAB; v += NT)
        if (x[v] > best) { best = x[v]; id = v; }
    for (int o = 16; o > 0; o >>= 1)
    {
        const float ob = __shfl_xor_sync(MC_FULL_MASK, best, o);
        const int oi = __shfl_xor_sync(MC_FULL_MASK, id, o);
        if (ob > best || (ob == best && oi < id)) { best = ob; id = oi; }
    }
    if (lane == 0) { bestValues[warp] = best; bestIds[warp] = id; }
    __syncthreads();
    best = bestValues[0];
    id = bestIds[0];
    for (int i = 1; i < NW; i++)
        if (bestValues[i] > best || (bestValues[i] == best && bestIds[i] < id)) { best = bestValues[i]; id = bestIds[i]; }
    const int argmax = id < VOCAB ? id : 0;
    if (p[0] == 0)
    {
        if (tid == 0) tokens[row] = argmax;
        return;
    }
    const float max = x[argmax], inverseTemperature = __int_as_float(p[1]), topP = __int_as_float(p[3]);
    const int topK = p[2];
    const uint64_t uniform = (uint64_t)(unsigned)p[4] | ((uint64_t)(unsigned)p[5] << 32);
    const bool cutK = topK > 0 && topK < VOCAB, cutP = topP < 1.0f;
    if (cutK && topK > CAP)
    {
        if (tid == 0) tokens[row] = MC_SAMPLE_TOP_K_ABOVE_BOUND;
        return;
    }

    // The total mass, from contiguous runs of ids (the id-order draw needs each run's mass and what precedes it).
    const int begin = tid * RUN < VOCAB ? tid * RUN : VOCAB, end = begin + RUN < VOCAB ? begin + RUN : VOCAB;
    uint64_t runMass = 0, total;
    for (int v = begin; v < end; v++) runMass += (uint64_t)mc_sample_weight(x[v], max, inverseTemperature);
    const uint64_t before = mc_block_exclusive_scan<NT>(runMass, sums, total);
    if (total == 0)   // a NaN or infinite maximum: Sampler gives the argmax
    {
        if (tid == 0) tokens[row] = argmax;
        return;
    }
    if (!cutK && !cutP)
    {
        const uint64_t point = __umul64hi(uniform, total);
        if (before <= point && point < before + runMass)
        {
            uint64_t c = before;
            for (int v = begin; v < end; v++)
            {
                c += (uint64_t)mc_sample_weight(x[v], max, inverseTemperature);
                if (c > point) { tokens[row] = v; break; }
            }
        }
        return;
    }

    // The K largest keys are those >= threshold: radix select of the K-th largest.
    const int k = cutK ? topK : (VOCAB < CAP ? VOCAB : CAP);
    uint64_t threshold = 0;
    if (k < VOCAB)
    {
        unsigned int remaining = (unsigned int)k;
        for (int shift = (PASSES - 1) * 8; shift >= 0; shift -= 8)
        {
            for (int i = tid; i < 256; i += NT) histogram[i] = 0;
            __syncthreads();
            for (int v = tid; v < VOCAB; v += NT)
            {
                const uint64_t key = mc_sample_key<IDB>(mc_sample_weight(x[v], max, inverseTemperature), v);
                if ((key >> (shift + 8)) == (threshold >> (shift + 8))) atomicAdd(&histogram[(key >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (warp == 0)
            {
                // Lane l holds digits [8l, 8l + 8); the digit wanted is the largest whose count from the top reaches remaining.
                unsigned int mine = 0;
                for (int j = 0; j < 8; j++) mine += histogram[lane * 8 + j];
                unsigned int fromTop = mine;
                for (int o = 1; o < 32; o <<= 1)
                {
                    const unsigned int t = __shfl_down_sync(MC_FULL_MASK, fromTop, o);
                    if (lane + o < 32) fromTop += t;
                }
                unsigned int above = fromTop - mine;
                if (above < remaining && fromTop >= remaining)
                    for (int j = 7; j >= 0; j--)
                    {
                        const unsigned int c = histogram[lane * 8 + j];
                        if (above + c >= remaining) { selectedDigit = lane * 8 + j; countAbove = above; countAt = c; break; }
                        above += c;
                    }
            }
            __syncthreads();
            threshold |= (uint64_t)selectedDigit << shift;
            remaining -= countAbove;
            if (countAt == remaining) break;   // every key with these leading digits is in: the rest of threshold stays 0
        }
    }

    // Compact the K candidates (warp-aggregated slots), pad to a power of two, sort most likely first.
    if (tid == 0) numKept = 0;
    __syncthreads();
    for (int base = 0; base < VOCAB; base += NT)
    {
        const int v = base + tid;
        const uint64_t key = v < VOCAB ? mc_sample_key<IDB>(mc_sample_weight(x[v], max, inverseTemperature), v) : 0;
        const bool keep = v < VOCAB && key >= threshold;
        const unsigned int ballot = __ballot_sync(MC_FULL_MASK, keep);
        int slot = 0;
        if (lane == 0 && ballot != 0) slot = atomicAdd(&numKept, __popc(ballot));
        slot = __shfl_sync(MC_FULL_MASK, slot, 0);
        if (keep) keys[slot + __popc(ballot & ((1u << lane) - 1u))] = key;
    }
    int sortSize = 1;
    while (sortSize < k) sortSize <<= 1;
    for (int i = k + tid; i < sortSize; i += NT) keys[i] = 0;
    for (int size = 2; size <= sortSize; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1)
        {
            __syncthreads();
            for (int i = tid; i < sortSize / 2; i += NT)
            {
                const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                const uint64_t a = keys[lo], b = keys[hi];
                if ((a < b) == ((lo & size) == 0)) { keys[lo] = b; keys[hi] = a; }
            }
        }
    __syncthreads();

    // Running masses over the sorted list: each thread a contiguous run, one block scan.
    constexpr int PER = (CAP + NT - 1) / NT;
    const int first = tid * PER < k ? tid * PER : k, last = first + PER < k ? first + PER : k;
    uint64_t mass = 0, listMass;
    for (int i = first; i < last; i++) mass += (uint64_t)__uint_as_float((unsigned int)(keys[i] >> IDB));
    uint64_t c = mc_block_exclusive_scan<NT>(mass, sums, listMass);
    for (int i = first; i < last; i++)
    {
        c += (uint64_t)__uint_as_float((unsigned int)(keys[i] >> IDB));
        cumulative[i] = c;
    }
    if (tid == 0) nucleusEnd = k - 1;
    __syncthreads();
    if (cutP)
    {
        const uint64_t target = (uint64_t)ceil((double)(cutK ? listMass : total) * (double)topP);
        if (tid == 0) nucleusEnd = -1;
        __syncthreads();
        for (int i = tid; i < k; i += NT)
            if (cumulative[i] >= target && (i == 0 || cumulative[i - 1] < target)) nucleusEnd = i;
        __syncthreads();
        if (nucleusEnd < 0)
        {
            if (tid == 0) tokens[row] = MC_SAMPLE_NUCLEUS_ABOVE_BOUND;
            return;
        }
    }
    const int lastKept = nucleusEnd;
    const uint64_t point = __umul64hi(uniform, cumulative[lastKept]);
    for (int i = tid; i <= lastKept; i += NT)
        if (cumulative[i] > point && (i == 0 || cumulative[i - 1] <= point))
            tokens[row] = (int)(((1u << IDB) - 1u) - (unsigned int)(keys[i] & ((1ull << IDB) - 1ull)));
}
// ---- end of library ----
";
}
