// Fused CPU kernels of DLGSANet's inference path (float32), called through ctypes.
//
// Why: on a CPU the non-GEMM parts of the network are memory-bound when run as separate
// PyTorch ops. The per-pixel kernels of MHDLSA's dynamic conv are the largest tensor of the
// model (K*K*G channels per pixel) and are written once and read once; the feed-forward's
// depth-wise conv, GELU and gate each make a full pass over a 2*dim-channel map. Here each is
// one pass over data that stays in the L1/L2 cache:
//
//   dlg_dynamic_conv   per image row and kernel group: make the K*K per-pixel kernels of a
//                      block of columns (a small GEMM from the hyper-network's features), then
//                      filter the group's channels with them at once.
//   dlg_dwconv3x3      channels-last 3x3 depth-wise conv of a band of rows (zero padding), and
//                      optionally GELU(dw(gate)) * dw(value): the feed-forward's gate, fused.
//
// Plain C++ (no PyTorch headers, so it builds in a second or two), vectorised with GCC/clang
// vector extensions (eight floats: AVX2 with -march=native, NEON on ARM; no intrinsics), threaded
// with OpenMP where the compiler has it (one runtime with PyTorch's on Linux, whose libgomp
// carries the same soname). Every output element is one thread's fixed sequence of operations, so the
// result does not depend on the thread count, the band or what else is in the batch.
//
// Taps are summed row-major, as in the PyTorch path; products are fused into the sum (within
// float rounding of it). GELU is the exact (erf) form, with erf from
// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as PyTorch's own vectorised CPU GELU does.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// Eight floats: one AVX register, two NEON registers; GCC and clang vector extensions, so the
// same source compiles everywhere (no intrinsics). vu8 is the unaligned flavour for loads/stores.
typedef float v8 __attribute__((vector_size(32)));
typedef float vu8 __attribute__((vector_size(32), aligned(4)));

inline v8 load(const float* p) { return *reinterpret_cast<const vu8*>(p); }
inline void store(float* p, v8 v) { *reinterpret_cast<vu8*>(p) = v; }
inline v8 splat(float s) { return v8{s, s, s, s, s, s, s, s}; }

constexpr int kColBlock = 64;   // columns whose per-pixel kernels are made at once (8 vectors)
constexpr int kMaxTaps = 121;   // kernel sizes up to 11x11
constexpr int kMaxPerGroup = 64; // channels sharing one kernel group
constexpr int kDwCols = 32;      // depth-wise conv: pixels per column block (a multiple of 4)
constexpr int kDwRows = 16;      // depth-wise conv: output rows per task

// k[t][0:n] = bias[t] + sum_r wk[t][r] * hyper[r][0:n] for one kernel group, n <= kColBlock;
// columns past n are made too (from the zero-padded copy of the hyper rows) and never read.
void make_kernels(float* k, const float* wk, const float* bias, const float* hyper, int taps, int reduced) {
    for (int t = 0; t < taps; ++t) {
        const float* w = wk + static_cast<int64_t>(t) * reduced;
        v8 acc[kColBlock / 8];
        const v8 b = splat(bias ? bias[t] : 0.0f);
        for (int u = 0; u < kColBlock / 8; ++u) acc[u] = b;
        for (int r = 0; r < reduced; ++r) {
            const v8 wr = splat(w[r]);
            const float* h = hyper + r * kColBlock;
            for (int u = 0; u < kColBlock / 8; ++u) acc[u] += wr * load(h + 8 * u);
        }
        for (int u = 0; u < kColBlock / 8; ++u) store(k + t * kColBlock + 8 * u, acc[u]);
    }
}

