// Fused CPU kernels of DLGSANet's inference path (float32), called through ctypes.
//
// Why: on a CPU the network's 1x1 convolutions run near the GEMM roof, but what lies between
// them is memory-bound when run as separate PyTorch ops. The per-pixel kernels of MHDLSA's
// dynamic conv are the largest tensor of the model (K*K*G channels per pixel), and the
// feed-forward's 4*dim-channel intermediate is written and read by three ops in a row. Here
// each is made and used in one pass over data that stays in the L1/L2 cache:
//
//   dlg_dynamic_conv   per image row and kernel group: make the K*K per-pixel kernels of a
//                      block of columns (a small GEMM from the hyper-network's features), then
//                      filter the group's channels with them at once.
//   dlg_gdfn           the whole feed-forward: 1x1 expand, 3x3 depth-wise conv, GELU gate,
//                      1x1 projection and residual, three rows of the expanded map at a time.
//   dlg_conv1x1_dw3x3  SparseGSA's qkv: 1x1 conv then 3x3 depth-wise conv, the same way.
//
// The 1x1 convolutions run in a register-blocked GEMM micro-kernel (6 pixels x 16 channels,
// products summed over the input channels in order, as oneDNN's kernels do).
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
#include <initializer_list>

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

// Stores of a channel block: whole vectors, or the first `lanes` floats (the channel tail, which
// must not write past the pixel's channels).
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

// ---- the GEMM micro-kernel, and the 1x1 + depth-wise passes built on it (feed-forward, qkv) ----

constexpr int kNR = 16;         // GEMM micro-tile: output channels (two vectors)
constexpr int kMR = 6;          // GEMM micro-tile: pixels (12 accumulators, all in registers)
constexpr int kFfnCols = 64;    // 1x1 + depth-wise passes: output columns per task

// C[m][0:16] = sum_k A[m * lda + k] * B[k][0:16] for MR pixels: B a packed 16-wide panel.
// Every output is the same sequence of products over k whatever MR is, so a pixel's result
// does not depend on where its tile starts.
template <int MR>
inline void gemm_tile(const float* a, int64_t lda, const float* b, int depth, float* c, int64_t ldc) {
    // the first product starts each sum (the same bits as adding it to zero), so that the
    // accumulators live in registers from the start: no zeroed array for the compiler to spill
    v8 lo[MR], hi[MR];
    const v8 b0 = load(b), b1 = load(b + 8);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
        const v8 s = splat(a[m * lda]);
        lo[m] = s * b0;
        hi[m] = s * b1;
    }
    for (int k = 1; k < depth; ++k) {
        const v8 bk0 = load(b + kNR * k), bk1 = load(b + kNR * k + 8);
#pragma GCC unroll 8
        for (int m = 0; m < MR; ++m) {
            const v8 s = splat(a[m * lda + k]);
            lo[m] += s * bk0;
            hi[m] += s * bk1;
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
        store(c + m * ldc, lo[m]);
        store(c + m * ldc + 8, hi[m]);
    }
}

// C[rows][panels * 16] = A[rows][depth] B, with B packed as [panels][depth][16].
void gemm_rows(const float* a, int64_t lda, int rows, const float* packed, int depth, int panels, float* c,
               int64_t ldc) {
    for (int p = 0; p < panels; ++p) {  // one panel (depth x 16 floats) stays in L1 over all rows
        const float* b = packed + static_cast<int64_t>(p) * depth * kNR;
        float* cp = c + p * kNR;
        int m = 0;
        for (; m + kMR <= rows; m += kMR) gemm_tile<kMR>(a + m * lda, lda, b, depth, cp + m * ldc, ldc);
        const float* at = a + m * lda;
        float* ct = cp + m * ldc;
        switch (rows - m) {
            case 5: gemm_tile<5>(at, lda, b, depth, ct, ldc); break;
            case 4: gemm_tile<4>(at, lda, b, depth, ct, ldc); break;
            case 3: gemm_tile<3>(at, lda, b, depth, ct, ldc); break;
            case 2: gemm_tile<2>(at, lda, b, depth, ct, ldc); break;
            case 1: gemm_tile<1>(at, lda, b, depth, ct, ldc); break;
            default: break;
        }
    }
}

// Packs rows of a [outputs, depth] weight into 16-wide panels [panels][depth][16]; panel slot s
// takes weight row source(s) (negative: zero).
template <class Source>
void pack_panels(float* packed, const float* weight, int depth, int slots, Source source) {
    for (int s = 0; s < slots; ++s) {
        const int from = source(s);
        float* col = packed + static_cast<int64_t>(s / kNR) * depth * kNR + s % kNR;
        for (int k = 0; k < depth; ++k)
            col[k * kNR] = from >= 0 ? weight[static_cast<int64_t>(from) * depth + k] : 0.0f;
    }
}

