/*
 * portable.cuh — the small dialect every glasscuda kernel is written in.
 *
 * One source, two targets. NVRTC (through CuPy) compiles a kernel file for the
 * GPU; the host C++ compiler with OpenMP compiles the very same file for the
 * CPU. Each file is compiled once per precision with
 *
 *     -Dreal=float  -DPRECISION=f32      or      -Dreal=double -DPRECISION=f64
 *
 * so `KERNEL(relu_forward)` defines the symbol `relu_forward_f32` (or `_f64`)
 * and the body is written once, against `real`.
 *
 * Kernels are written as "one logical thread per output element" with two loop
 * forms:
 *
 *   FOR_EACH(i, n)                  i = 0 .. n-1, every element independent.
 *
 *   FOR_EACH_REDUCTION(i, n, len)   as FOR_EACH, for outputs that each reduce
 *                                   `len` inputs in a serial loop (the host
 *                                   needs the total work to decide on threads).
 *
 *   FOR_EACH_LINE(line, L, R) {     line = 0 .. L-1, in parallel;
 *       ...per-line work...
 *       FOR_EACH_IN_RUN(j, R) ...   j = 0 .. R-1 over a contiguous run.
 *       FOR_EACH_IN_RANGE(j, a, b)  j = a .. b-1, part of the run (0 <= a, b <= R):
 *                                   a run's interior and its edges can take
 *                                   different code.
 *   }
 *
 *   SUM_LOOP(total) for (...) total += ...;
 *                                   a serial sum inside one logical thread;
 *                                   the host may vectorise it (partial sums
 *                                   in SIMD lanes, a fixed order on each run).
 *                                   SUM_LOOP(a, b, ...) for several sums in
 *                                   one loop.
 *
 * A line's body may hold several FOR_EACH_IN_RUN loops, one after another.
 * On the device a logical thread is one (line, j): the per-line work runs in
 * every thread and each FOR_EACH_IN_RUN executes once, for that thread's j
 * (a FOR_EACH_IN_RANGE once if j is in its range, else not at all).
 * On the host a thread takes whole lines: the per-line work (divisions and
 * modulos on `line`) runs once per line and each FOR_EACH_IN_RUN is a SIMD
 * loop over the run. Integer division per element is what makes a naive flat
 * loop slow on a CPU; this form keeps it out of the inner loop.
 *
 * Rules that keep the two targets identical: no shared memory, no warp
 * intrinsics, no atomics; every output element is written by exactly one
 * logical thread, so results are deterministic on both targets.
 */
#pragma once

#if !defined(real) || !defined(PRECISION)
#error "compile with -Dreal=float -DPRECISION=f32 (or double / f64)"
#endif

#define GC_CAT_(a, b) a##_##b
#define GC_CAT(a, b) GC_CAT_(a, b)

/* The device expansion: NVRTC and nvcc, and the host when it emulates a grid
   (emulated_grid.cuh defines the CUDA built-ins this branch uses). */
#if defined(__CUDACC__) || defined(GC_EMULATED_GRID)

#define KERNEL(name) extern "C" __global__ void GC_CAT(name, PRECISION)
#define DEVICE __device__ __forceinline__

#define GC_THREAD_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#define GC_THREAD_COUNT ((long long)blockDim.x * gridDim.x)

#define FOR_EACH(i, n) \
    for (long long i = GC_THREAD_INDEX; i < (long long)(n); i += GC_THREAD_COUNT)

#define FOR_EACH_REDUCTION(i, n, len) FOR_EACH(i, n)
#define SUM_LOOP(...)

/* The device folds (line, j) into one grid-stride index. FOR_EACH_IN_RUN runs
   its body once, for this thread's j; it exists so that the host can make it a
   vectorised loop over the whole run. */
#define FOR_EACH_LINE(line, n_lines, run)                                       \
    for (long long gc_k_ = GC_THREAD_INDEX, gc_run_ = (run);                    \
         gc_k_ < (long long)(n_lines) * gc_run_; gc_k_ += GC_THREAD_COUNT)       \
        for (long long line = gc_k_ / gc_run_, gc_j_ = gc_k_ % gc_run_,         \
             gc_line_once_ = 1; gc_line_once_; gc_line_once_ = 0)

#define FOR_EACH_IN_RUN(j, run) \
    for (long long j = gc_j_, gc_run_once_ = 1; gc_run_once_; gc_run_once_ = 0)

#define FOR_EACH_IN_RANGE(j, begin, end)                                                           \
    for (long long j = gc_j_, gc_run_once_ = gc_j_ >= (long long)(begin) && gc_j_ < (long long)(end); \
         gc_run_once_; gc_run_once_ = 0)

#else  /* host C++ */

#include <math.h>

#define KERNEL(name) extern "C" void GC_CAT(name, PRECISION)
#define DEVICE static inline

/* Below this many elements a loop runs on the calling thread: waking the
   OpenMP team costs more than a small loop (Adam on a bias, a loss on a batch). */
#define GC_PARALLEL_MIN_WORK 16384
#define GC_PRAGMA(x) _Pragma(#x)

#define FOR_EACH(i, n)                                                       \
    GC_PRAGMA(omp parallel for schedule(static) if ((long long)(n) >= GC_PARALLEL_MIN_WORK)) \
    for (long long i = 0; i < (long long)(n); ++i)

#define FOR_EACH_REDUCTION(i, n, len)                                        \
    GC_PRAGMA(omp parallel for schedule(static)                              \
              if ((long long)(n) * (long long)(len) >= GC_PARALLEL_MIN_WORK)) \
    for (long long i = 0; i < (long long)(n); ++i)

#define FOR_EACH_LINE(line, n_lines, run)                                    \
    GC_PRAGMA(omp parallel for schedule(static)                              \
              if ((long long)(n_lines) * (long long)(run) >= GC_PARALLEL_MIN_WORK)) \
    for (long long line = 0; line < (long long)(n_lines); ++line)

#define SUM_LOOP(...) GC_PRAGMA(omp simd reduction(+ : __VA_ARGS__))

#define FOR_EACH_IN_RUN(j, run) \
    _Pragma("omp simd")         \
    for (long long j = 0; j < (long long)(run); ++j)

#define FOR_EACH_IN_RANGE(j, begin, end) \
    _Pragma("omp simd")                  \
    for (long long j = (begin); j < (long long)(end); ++j)

#endif

/* Math that reads the same on both targets, in the kernel's precision. */
DEVICE real gc_exp(real x) { return exp(x); }
DEVICE real gc_log(real x) { return log(x); }
DEVICE real gc_log1p(real x) { return log1p(x); }
DEVICE real gc_expm1(real x) { return expm1(x); }
DEVICE real gc_sqrt(real x) { return sqrt(x); }
DEVICE real gc_pow(real x, real y) { return pow(x, y); }
DEVICE real gc_max(real a, real b) { return a > b ? a : b; }
DEVICE real gc_min(real a, real b) { return a < b ? a : b; }
DEVICE long long gc_maxll(long long a, long long b) { return a > b ? a : b; }
DEVICE long long gc_minll(long long a, long long b) { return a < b ? a : b; }
