// mc_emulation.h: runs ModelCompiler's generated CUDA source on the CPU, compiled with g++.
//
//   g++ -O2 -std=c++17 -shared -fPIC -fvisibility=hidden -fno-strict-aliasing
//       -include mc_emulation.h -x c++ kernels.cu -o kernels.so -Wl,-z,defs
//
// The generated source guards its CUDA-only prelude with `#ifndef MC_EMULATION` and puts every inline-PTX
// use behind a macro with a portable definition; this header supplies the CUDA built-ins those kernels
// use. After each kernel the source writes `MC_EXPORT(name)`, which defines
//
//   extern "C" void mc_launch_NAME(void** args, unsigned gx, unsigned gy, unsigned gz,
//                                  unsigned bx, unsigned by, unsigned bz, unsigned sharedBytes);
//   extern "C" const char* mc_signature_NAME(void);   // one letter per parameter: p pointer, i int,
//                                                     // u unsigned, f float, ? anything else
//
// plus, once per library, `extern "C" const char* mc_emulation_last_error(void)` (null after a good
// launch). `args` is the driver API's argument array: args[i] points at the value of parameter i.
//
// Execution model (what must stay true): blocks run one after another on the calling OS thread; the
// threads of a block are cooperative fibers on their own stacks. A fiber runs until it reaches a
// barrier (__syncthreads*, a warp shuffle, vote, __syncwarp, __reduce_*_sync) or exits; then the
// scheduler resolves whatever can be resolved: a warp operation completes when every live lane named
// in the arrived lanes' masks has arrived (the scheduler then computes each lane's result from the
// values all lanes deposited), a block barrier when every live thread of the block is at one. Threads
// that exited count as arrived, as on sm_70 and later. A block where neither can make progress is
// reported as a deadlock through mc_emulation_last_error. Because only one block runs at a time,
// atomics are plain read-modify-writes and `__shared__` storage is function-scope static storage
// (declared thread_local so that `extern __shared__` also works); dynamic shared memory is one
// buffer, mc_dynamic_smem, filled with 0xFF bytes (NaN as floats) before each block so that reading
// what no thread wrote shows up. Static shared arrays keep their contents between blocks (a GPU
// gives garbage), so a kernel relying on that passes here and fails there.
#pragma once
#ifndef MC_EMULATION
#define MC_EMULATION 1
#endif

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <type_traits>
#include <utility>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ---------------------------------------------------------------------------------------------------
// Qualifiers
// ---------------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Block-scope thread_local has static storage duration, and `extern thread_local` is legal, so both
// `__shared__ float tile[32][33];` and `extern __shared__ float mc_dynamic_smem[];` compile.
#define __shared__ thread_local