// The first `rows` rows of a weight, packed into `slots` slots (zero past them).
void pack_rows(float* packed, const float* weight, int depth, int rows, int slots) {
    pack_panels(packed, weight, depth, slots, [rows](int s) { return s < rows ? s : -1; });
}

// Buffers owned for a scope (a call, or one thread's part of a parallel region): allocated,
// 64-byte aligned, on construction and freed on destruction. A size of zero or less gives a null
// pointer (a buffer not wanted); ok() says whether every wanted one was allocated.
template <class T>
class Scratch {
  public:
    Scratch(std::initializer_list<int64_t> sizes) {
        for (const int64_t size : sizes) {
            const size_t bytes = size > 0 ? (static_cast<size_t>(size) * sizeof(T) + 63) / 64 * 64 : 0;
            T* p = bytes ? static_cast<T*>(std::aligned_alloc(64, bytes)) : nullptr;
            ok_ = ok_ && (bytes == 0 || p);
            buffers_[count_++] = p;
        }
    }
    ~Scratch() {
        for (int i = 0; i < count_; ++i) std::free(buffers_[i]);
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    T* operator[](int i) const { return buffers_[i]; }
    bool ok() const { return ok_; }

  private:
    T* buffers_[8] = {};
    int count_ = 0;
    bool ok_ = true;
};

// Called by every thread of a parallel region with its scratch: a thread without its buffers
// marks the call failed (status 2, out of memory); its share of the tasks is then skipped.
inline void report_failure(bool ok, int& status) {
    if (ok) return;
#pragma omp atomic write
    status = 2;
}

// body(task, scratch) for every task in [0, tasks), statically shared among `threads` OpenMP
// threads, each with its own Scratch of `sizes` floats. Returns 0, or 2 when a thread could not
// allocate its buffers (its tasks are skipped, see report_failure).
template <class Body>
int for_each_task(int threads, int64_t tasks, std::initializer_list<int64_t> sizes, Body body) {
    (void)threads;  // unused in a build without OpenMP
    int status = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        const Scratch<float> own(sizes);
        report_failure(own.ok(), status);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; ++task) {
            if (own.ok()) body(task, own);
        }
    }
    return status;
}

// One pixel of a block's output: dst = (proj + bias) + residual over its channels, the bias
// (null: none) added first, as the PyTorch path adds it inside the 1x1 conv.
inline void add_projection(float* dst, const float* proj, const float* bias, const float* residual, int channels) {
    int c = 0;
    for (; c + 8 <= channels; c += 8) {
        const v8 t = bias ? load(proj + c) + load(bias + c) : load(proj + c);
        store(dst + c, t + load(residual + c));
    }
    for (; c < channels; ++c) dst[c] = (bias ? proj[c] + bias[c] : proj[c]) + residual[c];
}

// N <= 4 neighbouring pixels of the 3x3 depth-wise conv on three rows of an expanded map, whose
// rows carry one extra pixel on each side (zero outside the image, so there is no edge case) and
// `stride` floats per pixel. Gated (the feed-forward): channels [0, count) are the gate and
// [half, half + count) the value, out = GELU(dw(gate)) * dw(value). Plain (qkv):
// out = dw(channels [0, count)), the last vector stored only up to `count`. Taps are [9][stride],
// summed row-major after the bias, as in the PyTorch path.
template <int N, bool Gated>
inline void ring_quad(float* out, int64_t out_stride, const float* const* rows, const float* taps,
                      const float* bias, int count, int half, int64_t stride) {
    for (int c0 = 0; c0 < count; c0 += 8) {
        v8 g[N], v[N];
        const v8 bg = bias ? load(bias + c0) : splat(0.0f);
        const v8 bv = Gated && bias ? load(bias + half + c0) : splat(0.0f);
        for (int k = 0; k < N; ++k) g[k] = bg, v[k] = bv;
        for (int i = 0; i < 3; ++i) {
            v8 in[N + 2];
            for (int m = 0; m < N + 2; ++m) in[m] = load(rows[i] + m * stride + c0);
            for (int j = 0; j < 3; ++j) {
                const v8 wt = load(taps + (3 * i + j) * stride + c0);
                for (int k = 0; k < N; ++k) g[k] += wt * in[k + j];
            }
            if (!Gated) continue;
            for (int m = 0; m < N + 2; ++m) in[m] = load(rows[i] + m * stride + half + c0);
            for (int j = 0; j < 3; ++j) {
                const v8 wt = load(taps + (3 * i + j) * stride + half + c0);
                for (int k = 0; k < N; ++k) v[k] += wt * in[k + j];
            }
        }
        const bool whole = Gated || c0 + 8 <= count;
        for (int k = 0; k < N; ++k) {
            const v8 r = Gated ? gelu(g[k]) * v[k] : g[k];
            if (whole) store(out + k * out_stride + c0, r);
            else store_block<true>(out + k * out_stride + c0, r, count - c0);
        }
    }
}