// NJ channels sharing one kernel group, one row of n <= kColBlock columns (rounded up to 8; the
// padded tiles and the kernel block are wide enough):
// out_c[v] = sum_{i,j} k[i*K+j][v] * xp_c[i][v + j], taps row-major.
template <int NJ>
void filter_rows(float* const* out, const float* const* xp, const float* k, int64_t row_stride, int ksize, int n) {
    for (int v0 = 0; v0 < n; v0 += 8) {
        v8 acc[NJ];
        for (int c = 0; c < NJ; ++c) acc[c] = splat(0.0f);
        for (int i = 0; i < ksize; ++i) {
            for (int j = 0; j < ksize; ++j) {
                const v8 kv = load(k + (i * ksize + j) * kColBlock + v0);
                const int64_t at = i * row_stride + v0 + j;
                for (int c = 0; c < NJ; ++c) acc[c] += kv * load(xp[c] + at);
            }
        }
        if (v0 + 8 <= n) {
            for (int c = 0; c < NJ; ++c) store(out[c] + v0, acc[c]);
        } else {
            for (int c = 0; c < NJ; ++c)
                for (int v = 0; v < n - v0; ++v) out[c][v0 + v] = acc[c][v];
        }
    }
}

void filter_group(float* const* out, const float* const* xp, const float* k, int64_t row_stride, int ksize, int n,
                  int count) {
    int c = 0;
    for (; c + 6 <= count; c += 6) filter_rows<6>(out + c, xp + c, k, row_stride, ksize, n);
    for (; c + 4 <= count; c += 4) filter_rows<4>(out + c, xp + c, k, row_stride, ksize, n);
    for (; c + 2 <= count; c += 2) filter_rows<2>(out + c, xp + c, k, row_stride, ksize, n);
    for (; c < count; ++c) filter_rows<1>(out + c, xp + c, k, row_stride, ksize, n);
}

// Loads of a channel block: whole vectors, or the first `lanes` floats (the channel tail, which
// must not read past the tensor's end), the other lanes zero.
template <bool Tail>
inline v8 load_block(const float* p, int lanes) {
    if (!Tail) return load(p);
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int v = 0; v < lanes; ++v) lane[v] = p[v];
    return load(lane);
}

template <bool Tail>
inline void store_block(float* p, v8 v, int lanes) {
    if (!Tail) {
        store(p, v);
        return;
    }
    for (int i = 0; i < lanes; ++i) p[i] = v[i];
}

typedef int32_t vi8 __attribute__((vector_size(32)));

inline v8 bits_to_float(vi8 v) { return (v8)v; }  // same-size vector casts reinterpret the bits
inline vi8 float_to_bits(v8 v) { return (vi8)v; }

// exp(x) for x <= 0 (clamped at -87), eight at once: Cody-Waite reduction by ln 2, degree-7
// Taylor polynomial (relative error < 1e-8 on [-ln2/2, ln2/2]), exponent put in by integer add.
inline v8 exp_neg(v8 x) {
    x = x < splat(-87.0f) ? splat(-87.0f) : x;
    const vi8 n = __builtin_convertvector(x * splat(1.4426950408889634f) - splat(0.5f), vi8);  // round half away
    const v8 nf = __builtin_convertvector(n, v8);
    v8 r = x - nf * splat(0.693145751953125f);
    r = r - nf * splat(1.428606765330187e-06f);
    v8 p = splat(1.0f / 5040.0f);
    p = p * r + splat(1.0f / 720.0f);
    p = p * r + splat(1.0f / 120.0f);
    p = p * r + splat(1.0f / 24.0f);
    p = p * r + splat(1.0f / 6.0f);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    return p * bits_to_float((n + 127) << 23);
}

// GELU, exact form 0.5 x (1 + erf(x / sqrt 2)), eight at once; erf by Abramowitz & Stegun
// 7.1.26 (|error| < 1.5e-7), the approximation of PyTorch's own vectorised CPU GELU.
inline v8 gelu(v8 x) {
    const v8 z = x * splat(0.70710678118654752f);
    const vi8 sign = float_to_bits(z) & 0x80000000;
    const v8 a = bits_to_float(float_to_bits(z) & 0x7fffffff);
    const v8 t = splat(1.0f) / (splat(1.0f) + splat(0.3275911f) * a);
    v8 r = splat(1.061405429f);
    r = r * t - splat(1.453152027f);
    r = r * t + splat(1.421413741f);
    r = r * t - splat(0.284496736f);
    r = r * t + splat(0.254829592f);
    r = r * t;
    const v8 erf_a = splat(1.0f) - r * exp_neg(-(a * a));
    const v8 erf_z = bits_to_float(float_to_bits(erf_a) | sign);
    return splat(0.5f) * x * (splat(1.0f) + erf_z);
}

