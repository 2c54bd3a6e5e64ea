// Host entry points for the CPU emulation of kernels/dynamic_dwconv.cu (tests only).
//
// Build: g++ -std=c++17 -O2 -shared -fPIC dynamic_dwconv_cpu.cpp -o libdwconv_cpu.so
// Loaded with ctypes by tests/kernels_helpers.py; the kernels run through cpu_shim.h's
// block/thread loop with whatever launch shape the caller passes, so tests can use both the
// production launch configuration (dlgsanet/ops/dynamic_dwconv/cupy_backend.launch_config) and odd ones.
#include "cpu_shim.h"
#include "../../kernels/dynamic_dwconv.cu"  // the shipped source, unchanged

namespace {

enum Op { kForward = 0, kGradInput = 1, kGradKernels = 2 };
enum DType { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

template <typename T, int K>
void run(int op, const void* a, const void* b, void* out, int N, int C, int G, int H, int W, dim3 grid,
         dim3 block) {
  const T* pa = static_cast<const T*>(a);
  const T* pb = static_cast<const T*>(b);
  T* po = static_cast<T*>(out);
  switch (op) {
    case kForward:
      cpu_shim_launch(grid, block, [&] { dwconv_forward<T, K>(pa, pb, po, N, C, G, H, W); });
      break;
    case kGradInput:
      cpu_shim_launch(grid, block, [&] { dwconv_grad_input<T, K>(pa, pb, po, N, C, G, H, W); });
      break;
    default:
      cpu_shim_launch(grid, block, [&] { dwconv_grad_kernels<T, K>(pa, pb, po, N, C, G, H, W); });
      break;
  }
}

template <typename T>
int run_k(int op, int K, const void* a, const void* b, void* out, int N, int C, int G, int H, int W, dim3 grid,
          dim3 block) {
  switch (K) {
    case 1: run<T, 1>(op, a, b, out, N, C, G, H, W, grid, block); return 0;
    case 3: run<T, 3>(op, a, b, out, N, C, G, H, W, grid, block); return 0;
    case 5: run<T, 5>(op, a, b, out, N, C, G, H, W, grid, block); return 0;
    case 7: run<T, 7>(op, a, b, out, N, C, G, H, W, grid, block); return 0;
    case 9: run<T, 9>(op, a, b, out, N, C, G, H, W, grid, block); return 0;
    case 11: run<T, 11>(op, a, b, out, N, C, G, H, W, grid, block); return 0;
    default: return -2;
  }
}

}  // namespace

extern "C" {

// The kernel sizes this emulation library was built with (any odd K needs only a new case above).
int dwc_cpu_kernel_sizes(int* out, int capacity) {
  static const int sizes[] = {1, 3, 5, 7, 9, 11};
  const int n = sizeof sizes / sizeof sizes[0];
  for (int i = 0; i < n && i < capacity; ++i) out[i] = sizes[i];
  return n;
}

int dwc_cpu_channel_block() { return DWC_CHANNEL_BLOCK; }

// op: 0 forward (a = x, b = kernels), 1 grad wrt input (a = grad_out, b = kernels),
//     2 grad wrt kernels (a = x, b = grad_out). Returns 0, or < 0 for an unsupported dtype / K.
int dwc_cpu_run(int op, int dtype, int K, const void* a, const void* b, void* out, int N, int C, int G, int H,
                int W, unsigned int grid_x, unsigned int grid_y, unsigned int block_x) {
  const dim3 grid{grid_x, grid_y, 1u};
  const dim3 block{block_x, 1u, 1u};
  switch (dtype) {
    case kFloat32: return run_k<float>(op, K, a, b, out, N, C, G, H, W, grid, block);
    case kFloat64: return run_k<double>(op, K, a, b, out, N, C, G, H, W, grid, block);
    case kFloat16: return run_k<dwc_half>(op, K, a, b, out, N, C, G, H, W, grid, block);
    case kBFloat16: return run_k<dwc_bfloat16>(op, K, a, b, out, N, C, G, H, W, grid, block);
    default: return -1;
  }
}

void dwc_cpu_half_to_float(const unsigned short* in, float* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = dwc_half_to_float(in[i]);
}

void dwc_cpu_float_to_half(const float* in, unsigned short* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = dwc_float_to_half(in[i]);
}

void dwc_cpu_bfloat16_to_float(const unsigned short* in, float* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = dwc_bfloat16_to_float(in[i]);
}

void dwc_cpu_float_to_bfloat16(const float* in, unsigned short* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = dwc_float_to_bfloat16(in[i]);
}

}  // extern "C"