// One row of the depth-wise stage for n pixels, four at a time.
template <bool Gated>
void ring_row(float* out, int64_t out_stride, const float* const* rows, const float* taps, const float* bias,
              int n, int count, int half, int64_t stride) {
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float* at[3] = {rows[0] + i * stride, rows[1] + i * stride, rows[2] + i * stride};
        ring_quad<4, Gated>(out + i * out_stride, out_stride, at, taps, bias, count, half, stride);
    }
    for (; i < n; ++i) {
        const float* at[3] = {rows[0] + i * stride, rows[1] + i * stride, rows[2] + i * stride};
        ring_quad<1, Gated>(out + i * out_stride, out_stride, at, taps, bias, count, half, stride);
    }
}

// LayerNorm of `pixels` pixels of `channels` floats each (biased variance, as PyTorch's):
// out = (x - mean) / sqrt(var + eps) * weight + bias, the mean and variance in two passes.
void layer_norm(float* out, const float* x, int pixels, int channels, const float* weight, const float* bias,
                float eps) {
    for (int p = 0; p < pixels; ++p) {
        const float* v = x + static_cast<int64_t>(p) * channels;
        float* o = out + static_cast<int64_t>(p) * channels;
        v8 acc = splat(0.0f);
        int c = 0;
        for (; c + 8 <= channels; c += 8) acc += load(v + c);
        float sum = 0.0f;
        for (int l = 0; l < 8; ++l) sum += acc[l];
        for (; c < channels; ++c) sum += v[c];
        const float mean = sum / channels;
        acc = splat(0.0f);
        for (c = 0; c + 8 <= channels; c += 8) {
            const v8 d = load(v + c) - splat(mean);
            acc += d * d;
        }
        float sq = 0.0f;
        for (int l = 0; l < 8; ++l) sq += acc[l];
        for (; c < channels; ++c) sq += (v[c] - mean) * (v[c] - mean);
        const float rstd = 1.0f / std::sqrt(sq / channels + eps);
        for (c = 0; c + 8 <= channels; c += 8)
            store(o + c, (load(v + c) - splat(mean)) * splat(rstd) * load(weight + c) + load(bias + c));
        for (; c < channels; ++c) o[c] = (v[c] - mean) * rstd * weight[c] + bias[c];
    }
}

// A channels-last 1x1 conv followed by a 3x3 depth-wise conv (zero padding), in one pass, and
// in the feed-forward also its gate and output projection (see dlg_gdfn and dlg_conv1x1_dw3x3);
// the block's LayerNorm is applied to each pixel on the way in.
// Each task takes a block of up to 64 columns over a run of rows and slides down them, keeping
// the 1x1 conv's output (`wide` channels, 16-padded) of three rows, one column wider on each
// side, in a ring: each row is expanded once (the rows and columns at a task's edge once more,
// by the neighbouring task), so the wide intermediate never reaches memory.
//   source[s]: the row of w_in (and of w_dw, dw_bias) that ring channel s holds; negative: zero
//   gated:     out = residual + proj(GELU(dw(gate)) * dw(value)), gate in ring channels [0, hp),
//              value in [hp, 2 hp), proj: w_out [channels, hidden] (+ out_bias); out [B,H,W,C]
//   otherwise: out [B, H, W, out_channels] = dw(ring channels [0, out_channels))
struct RingPass {
    const float* x;
    int batch, height, width, channels;
    const float* norm_weight;       // the block's LayerNorm over x's channels, or null: x as is
    const float* norm_bias;
    float eps;
    const float* w_in;
    const float* w_dw;
    const float* dw_bias;
    const int* source;
    int wide;
    bool gated;
    int hp, hidden;                 // gated only
    const float* w_out;
    const float* out_bias;
    const float* residual;
    float* out;
    int out_channels;               // plain only
};