// Four neighbouring output pixels x..x+3 of the 3x3 depth-wise conv, channels [c0, c0 + lanes):
// acc = bias + sum of the taps, row-major. rows[3] point to channel c0 of pixel 0 of the input
// rows (a zero row where the image ends), `stride` floats from pixel to pixel. Edge: some of the
// pixels x-1 .. x+4 lie outside [0, width) and count as zero. Weights are read from L1 at each
// use, so that only the accumulators and the six input vectors of a row live in registers.
template <bool Tail, bool Edge>
inline void dw_quad(v8* acc, const float* const* rows, const float* weight, const float* bias, int x, int width,
                    int64_t stride, int channels, int c0, int lanes) {
    const v8 b = bias ? load_block<Tail>(bias + c0, lanes) : splat(0.0f);
    for (int k = 0; k < 4; ++k) acc[k] = b;
    for (int i = 0; i < 3; ++i) {
        v8 in[6];
        for (int m = 0; m < 6; ++m) {
            const int xx = x + m - 1;
            in[m] = (Edge && (xx < 0 || xx >= width)) ? splat(0.0f) : load_block<Tail>(rows[i] + xx * stride, lanes);
        }
        for (int j = 0; j < 3; ++j) {
            const v8 wt = load_block<Tail>(weight + (3 * i + j) * channels + c0, lanes);
            for (int k = 0; k < 4; ++k) acc[k] += wt * in[k + j];
        }
    }
}

// Pixels x..x+count-1 (count <= 4) of one output row, all channels; gated when vrows is given.
template <bool Edge>
inline void dw_pixels(float* out, const float* const* grows, const float* const* vrows, const float* wg,
                      const float* wv, const float* bg, const float* bv, int x, int count, int width, int64_t stride,
                      int channels) {
    for (int c0 = 0; c0 < channels; c0 += 8) {
        const int lanes = channels - c0 < 8 ? channels - c0 : 8;
        const float* g[3] = {grows[0] + c0, grows[1] + c0, grows[2] + c0};
        v8 a[4];
        if (lanes == 8) dw_quad<false, Edge>(a, g, wg, bg, x, width, stride, channels, c0, lanes);
        else dw_quad<true, Edge>(a, g, wg, bg, x, width, stride, channels, c0, lanes);
        if (vrows) {
            const float* v[3] = {vrows[0] + c0, vrows[1] + c0, vrows[2] + c0};
            v8 u[4];
            if (lanes == 8) dw_quad<false, Edge>(u, v, wv, bv, x, width, stride, channels, c0, lanes);
            else dw_quad<true, Edge>(u, v, wv, bv, x, width, stride, channels, c0, lanes);
            for (int k = 0; k < count; ++k) a[k] = gelu(a[k]) * u[k];
        }
        for (int k = 0; k < count; ++k) {
            float* o = out + static_cast<int64_t>(x + k) * channels + c0;
            if (lanes == 8) store(o, a[k]);
            else store_block<true>(o, a[k], lanes);
        }
    }
}

}  // namespace

