// Dynamic depth-wise convolution of DLGSANet's MHDLSA block: forward and both gradients.
//
//   out[n,c,h,w] = sum_{i,j} k[n, c / (C/G), i, j, h, w] * x[n, c, h+i-P, w+j-P],  P = K/2,
//   zero padding; x, out: [N,C,H,W] contiguous; k: [N,G,K,K,H,W] contiguous.
//
// One source, three compilers:
//   * NVRTC at run time through cupy (dlgsanet/ops/dynamic_dwconv/cupy_backend.py): no nvcc on users' machines,
//     every template instance (dtype, K) is compiled on demand, so any odd K works;
//   * nvcc, for the compile check of sm_75 / sm_86 / sm_90 (tests/test_kernels_nvcc.py);
//   * g++ through tests/kernels/cpu_shim.h, which loops over blocks and threads, so CI proves the
//     arithmetic against the PyTorch path without a GPU (tests/test_kernels_cpu.py).
//
// Design, and why:
//   * Every thread owns its outputs: no shared memory, no __syncthreads, no atomics in any pass.
//     That keeps all three passes deterministic, and a sequential block/thread loop on the CPU
//     performs the same arithmetic in the same order as the GPU (tests/kernels/cpu_shim.h).
//   * The per-pixel kernel tensor is by far the largest operand (K*K*G values per pixel against C
//     for x), so each kernel tap is read from memory once and reused, in a register, for all the
//     C/G channels of its group (in blocks of DWC_CHANNEL_BLOCK accumulators).
//   * In the forward and grad-input passes a thread computes DWC_STRIP neighbouring outputs of a
//     row, so each source value it loads serves up to K of its products (see dwc_gather): both
//     passes faster than with one output per thread (figures in docs/cuda.md), same bits.
//   * Threads run along the width (consecutive threads = consecutive pixels or strips), so the
//     loads of a warp cover one contiguous run of memory; neighbouring threads share rows in L1.
//   * Storage may be float, double, half or bfloat16; arithmetic is float (double for double),
//     one fused multiply-add per term, one rounding to the storage type at the end.
//   * Offsets into the kernel tensor use 64-bit integers (it reaches 2^31 elements at 2k x 2k).
//     Pixel indices within one plane are 32-bit; the launcher guarantees H*W <= 2^30.
//   * Grid-stride loops in both grid dimensions: any launch shape computes every output once.

#ifndef DLGSANET_DYNAMIC_DWCONV_CU
#define DLGSANET_DYNAMIC_DWCONV_CU

#ifndef DWC_CHANNEL_BLOCK
#define DWC_CHANNEL_BLOCK 6  // channels per pass over the taps; DLGSANet's presets have 6 channels a group
#endif

#ifndef DWC_STRIP
#define DWC_STRIP 2  // outputs along a row per thread in the forward and grad-input passes (the launcher's STRIP)
#endif

// Full unrolling of the kernel-column and channel-block loops (K is a template parameter). The shim
// defines DWC_UNROLL empty: host compilers unroll on their own and warn about CUDA's pragma.
#ifndef DWC_UNROLL
#define DWC_UNROLL _Pragma("unroll")
#endif

// Loops left rolled on purpose: unrolling the kernel rows too lets the compiler hoist every load
// of the K x K window and costs 200+ registers per thread (measured with ptxas -v).
#ifndef DWC_ROLLED
#define DWC_ROLLED _Pragma("unroll 1")
#endif

// grad_k's channel loop: two channels per iteration overlap their loads; unrolling by four spills
// registers on sm_75 at DWC_MIN_BLOCKS 3 (ptxas -v; tests/test_kernels_nvcc.py checks for spills).
#ifndef DWC_UNROLL_CHANNELS
#define DWC_UNROLL_CHANNELS _Pragma("unroll 2")
#endif

#ifndef DWC_BLOCK_THREADS
#define DWC_BLOCK_THREADS 256  // the launcher's block size; also the compiler's occupancy hint
#endif

#ifndef DWC_MIN_BLOCKS
#define DWC_MIN_BLOCKS 3  // resident blocks per SM asked of the compiler: at most 80 registers a thread
#endif

// The same for the forward and grad-input passes: at most 128 registers, none spilled at DWC_STRIP 2.
// Strips of 4 at 2 blocks, or of 2 at 3 blocks, ran faster on an H200 (docs/cuda.md) but spill
// registers on sm_75, which tests/test_kernels_nvcc.py refuses until they are measured on older
// GPUs too.
#ifndef DWC_GATHER_MIN_BLOCKS
#define DWC_GATHER_MIN_BLOCKS 2
#endif