int run_ring(const RingPass& q, int threads) {
    const int cp = (q.channels + kNR - 1) / kNR * kNR;  // projected channels padded to whole panels
    const Scratch<float> weights({static_cast<int64_t>(q.wide) * q.channels, 9 * static_cast<int64_t>(q.wide),
                                  q.dw_bias ? q.wide : 0, q.gated ? static_cast<int64_t>(cp) * q.hidden : 0});
    if (!weights.ok()) return 2;
    float* in_panels = weights[0];
    float* taps = weights[1];
    float* bias = weights[2];
    float* out_panels = weights[3];
    pack_panels(in_panels, q.w_in, q.channels, q.wide, [&q](int s) { return q.source[s]; });
    for (int s = 0; s < q.wide; ++s) {
        const int src = q.source[s];
        for (int t = 0; t < 9; ++t) taps[t * q.wide + s] = src >= 0 ? q.w_dw[src * 9 + t] : 0.0f;
        if (bias) bias[s] = src >= 0 ? q.dw_bias[src] : 0.0f;
    }
    if (q.gated) pack_rows(out_panels, q.w_out, q.hidden, q.channels, cp);
    // tasks: column blocks x row runs x images; runs long enough that expanding the two rows
    // at their ends once more costs little, and enough tasks for every thread
    const int col_blocks = (q.width + kFfnCols - 1) / kFfnCols;
    const int per_image = q.batch * col_blocks;
    int runs = (2 * (threads > 0 ? threads : 1) + per_image - 1) / per_image;
    const int max_runs = q.height / 16 > 1 ? q.height / 16 : 1;
    runs = runs < max_runs ? runs : max_runs;
    const int64_t tasks = static_cast<int64_t>(per_image) * runs;
    const int64_t ring_size = static_cast<int64_t>(kFfnCols + 2) * q.wide;
    const int stage = q.gated ? q.hp : q.wide;  // floats per pixel of a depth-wise output row
    return for_each_task(
        threads, tasks,
        {3 * ring_size, q.norm_weight ? static_cast<int64_t>(kFfnCols + 2) * q.channels : 0,
         q.gated ? static_cast<int64_t>(kFfnCols) * stage : 0, q.gated ? static_cast<int64_t>(kFfnCols) * cp : 0},
        [&](int64_t task, const Scratch<float>& own) {
            float* ring = own[0];
            float* normed = own[1];
            float* row = own[2];
            float* proj = own[3];
            const int cb = static_cast<int>(task % col_blocks);
            const int run = static_cast<int>((task / col_blocks) % runs);
            const int b = static_cast<int>(task / col_blocks / runs);
            const int x0 = cb * kFfnCols, n = q.width - x0 < kFfnCols ? q.width - x0 : kFfnCols;
            const int y0 = static_cast<int>(static_cast<int64_t>(run) * q.height / runs);
            const int y1 = static_cast<int>(static_cast<int64_t>(run + 1) * q.height / runs);
            // ring column i holds image column x0 - 1 + i; those outside the image stay zero
            const int lo = x0 > 0 ? 0 : 1, hi = x0 + n < q.width ? n + 2 : n + 1;
            auto expand = [&](int y) {
                float* r = ring + ((y + 3) % 3) * ring_size;
                if (y < 0 || y >= q.height) {
                    std::memset(r, 0, sizeof(float) * (n + 2) * q.wide);
                    return;
                }
                if (lo) std::memset(r, 0, sizeof(float) * q.wide);
                if (hi < n + 2) std::memset(r + static_cast<int64_t>(hi) * q.wide, 0, sizeof(float) * q.wide);
                const float* a = q.x + ((static_cast<int64_t>(b) * q.height + y) * q.width + x0 - 1 + lo) * q.channels;
                if (q.norm_weight) {
                    layer_norm(normed, a, hi - lo, q.channels, q.norm_weight, q.norm_bias, q.eps);
                    a = normed;
                }
                gemm_rows(a, q.channels, hi - lo, in_panels, q.channels, q.wide / kNR, r + lo * q.wide, q.wide);
            };
            expand(y0 - 1);
            expand(y0);
            for (int y = y0; y < y1; ++y) {
                expand(y + 1);
                const float* rows[3] = {ring + ((y + 2) % 3) * ring_size, ring + ((y + 3) % 3) * ring_size,
                                        ring + ((y + 4) % 3) * ring_size};
                const int64_t pixel = (static_cast<int64_t>(b) * q.height + y) * q.width + x0;
                if (!q.gated) {
                    ring_row<false>(q.out + pixel * q.out_channels, q.out_channels, rows, taps, bias, n,
                                    q.out_channels, 0, q.wide);
                    continue;
                }
                ring_row<true>(row, stage, rows, taps, bias, n, q.hp, q.hp, q.wide);
                gemm_rows(row, stage, n, out_panels, q.hidden, cp / kNR, proj, cp);
                for (int p = 0; p < n; ++p)
                    add_projection(q.out + (pixel + p) * q.channels, proj + p * cp, q.out_bias,
                                   q.residual + (pixel + p) * q.channels, q.channels);
            }
        });
}

// ---- SparseGSA's attention on the TLC windows ----