extern "C" {

int dlg_abi_version() { return 1; }

int dlg_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

// Dynamic depth-wise conv of a band of rows, with the per-pixel kernels made on the fly.
//   x:     [B, C, x_rows, W] input planes; output row y is centred on x row y + x_offset, and
//          rows outside [0, x_rows) are zero (the image's padding; a band carries its halo rows
//          wherever the image has them), as are columns outside [0, W)
//   hyper: the hyper-network's features before its last 1x1 conv, [B, R, hyper_rows, W]; output
//          row y takes hyper row y + hyper_offset
//   wk:    [G * K * K, R], bias: [G * K * K] or null   that last 1x1 conv
//   out:   [B, C, H, W]; channel c uses kernel group c / (C / G)
//   threads: OpenMP threads (PyTorch's count, passed in: OpenMP's own setting is per thread)
// Planes, not channels-last maps: a group's channels are then rows of whole vectors (a
// channels-last variant, which must transpose every tile, measured twice as slow).
int dlg_dynamic_conv(const float* x, int x_rows, int x_offset, const float* hyper, int hyper_rows, int hyper_offset,
                     const float* wk, const float* bias, float* out, int batch, int channels, int groups, int ksize,
                     int reduced, int height, int width, int threads) {
    (void)threads;  // unused in a build without OpenMP
    const int taps = ksize * ksize, pad = ksize / 2;
    if (taps > kMaxTaps || ksize % 2 == 0 || groups <= 0 || channels % groups) return 1;
    const int per_group = channels / groups;
    if (per_group > kMaxPerGroup) return 1;
    // a channel's zero-padded tile: K rows of the block's columns plus the halo, plus 8 floats
    // of slack so that whole vectors can be read at the block's end
    const int tile_w = kColBlock + ksize - 1 + 8;
    const int64_t tile = static_cast<int64_t>(ksize) * tile_w;
    const int64_t x_plane = static_cast<int64_t>(x_rows) * width, h_plane = static_cast<int64_t>(hyper_rows) * width;
    const int col_blocks = (width + kColBlock - 1) / kColBlock;
    // one task: an image row's block of columns, all groups (the hyper features are copied once)
    const int64_t tasks = static_cast<int64_t>(batch) * height * col_blocks;
    int status = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        alignas(32) float k[kMaxTaps * kColBlock];
        float* h = new (std::nothrow) float[static_cast<size_t>(reduced) * kColBlock];
        float* tiles = new (std::nothrow) float[static_cast<size_t>(per_group * tile)];
        float* dst[kMaxPerGroup];
        const float* src[kMaxPerGroup];
        const bool ready = h && tiles;
        if (!ready) {
#pragma omp atomic write
            status = 2;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; ++task) {
            if (!ready) continue;
            const int cb = static_cast<int>(task % col_blocks);
            const int y = static_cast<int>((task / col_blocks) % height);
            const int b = static_cast<int>(task / col_blocks / height);
            const int x0 = cb * kColBlock;
            const int n = width - x0 < kColBlock ? width - x0 : kColBlock;
            for (int r = 0; r < reduced; ++r) {  // this block's hyper features, zero-padded to 64
                const float* row = hyper + (static_cast<int64_t>(b) * reduced + r) * h_plane
                                   + static_cast<int64_t>(y + hyper_offset) * width + x0;
                for (int v = 0; v < kColBlock; ++v) h[r * kColBlock + v] = v < n ? row[v] : 0.0f;
            }
            // columns [x0 - pad, x0 + n + pad) of each input row, zero outside the image
            const int v0 = x0 - pad < 0 ? pad - x0 : 0;
            const int v1 = x0 + n + pad > width ? width - x0 + pad : n + 2 * pad;
            for (int g = 0; g < groups; ++g) {
                make_kernels(k, wk + static_cast<int64_t>(g) * taps * reduced, bias ? bias + g * taps : nullptr,
                             h, taps, reduced);
                for (int j = 0; j < per_group; ++j) {
                    const int64_t c = static_cast<int64_t>(b) * channels + g * per_group + j;
                    float* t = tiles + j * tile;
                    for (int i = 0; i < ksize; ++i) {
                        const int yy = y + x_offset + i - pad;
                        float* trow = t + i * tile_w;
                        if (yy < 0 || yy >= x_rows) {
                            std::memset(trow, 0, sizeof(float) * tile_w);
                            continue;
                        }
                        const float* xrow = x + c * x_plane + static_cast<int64_t>(yy) * width;
                        std::memset(trow, 0, sizeof(float) * v0);
                        std::memcpy(trow + v0, xrow + x0 - pad + v0, sizeof(float) * (v1 - v0));
                        std::memset(trow + v1, 0, sizeof(float) * (tile_w - v1));
                    }
                    src[j] = t;
                    dst[j] = out + (c * height + y) * width + x0;
                }
                filter_group(dst, src, k, tile_w, ksize, n, per_group);
            }
        }
        delete[] h;
        delete[] tiles;
    }
    return status;
}