// ---------------------------------------------------------------------------------------------
// Storage types. Plain 16-bit structs instead of cuda_fp16.h / cuda_bf16.h: no header has to be
// found by NVRTC (whose include paths differ between CUDA and cupy versions), and the CPU shim
// sees the same types. Same size and bit layout as torch.float16 / torch.bfloat16.
// ---------------------------------------------------------------------------------------------
struct dwc_half {
  unsigned short bits;
};
struct dwc_bfloat16 {
  unsigned short bits;
};

// IEEE binary16 -> binary32, exact.
__device__ __forceinline__ float dwc_half_to_float(unsigned short h) {
#ifdef __CUDA_ARCH__
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#else
  const unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
  const unsigned int exponent = (h >> 10) & 0x1fu;
  const unsigned int mantissa = h & 0x3ffu;
  if (exponent == 0u) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = (float)mantissa * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31u) return __uint_as_float(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  return __uint_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

// binary32 -> binary16, round to nearest even (what cvt.rn.f16.f32 and torch do).
__device__ __forceinline__ unsigned short dwc_float_to_half(float f) {
#ifdef __CUDA_ARCH__
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#else
  const unsigned int bits = __float_as_uint(f);
  const unsigned int sign = (bits >> 16) & 0x8000u;
  const unsigned int magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf stays inf; NaN stays a quiet NaN
    return (unsigned short)(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u | ((magnitude >> 13) & 0x3ffu) : 0u));
  }
  if (magnitude >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (magnitude < 0x38800000u) {         // below 2^-14: a subnormal half (or zero)
    if (magnitude <= 0x33000000u) return (unsigned short)sign;  // <= 2^-25 rounds to (signed) zero
    const unsigned int shift = 126u - (magnitude >> 23);        // 14..24
    const unsigned int m = (magnitude & 0x7fffffu) | 0x800000u;
    unsigned int q = m >> shift;
    const unsigned int rest = m & ((1u << shift) - 1u);
    const unsigned int half_unit = 1u << (shift - 1u);
    if (rest > half_unit || (rest == half_unit && (q & 1u))) ++q;
    return (unsigned short)(sign | q);
  }
  unsigned int q = ((magnitude - 0x38000000u) >> 13);  // rebias the exponent by 127 - 15
  const unsigned int rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (q & 1u))) ++q;  // a carry rolls into the exponent
  return (unsigned short)(sign | q);
#endif
}

// bfloat16 is the top half of a binary32: widening is a shift.
__device__ __forceinline__ float dwc_bfloat16_to_float(unsigned short b) {
  return __uint_as_float((unsigned int)b << 16);
}