// Sixteen floats from p: whole vectors, or (near the end of a small map) the first n, zeros after.
inline void load16(const float* p, int n, bool whole, v8& lo, v8& hi) {
    if (whole) {
        lo = load(p), hi = load(p + 8);
        return;
    }
    float lanes[16];
    for (int l = 0; l < 16; ++l) lanes[l] = l < n ? p[l] : 0.0f;
    lo = load(lanes), hi = load(lanes + 8);
}

// The window's Gram block of one head and the squared norms of its q and k channels, summed over
// the window's pixels in row-major order: gram[i][j] = sum_p q[p][i] k[p][j] (d x d, row stride
// `ld`), norms[0:d] of q, norms[d:2d] of k. A pixel's q starts at `q`, its k at `k`; pixels are
// `pixel` floats apart, rows `row`. whole: 16 floats may be read from any q or k block start.
void window_gram(float* gram, int ld, float* norms, const float* q, const float* k, int d, int64_t pixel,
                 int64_t row, int rows, int cols, bool whole) {
    constexpr int kRows = 6;  // Gram rows per pass: 12 accumulators, two k vectors, one q broadcast
    for (int j0 = 0; j0 < d; j0 += 16) {
        const int nj = d - j0 < 16 ? d - j0 : 16;
        v8 nq[2] = {splat(0.0f), splat(0.0f)}, nk[2] = {splat(0.0f), splat(0.0f)};
        for (int y = 0; y < rows; ++y) {
            for (int x = 0; x < cols; ++x) {
                const int64_t at = y * row + x * pixel;
                v8 q0, q1, k0, k1;
                load16(q + at + j0, nj, whole, q0, q1);
                load16(k + at + j0, nj, whole, k0, k1);
                nq[0] += q0 * q0, nq[1] += q1 * q1;
                nk[0] += k0 * k0, nk[1] += k1 * k1;
            }
        }
        for (int j = 0; j < nj; ++j) norms[j0 + j] = nq[j / 8][j % 8], norms[d + j0 + j] = nk[j / 8][j % 8];
        for (int i0 = 0; i0 < d; i0 += kRows) {
            const int ni = d - i0 < kRows ? d - i0 : kRows;
            v8 acc[kRows][2];
            for (int i = 0; i < kRows; ++i) acc[i][0] = acc[i][1] = splat(0.0f);
            for (int y = 0; y < rows; ++y) {
                for (int x = 0; x < cols; ++x) {
                    const int64_t at = y * row + x * pixel;
                    v8 k0, k1;
                    load16(k + at + j0, nj, whole, k0, k1);
                    const float* qp = q + at + i0;
                    for (int i = 0; i < kRows; ++i) {
                        if (i == ni) break;
                        const v8 s = splat(qp[i]);
                        acc[i][0] += s * k0;
                        acc[i][1] += s * k1;
                    }
                }
            }
            for (int i = 0; i < ni; ++i)
                for (int j = 0; j < nj; ++j) gram[(i0 + i) * ld + j0 + j] = acc[i][j / 8][j % 8];
        }
    }
}

}  // namespace

