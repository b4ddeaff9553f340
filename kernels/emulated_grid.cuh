/*
 * emulated_grid.cuh — the CUDA built-ins that the device expansion of
 * portable.cuh uses, defined for the host, so that the kernels' device code
 * can run on a CPU over an emulated grid.
 *
 * Compiled with -DGC_EMULATED_GRID -include emulated_grid.cuh, a kernel file
 * becomes one host function per kernel that does the work of ONE (block,
 * thread) of a grid: its grid-stride loops start at
 * blockIdx.x * blockDim.x + threadIdx.x and step by blockDim.x * gridDim.x.
 * The caller (glasscuda/backend/emulated.py) sets the four built-ins below and
 * calls the kernel once for every thread of the grid, in any order. A kernel
 * that is right on the device is right here for every grid size and order; a
 * kernel whose loops skip, repeat or race shows it.
 *
 * The built-ins are weak globals so that every object of the library shares
 * one copy and Python can set them by name.
 */
#pragma once

#include <math.h>

struct gc_dim3 { unsigned int x, y, z; };

extern "C" {
__attribute__((weak)) gc_dim3 gc_emulated_blockIdx = {0, 0, 0};
__attribute__((weak)) gc_dim3 gc_emulated_threadIdx = {0, 0, 0};
__attribute__((weak)) gc_dim3 gc_emulated_blockDim = {1, 1, 1};
__attribute__((weak)) gc_dim3 gc_emulated_gridDim = {1, 1, 1};
}

#define blockIdx gc_emulated_blockIdx
#define threadIdx gc_emulated_threadIdx
#define blockDim gc_emulated_blockDim
#define gridDim gc_emulated_gridDim

#define __global__
/* static: each precision's helpers stay private to their object, as each
   NVRTC module is on the device. */
#define __device__ static
#define __forceinline__ inline