// ---------------------------------------------------------------------------------------------------
// Vector types and dimensions
// ---------------------------------------------------------------------------------------------------
struct uint3 { unsigned int x, y, z; };
struct dim3
{
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

#define MC_EMU_VEC2(T, N, A) struct __attribute__((aligned(A))) N { T x, y; }; \
    static inline N make_##N(T x, T y) { N v; v.x = x; v.y = y; return v; }
#define MC_EMU_VEC3(T, N) struct N { T x, y, z; }; \
    static inline N make_##N(T x, T y, T z) { N v; v.x = x; v.y = y; v.z = z; return v; }
#define MC_EMU_VEC4(T, N, A) struct __attribute__((aligned(A))) N { T x, y, z, w; }; \
    static inline N make_##N(T x, T y, T z, T w) { N v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }
MC_EMU_VEC2(float, float2, 8)    MC_EMU_VEC3(float, float3)    MC_EMU_VEC4(float, float4, 16)
MC_EMU_VEC2(int, int2, 8)        MC_EMU_VEC3(int, int3)        MC_EMU_VEC4(int, int4, 16)
MC_EMU_VEC2(unsigned int, uint2, 8)                            MC_EMU_VEC4(unsigned int, uint4, 16)
MC_EMU_VEC2(double, double2, 16)
MC_EMU_VEC2(short, short2, 4)    MC_EMU_VEC4(short, short4, 8)
MC_EMU_VEC2(unsigned short, ushort2, 4)  MC_EMU_VEC4(unsigned short, ushort4, 8)
MC_EMU_VEC2(signed char, char2, 2)       MC_EMU_VEC4(signed char, char4, 4)
MC_EMU_VEC2(unsigned char, uchar2, 2)    MC_EMU_VEC4(unsigned char, uchar4, 4)
static inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
#undef MC_EMU_VEC2
#undef MC_EMU_VEC3
#undef MC_EMU_VEC4

#define warpSize 32

// ---------------------------------------------------------------------------------------------------
// Fibers: a context switch (hand-written on x86-64, ucontext elsewhere)
// ---------------------------------------------------------------------------------------------------
namespace mc_emu {

#if defined(__x86_64__)
// mc_emu_switch(&from_sp, to_sp): saves the callee-saved registers, MXCSR and the x87 control word on
// the current stack, stores the stack pointer in *from_sp, and restores the same from to_sp.
extern "C" void mc_emu_switch(void** fromSp, void* toSp);
__asm__(
    ".text\n"
    ".globl mc_emu_switch\n"
    ".hidden mc_emu_switch\n"
    ".type mc_emu_switch,@function\n"
    "mc_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size mc_emu_switch,.-mc_emu_switch\n");

struct Context { void* sp = nullptr; };

// Lays out a fresh stack so that the first switch to it "returns" into entry with the ABI's alignment.
static inline void context_init(Context& c, unsigned char* stack, size_t size, void (*entry)())
{
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
    void** s = reinterpret_cast<void**>(top);
    *--s = nullptr;                                  // entry's (never used) return address
    *--s = reinterpret_cast<void*>(entry);          // popped by ret
    for (int i = 0; i < 6; i++) *--s = nullptr;      // rbp rbx r12 r13 r14 r15
    --s;
    uint32_t* control = reinterpret_cast<uint32_t*>(s);
    control[0] = 0x1F80;                             // MXCSR default
    control[1] = 0x037F;                             // x87 control word default
    c.sp = s;
}
static inline void context_switch(Context& from, Context& to)
{
    __asm__ __volatile__("" ::: "memory");
    mc_emu_switch(&from.sp, to.sp);
    __asm__ __volatile__("" ::: "memory");
}
#else
struct Context { ucontext_t uc; };
static inline void context_init(Context& c, unsigned char* stack, size_t size, void (*entry)())
{
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
static inline void context_switch(Context& from, Context& to)
{
    __asm__ __volatile__("" ::: "memory");
    swapcontext(&from.uc, &to.uc);
    __asm__ __volatile__("" ::: "memory");
}
#endif

// ---------------------------------------------------------------------------------------------------
// The block scheduler
// ---------------------------------------------------------------------------------------------------
enum FiberState : int { Runnable, AtBlockBarrier, AtWarpOp, Exited };
enum WarpOp : int { OpSync, OpShuffle, OpBallot, OpAny, OpAll, OpReduceAddU, OpReduceMinU, OpReduceMaxU,
                    OpReduceAddI, OpReduceMinI, OpReduceMaxI };
enum BarrierOp : int { BarrierPlain, BarrierCount, BarrierAnd, BarrierOr };

constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kFiberStackBytes = 256 * 1024;
constexpr unsigned kMaxDynamicSharedBytes = 227 * 1024;   // sm_90's opt-in maximum

struct Fiber
{
    Context context;
    FiberState state;
    uint3 threadIndex;
    int lane, warp;
    // The operation the fiber waits in, and what it deposited / gets back.
    int op;
    unsigned mask;
    int sourceLane;              // shuffles: the lane to read, or -1 for "keep my own value"
    unsigned long long value;
    unsigned long long result;
};

struct Scheduler
{
    Context main;
    Fiber* fibers = nullptr;
    unsigned char* stacks = nullptr;
    int numFibers = 0;
    int capacity = 0;
    Fiber* current = nullptr;
    void (*body)(void*) = nullptr;
    void* bodyState = nullptr;
    const char* error = nullptr;
    char errorText[512];
};

static Scheduler g_scheduler;
static uint3 g_threadIdx, g_blockIdx;
static dim3 g_blockDim, g_gridDim;

static void fiber_entry()
{
    Scheduler& s = g_scheduler;
    s.body(s.bodyState);
    s.current->state = Exited;
    context_switch(s.current->context, s.main);
    __builtin_trap();   // an exited fiber is never resumed
}

// Each fiber gets a stack with a PROT_NONE guard page below it, so an overflow faults instead of
// silently corrupting its neighbour. Every guard page is a mapping of its own, and the kernel allows about
// 65,000 per process (vm.max_map_count), which a test process loading dozens of modules reaches: so only as
// many stacks as the widest block launched so far (in steps of 128), and the library's unload releases them.
static void release_fiber_stacks()
{
    Scheduler& s = g_scheduler;
    if (s.stacks != nullptr) munmap(s.stacks, (kFiberStackBytes + 4096) * (size_t)s.capacity);
    free(s.fibers);
    s.stacks = nullptr;
    s.fibers = nullptr;
    s.capacity = 0;
}

__attribute__((destructor)) static void release_fiber_stacks_at_unload() { release_fiber_stacks(); }

static bool ensure_capacity(int numThreads)
{
    Scheduler& s = g_scheduler;
    if (numThreads <= s.capacity) return true;
    release_fiber_stacks();
    const int capacity = (numThreads + 127) / 128 * 128;
    const size_t page = 4096, stride = kFiberStackBytes + page;
    void* stacks = mmap(nullptr, stride * capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stacks == MAP_FAILED) return false;
    for (int i = 0; i < capacity; i++) mprotect(static_cast<unsigned char*>(stacks) + i * stride, page, PROT_NONE);
    s.stacks = static_cast<unsigned char*>(stacks);
    s.fibers = static_cast<Fiber*>(calloc(capacity, sizeof(Fiber)));
    s.capacity = capacity;
    return s.fibers != nullptr;
}

static inline void suspend()
{
    Scheduler& s = g_scheduler;
    context_switch(s.current->context, s.main);
}

static inline unsigned long long warp_op(int op, unsigned mask, unsigned long long value, int sourceLane)
{
    Fiber* f = g_scheduler.current;
    f->op = op; f->mask = mask; f->value = value; f->sourceLane = sourceLane;
    f->state = AtWarpOp;
    suspend();
    return f->result;
}

static inline unsigned long long block_barrier(int op, int predicate)
{
    Fiber* f = g_scheduler.current;
    f->op = op; f->value = predicate != 0;
    f->state = AtBlockBarrier;
    suspend();
    return f->result;
}

// Completes the warp operations whose lanes have all arrived; true when any did.
static bool resolve_warps()
{
    Scheduler& s = g_scheduler;
    bool progressed = false;
    for (int base = 0; base < s.numFibers; base += 32)
    {
        Fiber* w = s.fibers + base;
        int numLanes = s.numFibers - base < 32 ? s.numFibers - base : 32;
        unsigned arrived = 0, live = 0, wanted = 0;
        for (int l = 0; l < numLanes; l++)
        {
            if (w[l].state != Exited) live |= 1u << l;
            if (w[l].state == AtWarpOp) { arrived |= 1u << l; wanted |= w[l].mask; }
        }
        if (arrived == 0 || (wanted & live & ~arrived) != 0) continue;
        for (int l = 0; l < numLanes; l++)
        {
            Fiber& f = w[l];
            if (f.state != AtWarpOp) continue;
            unsigned group = f.mask & arrived;
            unsigned ballot = 0;
            for (int m = 0; m < numLanes; m++) if ((group >> m & 1) && w[m].value != 0) ballot |= 1u << m;
            switch (f.op)
            {
                case OpSync: f.result = 0; break;
                case OpShuffle:
                {
                    int src = f.sourceLane;
                    f.result = src >= 0 && src < numLanes && (arrived >> src & 1) ? w[src].value : f.value;
                    break;
                }
                case OpBallot: f.result = ballot; break;
                case OpAny: f.result = ballot != 0; break;
                case OpAll: f.result = ballot == group; break;
                default:
                {
                    long long acc = 0; bool first = true;
                    for (int m = 0; m < numLanes; m++)
                    {
                        if (!(group >> m & 1)) continue;
                        unsigned uv = static_cast<unsigned>(w[m].value); int iv = static_cast<int>(uv);
                        long long v = f.op >= OpReduceAddI ? iv : static_cast<long long>(uv);
                        if (first) { acc = v; first = false; continue; }
                        switch (f.op)
                        {
                            case OpReduceAddU: case OpReduceAddI: acc += v; break;
                            case OpReduceMinU: case OpReduceMinI: acc = v < acc ? v : acc; break;
                            default: acc = v > acc ? v : acc; break;
                        }
                    }
                    f.result = static_cast<unsigned long long>(static_cast<unsigned>(acc));
                    break;
                }
            }
        }
        for (int l = 0; l < numLanes; l++) if (w[l].state == AtWarpOp) w[l].state = Runnable;
        progressed = true;
    }
    return progressed;
}

__attribute__((format(printf, 1, 2))) static void fail(const char* format, ...)
{
    Scheduler& s = g_scheduler;
    va_list list;
    va_start(list, format);
    vsnprintf(s.errorText, sizeof s.errorText, format, list);
    va_end(list);
    s.error = s.errorText;
}

// Runs every thread of the current block (g_blockIdx, g_blockDim) to completion.
static void run_block()
{
    Scheduler& s = g_scheduler;
    const int n = s.numFibers;
    for (int i = 0; i < n; i++)
    {
        Fiber& f = s.fibers[i];
        f.state = Runnable;
        f.threadIndex = uint3{ unsigned(i % g_blockDim.x), unsigned(i / g_blockDim.x % g_blockDim.y), unsigned(i / (g_blockDim.x * g_blockDim.y)) };
        f.lane = i % 32; f.warp = i / 32;
        f.result = 0;
        context_init(f.context, s.stacks + i * (kFiberStackBytes + 4096) + 4096, kFiberStackBytes, fiber_entry);
    }
    for (;;)
    {
        for (int i = 0; i < n; i++)
        {
            Fiber& f = s.fibers[i];
            if (f.state != Runnable) continue;
            s.current = &f;
            g_threadIdx = f.threadIndex;
            context_switch(s.main, f.context);
        }
        if (resolve_warps()) continue;
        int exited = 0, atBarrier = 0, atWarp = 0;
        for (int i = 0; i < n; i++)
        {
            exited += s.fibers[i].state == Exited;
            atBarrier += s.fibers[i].state == AtBlockBarrier;
            atWarp += s.fibers[i].state == AtWarpOp;
        }
        if (exited == n) return;
        if (atWarp == 0 && exited + atBarrier == n)
        {
            int count = 0;
            for (int i = 0; i < n; i++) if (s.fibers[i].state == AtBlockBarrier) count += s.fibers[i].value != 0;
            for (int i = 0; i < n; i++)
            {
                Fiber& f = s.fibers[i];
                if (f.state != AtBlockBarrier) continue;
                f.result = f.op == BarrierCount ? count : f.op == BarrierAnd ? count == atBarrier : f.op == BarrierOr ? count != 0 : 0;
                f.state = Runnable;
            }
            continue;
        }
        fail("deadlock in block (%d,%d,%d): %d threads wait at a warp operation whose lanes never all arrive (others wait at __syncthreads or exited)",
             int(g_blockIdx.x), int(g_blockIdx.y), int(g_blockIdx.z), atWarp);
        return;
    }
}

} // namespace mc_emu

// ---------------------------------------------------------------------------------------------------
// Built-in variables: the scheduler sets them before resuming each fiber.
// ---------------------------------------------------------------------------------------------------
#define threadIdx (::mc_emu::g_threadIdx)
#define blockIdx (::mc_emu::g_blockIdx)
#define blockDim (::mc_emu::g_blockDim)
#define gridDim (::mc_emu::g_gridDim)

// Dynamic shared memory: the generated source declares `extern __shared__ float mc_dynamic_smem[];`.
alignas(256) thread_local float mc_dynamic_smem[mc_emu::kMaxDynamicSharedBytes / sizeof(float)];

// ---------------------------------------------------------------------------------------------------
// Barriers, shuffles, votes
// ---------------------------------------------------------------------------------------------------
static inline void __syncthreads() { mc_emu::block_barrier(mc_emu::BarrierPlain, 0); }
static inline int __syncthreads_count(int p) { return int(mc_emu::block_barrier(mc_emu::BarrierCount, p)); }
static inline int __syncthreads_and(int p) { return int(mc_emu::block_barrier(mc_emu::BarrierAnd, p)); }
static inline int __syncthreads_or(int p) { return int(mc_emu::block_barrier(mc_emu::BarrierOr, p)); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { mc_emu::warp_op(mc_emu::OpSync, mask, 0, -1); }
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

namespace mc_emu {
template <class T> static inline unsigned long long to_bits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move values of at most 8 bytes");
    unsigned long long bits = 0; memcpy(&bits, &v, sizeof(T)); return bits;
}
template <class T> static inline T from_bits(unsigned long long bits) { T v; memcpy(&v, &bits, sizeof(T)); return v; }
template <class T> static inline T shuffle(unsigned mask, T v, int src) { return from_bits<T>(warp_op(OpShuffle, mask, to_bits(v), src)); }
static inline int lane_id() { return g_scheduler.current->lane; }
}

// Lanes are split into segments of `width` (a power of two); a source outside the caller's segment
// (or a lane that exited) leaves the caller's own value, as the PTX shfl instruction does.
template <class T> static inline T __shfl_sync(unsigned mask, T v, int srcLane, int width = warpSize)
{
    int lane = mc_emu::lane_id(), segment = lane & ~(width - 1);
    return mc_emu::shuffle(mask, v, segment + (srcLane & (width - 1)));
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    int lane = mc_emu::lane_id();
    return mc_emu::shuffle(mask, v, (lane & (width - 1)) >= int(delta) ? lane - int(delta) : -1);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    int lane = mc_emu::lane_id();
    return mc_emu::shuffle(mask, v, (lane & (width - 1)) + int(delta) < width ? lane + int(delta) : -1);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = warpSize)
{
    int lane = mc_emu::lane_id(), src = lane ^ laneMask;
    return mc_emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : -1);
}
static inline unsigned __ballot_sync(unsigned mask, int p) { return unsigned(mc_emu::warp_op(mc_emu::OpBallot, mask, p != 0, -1)); }
static inline int __any_sync(unsigned mask, int p) { return int(mc_emu::warp_op(mc_emu::OpAny, mask, p != 0, -1)); }
static inline int __all_sync(unsigned mask, int p) { return int(mc_emu::warp_op(mc_emu::OpAll, mask, p != 0, -1)); }
static inline unsigned __reduce_add_sync(unsigned mask, unsigned v) { return unsigned(mc_emu::warp_op(mc_emu::OpReduceAddU, mask, v, -1)); }
static inline unsigned __reduce_min_sync(unsigned mask, unsigned v) { return unsigned(mc_emu::warp_op(mc_emu::OpReduceMinU, mask, v, -1)); }
static inline unsigned __reduce_max_sync(unsigned mask, unsigned v) { return unsigned(mc_emu::warp_op(mc_emu::OpReduceMaxU, mask, v, -1)); }
static inline int __reduce_add_sync(unsigned mask, int v) { return int(mc_emu::warp_op(mc_emu::OpReduceAddI, mask, unsigned(v), -1)); }
static inline int __reduce_min_sync(unsigned mask, int v) { return int(mc_emu::warp_op(mc_emu::OpReduceMinI, mask, unsigned(v), -1)); }
static inline int __reduce_max_sync(unsigned mask, int v) { return int(mc_emu::warp_op(mc_emu::OpReduceMaxI, mask, unsigned(v), -1)); }
// The lanes of the caller's warp that have not exited (a GPU gives the converged lanes; our kernels
// only use it on converged code).
static inline unsigned __activemask()
{
    mc_emu::Scheduler& s = mc_emu::g_scheduler;
    int base = s.current->warp * 32; unsigned m = 0;
    for (int l = 0; l < 32 && base + l < s.numFibers; l++) if (s.fibers[base + l].state != mc_emu::Exited) m |= 1u << l;
    return m;
}

// ---------------------------------------------------------------------------------------------------
// Atomics: one block runs at a time and fibers switch only at barriers, so plain read-modify-write.
// ---------------------------------------------------------------------------------------------------
#define MC_EMU_ATOMIC(NAME, T, EXPR) static inline T NAME(T* address, T val) { T old = *address; *address = (EXPR); return old; }
MC_EMU_ATOMIC(atomicAdd, int, old + val)
MC_EMU_ATOMIC(atomicAdd, unsigned int, old + val)
MC_EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
MC_EMU_ATOMIC(atomicAdd, float, old + val)
MC_EMU_ATOMIC(atomicAdd, double, old + val)
MC_EMU_ATOMIC(atomicSub, int, old - val)
MC_EMU_ATOMIC(atomicSub, unsigned int, old - val)
MC_EMU_ATOMIC(atomicExch, int, val)
MC_EMU_ATOMIC(atomicExch, unsigned int, val)
MC_EMU_ATOMIC(atomicExch, unsigned long long, val)
MC_EMU_ATOMIC(atomicExch, float, val)
MC_EMU_ATOMIC(atomicMax, int, old > val ? old : val)
MC_EMU_ATOMIC(atomicMax, unsigned int, old > val ? old : val)
MC_EMU_ATOMIC(atomicMax, unsigned long long, old > val ? old : val)
MC_EMU_ATOMIC(atomicMin, int, old < val ? old : val)
MC_EMU_ATOMIC(atomicMin, unsigned int, old < val ? old : val)
MC_EMU_ATOMIC(atomicMin, unsigned long long, old < val ? old : val)
MC_EMU_ATOMIC(atomicAnd, int, old & val)
MC_EMU_ATOMIC(atomicAnd, unsigned int, old & val)
MC_EMU_ATOMIC(atomicOr, int, old | val)
MC_EMU_ATOMIC(atomicOr, unsigned int, old | val)
MC_EMU_ATOMIC(atomicXor, int, old ^ val)
MC_EMU_ATOMIC(atomicXor, unsigned int, old ^ val)
#undef MC_EMU_ATOMIC
static inline unsigned int atomicInc(unsigned int* a, unsigned int limit) { unsigned old = *a; *a = old >= limit ? 0 : old + 1; return old; }
static inline unsigned int atomicDec(unsigned int* a, unsigned int limit) { unsigned old = *a; *a = (old == 0 || old > limit) ? limit : old - 1; return old; }
static inline int atomicCAS(int* a, int compare, int val) { int old = *a; if (old == compare) *a = val; return old; }
static inline unsigned int atomicCAS(unsigned int* a, unsigned int compare, unsigned int val) { unsigned old = *a; if (old == compare) *a = val; return old; }
static inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long compare, unsigned long long val) { unsigned long long old = *a; if (old == compare) *a = val; return old; }
static inline unsigned short atomicCAS(unsigned short* a, unsigned short compare, unsigned short val) { unsigned short old = *a; if (old == compare) *a = val; return old; }