extern "C" {

int dlg_abi_version() { return 2; }

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
// channels-last variant must transpose every tile and is slower: docs/performance.md).
int dlg_dynamic_conv(const float* x, int x_rows, int x_offset, const float* hyper, int hyper_rows, int hyper_offset,
                     const float* wk, const float* bias, float* out, int batch, int channels, int groups, int ksize,
                     int reduced, int height, int width, int threads) {
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
    return for_each_task(
        threads, tasks, {static_cast<int64_t>(reduced) * kColBlock, per_group * tile},
        [&](int64_t task, const Scratch<float>& own) {
            alignas(32) float k[kMaxTaps * kColBlock];
            float* h = own[0];
            float* tiles = own[1];
            float* dst[kMaxPerGroup];
            const float* src[kMaxPerGroup];
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
        });
}

// The feed-forward (GDFN) of a channels-last map in one pass (see RingPass):
// out = residual + W_out (GELU(dw(gate)) * dw(value)) (+ out_bias), [gate; value] = W_in x.
//   x:        [B, H, W, C] the block's input, contiguous; norm_weight, norm_bias: [C], its
//             LayerNorm (eps), or null when x is normalised already
//   residual: [B, H, W, C]; out: [B, H, W, C], never x (tasks read rows of x that others write),
//             but it may be the residual when that is not x
//   w_in:     [2 * hidden, C] (gate rows first, then value rows)
//   w_dw:     [2 * hidden, 9] (PyTorch's [2 * hidden, 1, 3, 3]); dw_bias: [2 * hidden] or null
//   w_out:    [C, hidden]; out_bias: [C] or null
//   threads:  as above
int dlg_gdfn(const float* x, const float* norm_weight, const float* norm_bias, float eps, const float* residual,
             float* out, const float* w_in, const float* w_dw, const float* dw_bias, const float* w_out,
             const float* out_bias, int batch, int height, int width, int channels, int hidden, int threads) {
    const int hp = (hidden + 7) / 8 * 8;  // gate and value, each padded to whole vectors
    const Scratch<int> sources({2 * hp});
    if (!sources.ok()) return 2;
    int* source = sources[0];
    for (int s = 0; s < 2 * hp; ++s) source[s] = s % hp < hidden ? (s / hp) * hidden + s % hp : -1;
    const RingPass q{x, batch, height, width, channels, norm_weight, norm_bias, eps, w_in, w_dw, dw_bias, source,
                     2 * hp, true, hp, hidden, w_out, out_bias, residual, out, channels};
    return run_ring(q, threads);
}

// 1x1 conv then 3x3 depth-wise conv (zero padding) of a channels-last map in one pass (see
// RingPass): SparseGSA's qkv. x: [B, H, W, C] contiguous, with its LayerNorm as in dlg_gdfn;
// w_in: [N, C]; w_dw: [N, 9] (PyTorch's [N, 1, 3, 3]); dw_bias: [N] or null; out: [B, H, W, N],
// never x.
int dlg_conv1x1_dw3x3(const float* x, const float* norm_weight, const float* norm_bias, float eps, float* out,
                      const float* w_in, const float* w_dw, const float* dw_bias, int batch, int height, int width,
                      int channels, int out_channels, int threads) {
    const int wide = (out_channels + kNR - 1) / kNR * kNR;
    const Scratch<int> sources({wide});
    if (!sources.ok()) return 2;
    int* source = sources[0];
    for (int s = 0; s < wide; ++s) source[s] = s < out_channels ? s : -1;
    const RingPass q{x, batch, height, width, channels, norm_weight, norm_bias, eps, w_in, w_dw, dw_bias, source,
                     wide, false, 0, 0, nullptr, nullptr, nullptr, out, out_channels};
    return run_ring(q, threads);
}

// SparseGSA's attention on its TLC windows, then the output projection, the average over the
// windows that cover each pixel and the residual:
// out = residual + (sum over the windows w covering the pixel of W_out A_w v) / their count,
// A_w = blockdiag_h(ReLU(q_h k_h^T / (|q_h| |k_h|^T) * temperature_h)) from the window's pixels.
//   qkv:  [B, H, W, 3C] (q, k, v channel blocks), contiguous
//   windows: row_starts[n_rows] x col_starts[n_cols] (row-major), each win_h x win_w pixels
//   temperature: [heads]; w_out: [C, C]; residual, out: [B, H, W, C] (out may be the residual)
// Three parallel stages: the heads' Gram blocks of every window (summed over its pixels in
// row-major order), each window's W_out A_w packed as GEMM panels, then image rows, each
// summing its windows' projections in window order (the bits do not depend on the threads).
int dlg_window_attention(const float* qkv, const float* residual, float* out, const float* temperature,
                         const float* w_out, const int* row_starts, int n_rows, const int* col_starts, int n_cols,
                         int win_h, int win_w, int batch, int height, int width, int channels, int heads,
                         int threads) {
    (void)threads;  // unused in a build without OpenMP
    if (heads <= 0 || channels % heads || n_rows <= 0 || n_cols <= 0) return 1;
    const int d = channels / heads, cp = (channels + kNR - 1) / kNR * kNR;
    const int64_t pixel = 3 * static_cast<int64_t>(channels), row = width * pixel;
    const int windows = n_rows * n_cols;
    const int64_t all = static_cast<int64_t>(batch) * windows;
    // may 16 floats be read from any q or k block start? (the k block is followed by v)
    const bool whole = channels + (heads - 1) * d + (d - 1) / 16 * 16 + 16 <= 3 * channels;
    const Scratch<float> shared({all * heads * d * d, all * channels * cp});
    const Scratch<int> covers({width});
    if (!shared.ok() || !covers.ok()) return 2;
    float* attn = shared[0];
    float* mixes = shared[1];
    int* cover = covers[0];
    for (int x = 0; x < width; ++x) {
        cover[x] = 0;
        for (int c = 0; c < n_cols; ++c) cover[x] += x >= col_starts[c] && x < col_starts[c] + win_w;
    }
    int status = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        const Scratch<float> own({static_cast<int64_t>(d) * d + 2 * d, static_cast<int64_t>(width) * cp,
                                  static_cast<int64_t>(win_w) * cp});
        float* gram = own[0];
        float* acc = own[1];
        float* proj = own[2];
        const bool ready = own.ok();
        report_failure(ready, status);
        // 1. Gram blocks and norms of each head of each window -> the sparse attention map
#pragma omp for schedule(static)
        for (int64_t task = 0; task < all * heads; ++task) {
            if (!ready) continue;
            const int h = static_cast<int>(task % heads);
            const int64_t w = task / heads;
            const int b = static_cast<int>(w / windows), wi = static_cast<int>(w % windows);
            const float* base = qkv + ((static_cast<int64_t>(b) * height + row_starts[wi / n_cols]) * width
                                       + col_starts[wi % n_cols]) * pixel;
            float* norms = gram + d * d;
            window_gram(gram, d, norms, base + h * d, base + channels + h * d, d, pixel, row, win_h, win_w, whole);
            float* a = attn + (w * heads + h) * d * d;
            for (int i = 0; i < d; ++i) {
                const float inv_q = 1.0f / std::fmax(std::sqrt(norms[i]), 1e-12f);
                for (int j = 0; j < d; ++j) {
                    const float inv_k = 1.0f / std::fmax(std::sqrt(norms[d + j]), 1e-12f);
                    const float v = gram[i * d + j] * inv_q * inv_k * temperature[h];
                    a[i * d + j] = v > 0.0f ? v : 0.0f;
                }
            }
        }
        // 2. each window's W_out A_w, packed as panels [cp / 16][C][16]: panel slot (j, o) holds
        //    element (o, j), for the GEMM v W_out A_w^T... of stage 3
#pragma omp for schedule(static)
        for (int64_t w = 0; w < all; ++w) {
            if (!ready) continue;
            float* m = mixes + w * channels * cp;
            const float* a = attn + w * heads * d * d;
            for (int j = 0; j < channels; ++j) {
                const int h = j / d, jj = j % d;
                for (int o = 0; o < cp; ++o) {
                    float sum = 0.0f;
                    if (o < channels)
                        for (int i = 0; i < d; ++i) sum += w_out[o * channels + h * d + i] * a[(h * d + i) * d + jj];
                    m[(static_cast<int64_t>(o / kNR) * channels + j) * kNR + o % kNR] = sum;
                }
            }
        }
        // 3. per image row: sum the projections of the windows that cover it, then average
#pragma omp for schedule(static)
        for (int64_t task = 0; task < static_cast<int64_t>(batch) * height; ++task) {
            if (!ready) continue;
            const int b = static_cast<int>(task / height), y = static_cast<int>(task % height);
            std::memset(acc, 0, sizeof(float) * width * cp);
            int rows_over = 0;
            for (int wr = 0; wr < n_rows; ++wr) {
                if (y < row_starts[wr] || y >= row_starts[wr] + win_h) continue;
                ++rows_over;
                for (int wc = 0; wc < n_cols; ++wc) {
                    const int x0 = col_starts[wc];
                    const int64_t w = static_cast<int64_t>(b) * windows + wr * n_cols + wc;
                    const float* v = qkv + (static_cast<int64_t>(b) * height + y) * row + x0 * pixel + 2 * channels;
                    gemm_rows(v, pixel, win_w, mixes + w * channels * cp, channels, cp / kNR, proj, cp);
                    for (int p = 0; p < win_w; ++p) {
                        float* dst = acc + static_cast<int64_t>(x0 + p) * cp;
                        for (int o = 0; o < cp; o += 8) store(dst + o, load(dst + o) + load(proj + p * cp + o));
                    }
                }
            }
            const int64_t at = (static_cast<int64_t>(b) * height + y) * width * channels;
            for (int x = 0; x < width; ++x) {
                const float count = static_cast<float>(rows_over * cover[x]);
                const float* src = acc + static_cast<int64_t>(x) * cp;
                for (int o = 0; o < channels; ++o)
                    out[at + x * channels + o] = residual[at + x * channels + o] + src[o] / count;
            }
        }
    }
    return status;
}


