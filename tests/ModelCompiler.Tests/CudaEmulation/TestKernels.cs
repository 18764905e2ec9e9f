namespace ModelCompiler.Tests.CudaEmulation;

/// <summary>
/// Hand-written CUDA kernels in the generated source's style (extern "C" __global__, pointer/int/float
/// arguments, MC_EXPORT after each under MC_EMULATION), one module for the whole test class.
/// </summary>
internal static class TestKernels
{
    public const string Source = """
        // A prelude as the emitter writes it: CUDA-only definitions are hidden from the emulator.
        #ifndef MC_EMULATION
        #define MC_EXPORT(name)
        #endif

        // Every thread writes its 12 built-in coordinates at its linear global index.
        extern "C" __global__ void indices(int* out)
        {
            int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
            int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
            int* r = out + 12 * (block * blockDim.x * blockDim.y * blockDim.z + thread);
            r[0] = threadIdx.x; r[1] = threadIdx.y; r[2] = threadIdx.z;
            r[3] = blockIdx.x;  r[4] = blockIdx.y;  r[5] = blockIdx.z;
            r[6] = blockDim.x;  r[7] = blockDim.y;  r[8] = blockDim.z;
            r[9] = gridDim.x;   r[10] = gridDim.y;  r[11] = gridDim.z;
        }
        MC_EXPORT(indices)

        // y[i] = a * x[i] + b for i < n (the grid covers more than n).
        extern "C" __global__ void axpb(float* __restrict__ y, const float* __restrict__ x, float a, int n, float b)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] = a * x[i] + b;
        }
        MC_EXPORT(axpb)

        // out[row] = scale * sum(x[row, 0:n]): warp butterflies, then one warp over static shared partials.
        extern "C" __global__ void __launch_bounds__(256) row_sum_static(const float* __restrict__ x, float* __restrict__ out, int n, float scale)
        {
            __shared__ float partial[32];
            float v = 0.f;
            for (int i = threadIdx.x; i < n; i += blockDim.x) v += x[blockIdx.x * n + i];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
            __syncthreads();
            if (threadIdx.x < 32)
            {
                v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
                for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                if (threadIdx.x == 0) out[blockIdx.x] = v * scale;
            }
        }
        MC_EXPORT(row_sum_static)

        // out[row] = sum(x[row, 0:blockDim.x]): a tree in dynamic shared memory, a barrier per level.
        extern "C" __global__ void row_sum_dynamic(const float* x, float* out)
        {
            extern __shared__ float mc_dynamic_smem[];
            int t = threadIdx.x;
            mc_dynamic_smem[t] = x[blockIdx.x * blockDim.x + t];
            __syncthreads();
            for (int s = blockDim.x / 2; s > 0; s >>= 1)
            {
                if (t < s) mc_dynamic_smem[t] += mc_dynamic_smem[t + s];
                __syncthreads();
            }
            if (t == 0) out[blockIdx.x] = mc_dynamic_smem[0];
        }
        MC_EXPORT(row_sum_dynamic)

        // out[cols, rows] = in[rows, cols] through an 8x9 shared tile (2-D grid and block).
        extern "C" __global__ void transpose(const float* in, float* out, int rows, int cols)
        {
            __shared__ float tile[8][9];
            int c = blockIdx.x * 8 + threadIdx.x, r = blockIdx.y * 8 + threadIdx.y;
            if (r < rows && c < cols) tile[threadIdx.y][threadIdx.x] = in[r * cols + c];
            __syncthreads();
            int oc = blockIdx.y * 8 + threadIdx.x, orow = blockIdx.x * 8 + threadIdx.y;
            if (orow < cols && oc < rows) out[orow * rows + oc] = tile[threadIdx.x][threadIdx.y];
        }
        MC_EXPORT(transpose)

        // Per thread, 7 results: xor-butterfly sum, down by 3, up by 5, broadcast of lane 7, xor within
        // segments of 8, ballot of (v % 3 == 0), any(v > 100) + 2 * all(v >= 0).
        extern "C" __global__ void warp_ops(const int* in, int* out)
        {
            int t = blockIdx.x * blockDim.x + threadIdx.x;
            int v = in[t];
            int sum = v;
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            int* r = out + 7 * t;
            r[0] = sum;
            r[1] = __shfl_down_sync(0xffffffffu, v, 3);
            r[2] = __shfl_up_sync(0xffffffffu, v, 5);
            r[3] = __shfl_sync(0xffffffffu, v, 7);
            int seg = v;
            for (int o = 4; o > 0; o >>= 1) seg += __shfl_xor_sync(0xffffffffu, seg, o, 8);
            r[4] = seg;
            r[5] = (int)__ballot_sync(0xffffffffu, v % 3 == 0);
            r[6] = __any_sync(0xffffffffu, v > 100) + 2 * __all_sync(0xffffffffu, v >= 0);
        }
        MC_EXPORT(warp_ops)

        // bins[data[i]] += 1, total += data[i] as float, maximum = max(data), and a single owner picked
        // with atomicCAS (winners counts how many threads saw the slot free).
        extern "C" __global__ void atomics(const int* data, int n, int* bins, float* total, int* maximum, int* owner, int* winners)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i >= n) return;
            atomicAdd(&bins[data[i]], 1);
            atomicAdd(total, (float)data[i]);
            atomicMax(maximum, data[i]);
            if (atomicCAS(owner, -1, i) == -1) atomicAdd(winners, 1);
        }
        MC_EXPORT(atomics)

        // Even and odd threads reach different __syncthreads calls; every thread reaches one per phase,
        // which sm_70 and later allow. Each then reads its neighbour's value.
        extern "C" __global__ void divergent_barrier(int* out)
        {
            __shared__ int values[64];
            int t = threadIdx.x;
            if (t % 2 == 0) { values[t] = t; __syncthreads(); out[t] = values[t ^ 1]; }
            else { values[t] = -t; __syncthreads(); out[t] = values[t ^ 1] * 10; }
        }
        MC_EXPORT(divergent_barrier)

        // Threads past n leave before the barrier; the rest still synchronise (exited threads count as arrived).
        extern "C" __global__ void early_exit(int* out, int n)
        {
            __shared__ int values[64];
            int t = threadIdx.x;
            if (t >= n) return;
            values[t] = t * t;
            __syncthreads();
            out[t] = values[n - 1 - t];
        }
        MC_EXPORT(early_exit)

        // Illegal: half a warp shuffles with the full mask while the other half waits at __syncthreads.
        extern "C" __global__ void deadlock(int* out)
        {
            int t = threadIdx.x;
            if (t < 16) out[t] = __shfl_xor_sync(0xffffffffu, t, 1);
            else __syncthreads();
        }
        MC_EXPORT(deadlock)
        """;
}
