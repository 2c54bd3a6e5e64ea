// CPU shim: compile CUDA kernels written without shared memory or block synchronisation with a
// plain C++ compiler (g++ -std=c++17), and run them by looping over blocks and threads.
//
// Why this is an honest emulation for kernels/dynamic_dwconv.cu: every thread there only reads
// its inputs and writes outputs no other thread writes, so running the threads one after another
// performs the same operations, in the same order, as the GPU does in parallel. A kernel that
// used __shared__ memory or __syncthreads() would not be emulated faithfully by a sequential loop,
// so those names are made compile errors here instead of being silently approximated.
//
// Not emulated (stated so nobody relies on it): warp intrinsics, atomics, inline PTX (the kernel
// source takes its #ifndef __CUDA_ARCH__ branches here), texture/surface objects.
#ifndef DLGSANET_CPU_SHIM_H
#define DLGSANET_CPU_SHIM_H

#ifdef __CUDACC__
#error "tests/kernels/cpu_shim.h is for host C++ compilers only"
#endif

#include <math.h>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define DWC_UNROLL
#define DWC_ROLLED
#define DWC_UNROLL_CHANNELS
#define __shared__ DWC_CPU_SHIM_CANNOT_EMULATE_SHARED_MEMORY
#define __syncthreads() static_assert(sizeof(int) == 0, "cpu_shim.h: __syncthreads() needs real threads")

struct dim3 {
  unsigned int x, y, z;
};

// The built-in variables. thread_local so that two host threads could emulate two launches.
static thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

inline float __uint_as_float(unsigned int u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// fmaf / fma: the C library's (math.h), correctly rounded like the GPU's fused multiply-add.

// Run body() once for every (block, thread) of the launch, blocks and threads in linear order.
template <typename Body>
void cpu_shim_launch(dim3 grid, dim3 block, Body body) {
  gridDim = grid;
  blockDim = block;
  for (unsigned int bz = 0; bz < grid.z; ++bz)
    for (unsigned int by = 0; by < grid.y; ++by)
      for (unsigned int bx = 0; bx < grid.x; ++bx)
        for (unsigned int tz = 0; tz < block.z; ++tz)
          for (unsigned int ty = 0; ty < block.y; ++ty)
            for (unsigned int tx = 0; tx < block.x; ++tx) {
              blockIdx = dim3{bx, by, bz};
              threadIdx = dim3{tx, ty, tz};
              body();
            }
}

#endif  // DLGSANET_CPU_SHIM_H