// ---------------------------------------------------------------------------------------------------
// Math and bit intrinsics (the fast-math ones take the accurate path; tolerances cover the difference)
// ---------------------------------------------------------------------------------------------------
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
// glibc declares __expf and friends itself (its internal names), so these are macros.
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __sincosf(x, s, c) sincosf((x), (s), (c))
#define __powf(x, y) powf((x), (y))
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline float __int_as_float(int v) { float f; memcpy(&f, &v, 4); return f; }
static inline int __float_as_int(float f) { int v; memcpy(&v, &f, 4); return v; }
static inline float __uint_as_float(unsigned int v) { float f; memcpy(&f, &v, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned v; memcpy(&v, &f, 4); return v; }
static inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
static inline int __float2int_rz(float x) { return int(x); }
static inline float __int2float_rn(int x) { return float(x); }
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline unsigned int __brev(unsigned int x) { x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1); x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2); x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4); return __builtin_bswap32(x); }
static inline int __mul24(int a, int b) { return a * b; }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) { return unsigned((unsigned long long)a * b >> 32); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return (unsigned long long)((unsigned __int128)a * b >> 64); }
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline long long clock64() { return 0; }

// ---------------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------------
namespace mc_emu {
template <class T> struct ArgCode { static constexpr char value = std::is_pointer<T>::value ? 'p' : '?'; };
template <> struct ArgCode<int> { static constexpr char value = 'i'; };
template <> struct ArgCode<unsigned int> { static constexpr char value = 'u'; };
template <> struct ArgCode<float> { static constexpr char value = 'f'; };

template <class... A> static const char* signature(void (*)(A...))
{
    static const char text[] = { ArgCode<A>::value..., '\0' };
    return text;
}

template <class... A, size_t... I>
static void invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>)
{
    kernel(*reinterpret_cast<typename std::remove_cv<A>::type*>(args[I])...);
    (void)args;
}