// Channels-last 3x3 depth-wise conv of a band of rows, zero padding, optionally gated.
//   xg:  [B, rows_in, W, stride] input, channels [0, C) of each pixel (the gate's input when xv is
//        given); stride >= C floats from one pixel to the next
//   xv:  like xg, or null: the value's input (it may point into the same map, e.g. at channel C)
//   wg, wv: [9, C] tap-major weights; bg, bv: [C] or null
//   out: rows_out rows of W * C per image, image b at out + b * out_batch_stride;
//        output row i is centred on input row i + offset; input rows outside [0, rows_in) are
//        zero (the image's padding: a band carries its halo rows wherever the image has them).
//   gated: out = GELU(dw(xg)) * dw(xv); otherwise out = dw(xg).   threads: as above
int dlg_dwconv3x3(const float* xg, const float* xv, const float* wg, const float* wv, const float* bg,
                  const float* bv, float* out, int batch, int rows_in, int width, int channels, int64_t stride,
                  int rows_out, int offset, int64_t out_batch_stride, int threads) {
    (void)threads;  // unused in a build without OpenMP
    const int64_t row = static_cast<int64_t>(width) * stride;  // input row; the output's is width * channels
    // one task: a column block of kDwCols pixels over up to kDwRows output rows, row after row,
    // so that the three input rows of that block stay in L2 while they are used (each input row
    // is read from memory once, not three times)
    const int col_blocks = (width + kDwCols - 1) / kDwCols;
    const int row_blocks = (rows_out + kDwRows - 1) / kDwRows;
    const int64_t tasks = static_cast<int64_t>(batch) * row_blocks * col_blocks;
    // a zero row stands for the rows beyond the image, when the band reaches its top or bottom
    // (calloc: fresh pages are zero without being written)
    const bool edges = offset < 1 || offset + rows_out >= rows_in;
    float* zero = edges ? static_cast<float*>(std::calloc(static_cast<size_t>(row), sizeof(float))) : nullptr;
    if (edges && !zero) return 2;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
    for (int64_t task = 0; task < tasks; ++task) {
        const int cb = static_cast<int>(task % col_blocks);
        const int rb = static_cast<int>((task / col_blocks) % row_blocks);
        const int b = static_cast<int>(task / col_blocks / row_blocks);
        const int x_end = (cb + 1) * kDwCols < width ? (cb + 1) * kDwCols : width;
        const int i_end = (rb + 1) * kDwRows < rows_out ? (rb + 1) * kDwRows : rows_out;
        for (int i = rb * kDwRows; i < i_end; ++i) {
            const float* grows[3];
            const float* vrows[3];
            for (int d = 0; d < 3; ++d) {
                const int y = i + offset + d - 1;
                const bool inside = y >= 0 && y < rows_in;
                const int64_t at = (static_cast<int64_t>(b) * rows_in + y) * row;
                grows[d] = inside ? xg + at : zero;
                vrows[d] = inside && xv ? xv + at : zero;
            }
            float* orow = out + b * out_batch_stride + static_cast<int64_t>(i) * width * channels;
            const float* const* v = xv ? vrows : nullptr;
            for (int x = cb * kDwCols; x < x_end; x += 4) {
                const int count = x_end - x < 4 ? x_end - x : 4;
                if (x == 0 || x + 5 > width)  // the quad reads pixels x-1 .. x+4
                    dw_pixels<true>(orow, grows, v, wg, wv, bg, bv, x, count, width, stride, channels);
                else
                    dw_pixels<false>(orow, grows, v, wg, wv, bg, bv, x, count, width, stride, channels);
            }
        }
    }
    std::free(zero);
    return 0;
}

}  // extern "C"