// binary32 -> bfloat16, round to nearest even; same bits as torch's conversion except for NaN
// payloads. Integer arithmetic, so sm_75 (no cvt.bf16) and the CPU shim share it.
__device__ __forceinline__ unsigned short dwc_float_to_bfloat16(float f) {
  const unsigned int bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((bits >> 16) | 0x40u);
  return (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// Load (through the read-only cache) and store, widening to / rounding from the accumulator type.
template <typename T>
struct dwc_io;

template <>
struct dwc_io<float> {
  typedef float acc;
  static __device__ __forceinline__ float load(const float* p) { return __ldg(p); }
  static __device__ __forceinline__ void store(float* p, float v) { *p = v; }
  static __device__ __forceinline__ float fma(float a, float b, float c) { return fmaf(a, b, c); }
};

template <>
struct dwc_io<double> {
  typedef double acc;
  static __device__ __forceinline__ double load(const double* p) { return __ldg(p); }
  static __device__ __forceinline__ void store(double* p, double v) { *p = v; }
  static __device__ __forceinline__ double fma(double a, double b, double c) { return ::fma(a, b, c); }
};

template <>
struct dwc_io<dwc_half> {
  typedef float acc;
  static __device__ __forceinline__ float load(const dwc_half* p) { return dwc_half_to_float(__ldg(&p->bits)); }
  static __device__ __forceinline__ void store(dwc_half* p, float v) { p->bits = dwc_float_to_half(v); }
  static __device__ __forceinline__ float fma(float a, float b, float c) { return fmaf(a, b, c); }
};

template <>
struct dwc_io<dwc_bfloat16> {
  typedef float acc;
  static __device__ __forceinline__ float load(const dwc_bfloat16* p) { return dwc_bfloat16_to_float(__ldg(&p->bits)); }
  static __device__ __forceinline__ void store(dwc_bfloat16* p, float v) { p->bits = dwc_float_to_bfloat16(v); }
  static __device__ __forceinline__ float fma(float a, float b, float c) { return fmaf(a, b, c); }
};

// ---------------------------------------------------------------------------------------------
// Forward and gradient w.r.t. the input share one gather:
//   forward     dst[c, h, w] = sum_ij k[i, j, h,   w  ] * src[c, h+i-P, w+j-P]   (src = x)
//   transposed  dst[c, h, w] = sum_ij k[i, j, h',  w' ] * src[c, h',    w'   ]   (src = grad_out)
//               with h' = h-i+P, w' = w-j+P: the adjoint of the forward map, so no scatter and no
//               atomics are needed for grad_x either.
// A thread computes a strip of S consecutive outputs of one row (S = dwc_strip<T>) for a block of
// channels. Per kernel row it loads the strip's K*S taps once, and per channel the S+K-1 source
// values that the strip's K*S products use: 2.8x fewer loads than one output per thread at S = 4,
// K = 7. Every output sums its terms in the order (i, j), rows and columns outside the image adding
// zero products, whatever S and the launch shape are.
// ---------------------------------------------------------------------------------------------
template <typename T>
struct dwc_strip {
  // float64 (gradient checks only) keeps one output per thread: twice the registers per value
  static const int value = sizeof(typename dwc_io<T>::acc) == 8 ? 1 : DWC_STRIP;
};

template <typename T, int K, bool TRANSPOSED>
__device__ __forceinline__ void dwc_gather(const T* __restrict__ src, const T* __restrict__ kern,
                                           T* __restrict__ dst, int N, int C, int G, int H, int W) {
  typedef dwc_io<T> io;
  typedef typename io::acc acc_t;
  const int P = K / 2;
  const int S = dwc_strip<T>::value;
  const int SPAN = S + K - 1;  // source columns of one strip row: w0 - P .. w0 + S - 1 + P
  const int CB = DWC_CHANNEL_BLOCK;
  const long long plane_size = (long long)H * W;
  const int strips = (W + S - 1) / S;
  const int tasks = H * strips;  // <= H * W <= 2^30 (the launcher checks)
  const int cpg = C / G;
  const long long planes = (long long)N * G;

  for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int n = (int)(plane / G);
    const int g = (int)(plane - (long long)n * G);
    const T* kp = kern + plane * (long long)(K * K) * plane_size;  // k[n, g] : [K, K, H, W]
    const long long channel0 = (long long)n * C + (long long)g * cpg;

    for (int task = blockIdx.x * blockDim.x + threadIdx.x; task < tasks; task += gridDim.x * blockDim.x) {
      const int h = task / strips;
      const int w0 = (task - h * strips) * S;

      for (int c0 = 0; c0 < cpg; c0 += CB) {
        const int count = cpg - c0 < CB ? cpg - c0 : CB;
        const T* s0 = src + (channel0 + c0) * plane_size;
        acc_t acc[CB][S];
        DWC_UNROLL
        for (int cc = 0; cc < CB; ++cc) {
          DWC_UNROLL
          for (int p = 0; p < S; ++p) acc[cc][p] = acc_t(0);
        }

        DWC_ROLLED
        for (int i = 0; i < K; ++i) {
          const int hh = TRANSPOSED ? h - (i - P) : h + (i - P);
          if (hh < 0 || hh >= H) continue;
          // The taps: at the outputs (h, w0 + p) in the forward pass, at the sources
          // (hh, w0 + p - j + P) in the transposed one. Outside the image they multiply zeros.
          acc_t tap[K][S];
          DWC_UNROLL
          for (int j = 0; j < K; ++j) {
            DWC_UNROLL
            for (int p = 0; p < S; ++p) {
              const int wt = TRANSPOSED ? w0 + p - j + P : w0 + p;
              const int row = TRANSPOSED ? hh : h;
              tap[j][p] = wt >= 0 && wt < W ? io::load(kp + (long long)(i * K + j) * plane_size + row * W + wt)
                                            : acc_t(0);
            }
          }
          DWC_UNROLL
          for (int cc = 0; cc < CB; ++cc) {
            if (cc < count) {
              const T* srow = s0 + cc * plane_size + hh * W;
              acc_t v[SPAN];  // v[t] = src[c, hh, w0 - P + t], zero outside the image
              DWC_UNROLL
              for (int t = 0; t < SPAN; ++t) {
                const int ws = w0 - P + t;
                v[t] = ws >= 0 && ws < W ? io::load(srow + ws) : acc_t(0);
              }
              DWC_UNROLL
              for (int j = 0; j < K; ++j) {
                DWC_UNROLL
                for (int p = 0; p < S; ++p) {
                  acc[cc][p] = io::fma(tap[j][p], v[TRANSPOSED ? p - j + 2 * P : p + j], acc[cc][p]);
                }
              }
            }
          }
        }

        T* d0 = dst + (channel0 + c0) * plane_size + (long long)h * W + w0;
        DWC_UNROLL
        for (int cc = 0; cc < CB; ++cc) {
          DWC_UNROLL
          for (int p = 0; p < S; ++p) {
            if (cc < count && w0 + p < W) io::store(d0 + cc * plane_size + p, acc[cc][p]);
          }
        }
      }
    }
  }
}

// out = dynamic_dwconv(x, kern)
template <typename T, int K>
__global__ void __launch_bounds__(DWC_BLOCK_THREADS, DWC_GATHER_MIN_BLOCKS)
dwconv_forward(const T* __restrict__ x, const T* __restrict__ kern, T* __restrict__ out,
               int N, int C, int G, int H, int W) {
  dwc_gather<T, K, false>(x, kern, out, N, C, G, H, W);
}

// grad_x = d(sum(out * grad_out)) / dx
template <typename T, int K>
__global__ void __launch_bounds__(DWC_BLOCK_THREADS, DWC_GATHER_MIN_BLOCKS)
dwconv_grad_input(const T* __restrict__ grad_out, const T* __restrict__ kern, T* __restrict__ grad_x,
                  int N, int C, int G, int H, int W) {
  dwc_gather<T, K, true>(grad_out, kern, grad_x, N, C, G, H, W);
}

// grad_k[n,g,i,j,h,w] = sum_{c in group g} grad_out[n,c,h,w] * x[n,c,h+i-P,w+j-P]
// The reduction runs over the C/G channels of one group only, so one thread computes it whole:
// no atomics, deterministic. One kernel row at a time keeps K accumulators in registers for any K.
template <typename T, int K>
__global__ void __launch_bounds__(DWC_BLOCK_THREADS, DWC_MIN_BLOCKS)
dwconv_grad_kernels(const T* __restrict__ x, const T* __restrict__ grad_out, T* __restrict__ grad_k,
                    int N, int C, int G, int H, int W) {
  typedef dwc_io<T> io;
  typedef typename io::acc acc_t;
  const int P = K / 2;
  const int HW = H * W;
  const long long plane_size = HW;
  const int cpg = C / G;
  const long long planes = (long long)N * G;

  for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int n = (int)(plane / G);
    const int g = (int)(plane - (long long)n * G);
    T* kp = grad_k + plane * (long long)(K * K) * plane_size;
    const T* x0 = x + ((long long)n * C + (long long)g * cpg) * plane_size;
    const T* go0 = grad_out + ((long long)n * C + (long long)g * cpg) * plane_size;

    for (int pix = blockIdx.x * blockDim.x + threadIdx.x; pix < HW; pix += gridDim.x * blockDim.x) {
      const int h = pix / W;
      const int w = pix - h * W;

      DWC_ROLLED
      for (int i = 0; i < K; ++i) {
        const int hh = h + (i - P);
        const bool row_inside = hh >= 0 && hh < H;
        acc_t acc[K];
        DWC_UNROLL
        for (int j = 0; j < K; ++j) acc[j] = acc_t(0);

        if (row_inside) {
          DWC_UNROLL_CHANNELS
          for (int c = 0; c < cpg; ++c) {
            const acc_t go = io::load(go0 + c * plane_size + pix);
            const T* xrow = x0 + c * plane_size + hh * W;
            DWC_UNROLL
            for (int j = 0; j < K; ++j) {
              const int ww = w + (j - P);
              if (ww >= 0 && ww < W) acc[j] = io::fma(go, io::load(xrow + ww), acc[j]);
            }
          }
        }

        T* out_row = kp + (long long)(i * K) * plane_size + pix;
        DWC_UNROLL
        for (int j = 0; j < K; ++j) io::store(out_row + j * plane_size, acc[j]);
      }
    }
  }
}

#endif  // DLGSANET_DYNAMIC_DWCONV_CU