// MHDLSA's way in, for a band of rows: planes = W0 LN(x) and hyper = W_r planes (+ b_r), both
// as channel planes (NCHW, the dynamic conv's layout), from the channels-last band x.
//   x: [B, P, C] the band's pixels (rows of whole image width, image b at x + b * x_batch_stride)
//   norm_weight, norm_bias, eps: the block's LayerNorm (as in dlg_gdfn; null: x as is)
//   w0: [C, C]; w_reduce: [R, C]; reduce_bias: [R] or null
//   planes: [B, C, P]; hyper: [B, R, P]
// Each task takes 64 pixels: normalised and packed as four GEMM panels (pixels across), multiplied
// by W0 into planes, which are packed again as W_r's panels.
int dlg_mhdlsa_in(const float* x, int64_t x_batch_stride, const float* norm_weight, const float* norm_bias, float eps,
                  const float* w0, const float* w_reduce, const float* reduce_bias, float* planes, float* hyper,
                  int batch, int pixels, int channels, int reduced, int threads) {
    constexpr int kCols = 4 * kNR;
    const int blocks = (pixels + kCols - 1) / kCols;
    const int64_t tasks = static_cast<int64_t>(batch) * blocks;
    const int64_t block = static_cast<int64_t>(kCols) * channels;
    return for_each_task(
        threads, tasks, {block, block, block, static_cast<int64_t>(reduced) * kCols},
        [&](int64_t task, const Scratch<float>& own) {
            float* normed = own[0];
            float* panels = own[1];
            float* mid = own[2];
            float* low = own[3];
            const int b = static_cast<int>(task / blocks), p0 = static_cast<int>(task % blocks) * kCols;
            const int n = pixels - p0 < kCols ? pixels - p0 : kCols;
            const float* src = x + b * x_batch_stride + static_cast<int64_t>(p0) * channels;
            if (norm_weight) {
                layer_norm(normed, src, n, channels, norm_weight, norm_bias, eps);
                src = normed;
            }
            // panels [4][C][16 pixels], zero past the band's end
            for (int j = 0; j < kCols / kNR; ++j)
                for (int c = 0; c < channels; ++c)
                    for (int l = 0; l < kNR; ++l) {
                        const int at = j * kNR + l;
                        panels[(j * channels + c) * kNR + l] = at < n ? src[at * channels + c] : 0.0f;
                    }
            gemm_rows(w0, channels, channels, panels, channels, kCols / kNR, mid, kCols);   // [C][64]
            for (int j = 0; j < kCols / kNR; ++j)  // W_r's panels from the planes block
                for (int c = 0; c < channels; ++c)
                    std::memcpy(panels + (j * channels + c) * kNR, mid + c * kCols + j * kNR, sizeof(float) * kNR);
            gemm_rows(w_reduce, channels, reduced, panels, channels, kCols / kNR, low, kCols);   // [R][64]
            float* pd = planes + static_cast<int64_t>(b) * channels * pixels + p0;
            for (int c = 0; c < channels; ++c)
                std::memcpy(pd + static_cast<int64_t>(c) * pixels, mid + c * kCols, sizeof(float) * n);
            float* hd = hyper + static_cast<int64_t>(b) * reduced * pixels + p0;
            for (int r = 0; r < reduced; ++r) {
                const float bias = reduce_bias ? reduce_bias[r] : 0.0f;
                for (int l = 0; l < n; ++l) hd[static_cast<int64_t>(r) * pixels + l] = low[r * kCols + l] + bias;
            }
        });
}