template <class... A> struct Call { void (*kernel)(A...); void** args; };
template <class... A> static void call_body(void* state)
{
    Call<A...>* c = static_cast<Call<A...>*>(state);
    invoke(c->kernel, c->args, std::index_sequence_for<A...>{});
}

template <class... A>
static void launch(void (*kernel)(A...), void** args, unsigned gx, unsigned gy, unsigned gz,
                   unsigned bx, unsigned by, unsigned bz, unsigned sharedBytes)
{
    Scheduler& s = g_scheduler;
    s.error = nullptr;
    unsigned long long numThreads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || numThreads == 0) { fail("empty launch: grid (%d,%d,%d) block x %d", int(gx), int(gy), int(gz), int(bx)); return; }
    if (numThreads > (unsigned long long)kMaxThreadsPerBlock) { fail("block (%d,%d,%d) has more than %d threads", int(bx), int(by), int(bz), kMaxThreadsPerBlock); return; }
    if (sharedBytes > kMaxDynamicSharedBytes) { fail("dynamic shared memory of %d bytes exceeds %d", int(sharedBytes), int(kMaxDynamicSharedBytes)); return; }
    if (!ensure_capacity(int(numThreads))) { fail("could not allocate %d fiber stacks", int(numThreads)); return; }
    Call<A...> call{ kernel, args };
    s.body = &call_body<A...>;
    s.bodyState = &call;
    s.numFibers = int(numThreads);
    g_gridDim = dim3(gx, gy, gz);
    g_blockDim = dim3(bx, by, bz);
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++)
            {
                g_blockIdx = uint3{ x, y, z };
                memset(mc_dynamic_smem, 0xFF, sharedBytes);
                run_block();
                if (s.error != nullptr) return;
            }
}
} // namespace mc_emu

extern "C" __attribute__((visibility("default"))) const char* mc_emulation_last_error(void) { return mc_emu::g_scheduler.error; }

#define MC_EXPORT(name) \
    extern "C" __attribute__((visibility("default"))) void mc_launch_##name(void** args, unsigned gx, unsigned gy, unsigned gz, \
        unsigned bx, unsigned by, unsigned bz, unsigned sharedBytes) \
    { ::mc_emu::launch(&name, args, gx, gy, gz, bx, by, bz, sharedBytes); } \
    extern "C" __attribute__((visibility("default"))) const char* mc_signature_##name(void) { return ::mc_emu::signature(&name); }