// MHDLSA's way out: out = residual + W1 acc, back to channels-last.
//   acc: [B, C, P] channel planes; w1: [C, C]; residual, out: [B, P, C], image b at
//   + b * batch_stride (rows of a larger map); out may be the residual
int dlg_mhdlsa_out(const float* acc, const float* w1, const float* residual, float* out, int64_t batch_stride,
                   int batch, int pixels, int channels, int threads) {
    const int cp = (channels + kNR - 1) / kNR * kNR;
    const Scratch<float> weights({static_cast<int64_t>(cp) * channels});
    if (!weights.ok()) return 2;
    float* packed = weights[0];
    pack_rows(packed, w1, channels, channels, cp);
    constexpr int kCols = 64;
    const int blocks = (pixels + kCols - 1) / kCols;
    const int64_t tasks = static_cast<int64_t>(batch) * blocks;
    return for_each_task(
        threads, tasks, {static_cast<int64_t>(kCols) * channels, static_cast<int64_t>(kCols) * cp},
        [&](int64_t task, const Scratch<float>& own) {
            float* rows = own[0];
            float* proj = own[1];
            const int b = static_cast<int>(task / blocks), p0 = static_cast<int>(task % blocks) * kCols;
            const int n = pixels - p0 < kCols ? pixels - p0 : kCols;
            const float* a = acc + static_cast<int64_t>(b) * channels * pixels + p0;
            for (int c = 0; c < channels; ++c)  // to pixel rows [n][C]
                for (int l = 0; l < n; ++l) rows[l * channels + c] = a[static_cast<int64_t>(c) * pixels + l];
            gemm_rows(rows, channels, n, packed, channels, cp / kNR, proj, cp);
            const int64_t at = b * batch_stride + static_cast<int64_t>(p0) * channels;
            for (int l = 0; l < n; ++l)
                add_projection(out + at + static_cast<int64_t>(l) * channels, proj + l * cp, nullptr,
                               residual + at + static_cast<int64_t>(l) * channels, channels);
        });
}


}  // extern "C"
