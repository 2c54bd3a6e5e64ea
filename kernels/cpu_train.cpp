// Training-side CPU kernels of DLGSANet (float32 and float64), called through ctypes: MHDLSA's
// dynamic depth-wise convolution and the feed-forward's GELU gate, each with its backward pass.
//
// Why: under autograd the PyTorch path runs the dynamic conv as K*K shifted multiply-adds over
// the whole batch, and its backward as K*K more for grad_x plus K*K multiplies and channel sums
// for grad_K: each a separate pass over feature-map-sized tensors, with a zero-filled output per
// reduction. Here one task handles one kernel group of one image: it copies the group's planes,
// zero-padded, into scratch once, then applies all K*K taps to a row's columns, eight floats
// (four doubles) at a time, for up to eight channels at once with the accumulators in registers.
//
//   out[c, h, w]          = sum_{i,j} K[g, i, j, h, w] * x[c, h + i - p, w + j - p]
//   grad_x[c, h', w']     = sum_{i,j} K[g, i, j, h' - i + p, w' - j + p] * gy[c, h' - i + p, w' - j + p]
//   grad_K[g, i, j, h, w] = sum_{c in g} gy[c, h, w] * x[c, h + i - p, w + j - p]
//
// with channel c in group g = c / (C / G), zero padding p = K / 2 and out-of-range terms left
// out. grad_x is gathered per input row (not scattered per output row), so every output element
// is written by one task: no atomics, and the result does not depend on the thread count.
//
// The GELU gate (y = gelu(g) * v, and gg, gv from gy) is element-wise: one pass each way instead
// of PyTorch's two forward and three backward passes.
//
// Plain C++ (no PyTorch headers) with GCC/clang vector extensions, OpenMP where the compiler has
// it (PyTorch's own libgomp on Linux).

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace {

// 32 bytes of T (eight floats or four doubles: one AVX register) with GCC/clang vector
// extensions, so the same source compiles everywhere (no intrinsics); U is the unaligned flavour.
template <typename T> struct Vec;
template <> struct Vec<float> {
    typedef float V __attribute__((vector_size(32)));
    typedef float U __attribute__((vector_size(32), aligned(4)));
};
template <> struct Vec<double> {
    typedef double V __attribute__((vector_size(32)));
    typedef double U __attribute__((vector_size(32), aligned(8)));
};
template <typename T> using V = typename Vec<T>::V;
template <typename T> constexpr int lanes() { return 32 / sizeof(T); }
template <typename T> inline V<T> load(const T* p) { return *reinterpret_cast<const typename Vec<T>::U*>(p); }
template <typename T> inline void store(T* p, V<T> v) { *reinterpret_cast<typename Vec<T>::U*>(p) = v; }
template <typename T> inline V<T> zero() { return V<T>{} ; }

// The first n (< lanes) elements of v to p.
template <typename T> inline void store_part(T* p, V<T> v, int64_t n) {
    for (int64_t l = 0; l < n; ++l) p[l] = v[l];
}

constexpr int kMaxChunk = 8;  // channels of one group filtered at once (accumulators in registers)

struct Shape {
    int64_t batch, channels, groups, ksize, height, width;
    int64_t per_group() const { return channels / groups; }
    int64_t plane() const { return height * width; }
    int64_t pad() const { return ksize / 2; }
    int64_t taps() const { return ksize * ksize; }
};

// Row widths of a task's scratch: whole vectors, with room for the K - 1 padding columns and the
// widest unaligned load past them.
template <typename T> int64_t vec_width(const Shape& s) { return (s.width + lanes<T>() - 1) / lanes<T>() * lanes<T>(); }
template <typename T> int64_t padded_width(const Shape& s) { return vec_width<T>(s) + 2 * s.pad() + lanes<T>(); }

// dst[0:width) = zeros, then src[0:n) at column `at` (src null: all zeros).
template <typename T> inline void put_row(T* dst, int64_t width, const T* src, int64_t n, int64_t at) {
    std::memset(dst, 0, sizeof(T) * width);
    if (src) std::memcpy(dst + at, src, sizeof(T) * n);
}

// out_c[v] = sum_t k[t][v] * rows_c[t / K][v + t % K] for NJ channels, taps row-major: one
// output row. rows_c: the K source rows of channel c (zero-padded by p on each side, rows `pw`
// apart); k: the taps' kernel rows, `kstride` apart.
template <typename T, int NJ>
void filter(T* const* out, const T* const* rows, const T* k, int64_t kstride, int64_t pw, const Shape& s) {
    const int64_t ks = s.ksize, w = s.width;
    for (int64_t v0 = 0; v0 < w; v0 += lanes<T>()) {
        V<T> acc[NJ];
        for (int c = 0; c < NJ; ++c) acc[c] = zero<T>();
        for (int64_t i = 0; i < ks; ++i) {
            for (int64_t j = 0; j < ks; ++j) {
                const V<T> kv = load(k + (i * ks + j) * kstride + v0);
                for (int c = 0; c < NJ; ++c) acc[c] += kv * load(rows[c] + i * pw + v0 + j);
            }
        }
        for (int c = 0; c < NJ; ++c) {
            if (v0 + lanes<T>() <= w) store(out[c] + v0, acc[c]);
            else store_part(out[c] + v0, acc[c], w - v0);
        }
    }
}

// grad_x of one input row hh for NJ channels: gx_c[v] = sum_{i,j} K_ij[h][v + 2p - j] * gy_c[h][v + 2p - j]
// over the output rows h = hh - i + p inside the map (rows i0 <= i < i1). kp: the K*K kernel
// planes, gyp[c]: the gradient planes, all zero-padded by p on each side of a row, rows `pw`
// apart, kernel planes `kplane` apart; both pointers at row hh + p (that is, h for i = 0).
template <typename T, int NJ>
void gather(T* const* gx, const T* const* gyp, const T* kp, int64_t kplane, int64_t pw, int64_t i0, int64_t i1,
            const Shape& s) {
    const int64_t ks = s.ksize, w = s.width, p2 = 2 * s.pad();
    for (int64_t v0 = 0; v0 < w; v0 += lanes<T>()) {
        V<T> acc[NJ];
        for (int c = 0; c < NJ; ++c) acc[c] = zero<T>();
        for (int64_t i = i0; i < i1; ++i) {
            for (int64_t j = 0; j < ks; ++j) {
                const int64_t at = v0 + p2 - j - i * pw;
                const V<T> kv = load(kp + (i * ks + j) * kplane + at);
                for (int c = 0; c < NJ; ++c) acc[c] += kv * load(gyp[c] + at);
            }
        }
        for (int c = 0; c < NJ; ++c) {
            if (v0 + lanes<T>() <= w) store(gx[c] + v0, acc[c]);
            else store_part(gx[c] + v0, acc[c], w - v0);
        }
    }
}

// grad_K rows of one output row: gk[t][v] (+)= sum_c gy_c[v] * rows_c[i][v + j] over NJ channels
// (`first`: write, else add to what an earlier chunk of the group's channels wrote). gy_c: rows
// readable a whole vector past the width.
template <typename T, int NJ>
void correlate(T* gk, int64_t hw, const T* const* gy, const T* const* rows, int64_t pw, const Shape& s, bool first) {
    const int64_t ks = s.ksize, w = s.width;
    for (int64_t v0 = 0; v0 < w; v0 += lanes<T>()) {
        V<T> g[NJ];
        for (int c = 0; c < NJ; ++c) g[c] = load(gy[c] + v0);
        const int64_t n = w - v0 < lanes<T>() ? w - v0 : lanes<T>();
        for (int64_t i = 0; i < ks; ++i) {
            for (int64_t j = 0; j < ks; ++j) {
                V<T> acc = g[0] * load(rows[0] + i * pw + v0 + j);
                for (int c = 1; c < NJ; ++c) acc += g[c] * load(rows[c] + i * pw + v0 + j);
                T* dst = gk + (i * ks + j) * hw + v0;
                if (!first) {
                    V<T> old = zero<T>();
                    for (int64_t l = 0; l < n; ++l) old[l] = dst[l];
                    acc = old + acc;
                }
                if (n == lanes<T>()) store(dst, acc);
                else store_part(dst, acc, n);
            }
        }
    }
}

// CALL(NJ) for the chunk size nj in 1..kMaxChunk (a compile-time NJ keeps the accumulators in registers).
#define DLGT_BY_CHUNK(nj, CALL)                                              \
    switch (nj) {                                                            \
        case 1: CALL(1); break;                                              \
        case 2: CALL(2); break;                                              \
        case 3: CALL(3); break;                                              \
        case 4: CALL(4); break;                                              \
        case 5: CALL(5); break;                                              \
        case 6: CALL(6); break;                                              \
        case 7: CALL(7); break;                                              \
        default: CALL(8); break;                                             \
    }

// Planes of a group's maps in scratch: `rows` rows of `pw` (a whole vector wider than the
// width plus 2p), the map's rows placed from row `top` on, columns from p on, zeros elsewhere.
template <typename T>
void padded_planes(T* dst, const T* src, int64_t planes, int64_t rows, int64_t top, const Shape& s) {
    const int64_t pw = padded_width<T>(s);
    std::memset(dst, 0, sizeof(T) * planes * rows * pw);
    for (int64_t c = 0; c < planes; ++c)
        for (int64_t r = 0; r < s.height; ++r)
            std::memcpy(dst + (c * rows + top + r) * pw + s.pad(), src + (c * s.height + r) * s.width,
                        sizeof(T) * s.width);
}

// Largest scratch of a task: the padded source planes plus the kernel planes (grad_x) or the
// kernel rows or gradient rows of the widest case.
template <typename T> int64_t scratch_size(const Shape& s) {
    const int64_t pw = padded_width<T>(s), cg = s.per_group();
    const int64_t planes = cg * (s.height + 2 * s.pad()) * pw;
    const int64_t extra = s.taps() * s.height * pw;
    return planes + (extra > s.taps() * vec_width<T>(s) ? extra : s.taps() * vec_width<T>(s)) + cg * vec_width<T>(s);
}

// Source pointers of channels c0..c0+nj of one output row h in planes of `rows` rows.
template <typename T>
int chunk_rows(const T** src, const T* planes, int64_t c0, int64_t cg, int64_t rows, int64_t h, int64_t pw) {
    const int nj = static_cast<int>(cg - c0 < kMaxChunk ? cg - c0 : kMaxChunk);
    for (int c = 0; c < nj; ++c) src[c] = planes + ((c0 + c) * rows + h) * pw;
    return nj;
}

// All output rows of one kernel group of one image.
template <typename T>
void forward_task(const Shape& s, const T* x, const T* kern, T* out, int64_t n, int64_t g, T* scratch) {
    const int64_t cg = s.per_group(), hw = s.plane(), pw = padded_width<T>(s), kw = vec_width<T>(s);
    const int64_t rows = s.height + 2 * s.pad();
    T* xp = scratch;
    T* kb = xp + cg * rows * pw;
    padded_planes(xp, x + (n * s.channels + g * cg) * hw, cg, rows, s.pad(), s);
    const T* kg = kern + (n * s.groups + g) * s.taps() * hw;
    const bool whole = s.width % lanes<T>() == 0;  // else the last vector of a row reads past it
    for (int64_t h = 0; h < s.height; ++h) {
        const T* k = kg + h * s.width;
        int64_t kstride = hw;
        if (!whole) {
            for (int64_t t = 0; t < s.taps(); ++t) put_row(kb + t * kw, kw, kg + t * hw + h * s.width, s.width, 0);
            k = kb;
            kstride = kw;
        }
        for (int64_t c0 = 0; c0 < cg; c0 += kMaxChunk) {
            T* dst[kMaxChunk];
            const T* src[kMaxChunk];
            const int nj = chunk_rows(src, xp, c0, cg, rows, h, pw);
            for (int c = 0; c < nj; ++c) dst[c] = out + (n * s.channels + g * cg + c0 + c) * hw + h * s.width;
#define DLGT_FILTER(NJ) filter<T, NJ>(dst, src, k, kstride, pw, s)
            DLGT_BY_CHUNK(nj, DLGT_FILTER)
#undef DLGT_FILTER
        }
    }
}

// grad_x of all input rows of one kernel group of one image, each gathered from the output rows
// h = hh - i + p that read it.
template <typename T>
void grad_x_task(const Shape& s, const T* gy, const T* kern, T* gx, int64_t n, int64_t g, T* scratch) {
    const int64_t cg = s.per_group(), hw = s.plane(), pw = padded_width<T>(s), pad = s.pad();
    const int64_t rows = s.height + 2 * pad;
    T* gyp = scratch;
    T* kp = gyp + cg * rows * pw;
    padded_planes(gyp, gy + (n * s.channels + g * cg) * hw, cg, rows, 0, s);
    padded_planes(kp, kern + (n * s.groups + g) * s.taps() * hw, s.taps(), s.height, 0, s);
    for (int64_t hh = 0; hh < s.height; ++hh) {
        // output rows h = hh - i + p inside [0, H): i in [i0, i1)
        const int64_t i0 = hh + pad - (s.height - 1) > 0 ? hh + pad - (s.height - 1) : 0;
        const int64_t i1 = hh + pad + 1 < s.ksize ? hh + pad + 1 : s.ksize;
        for (int64_t c0 = 0; c0 < cg; c0 += kMaxChunk) {
            T* dst[kMaxChunk];
            const T* src[kMaxChunk];
            const int nj = chunk_rows(src, gyp, c0, cg, rows, hh + pad, pw);
            for (int c = 0; c < nj; ++c) dst[c] = gx + (n * s.channels + g * cg + c0 + c) * hw + hh * s.width;
#define DLGT_GATHER(NJ) gather<T, NJ>(dst, src, kp + (hh + pad) * pw, s.height * pw, pw, i0, i1, s)
            DLGT_BY_CHUNK(nj, DLGT_GATHER)
#undef DLGT_GATHER
        }
    }
}

// grad_K of all output rows of one kernel group of one image: all K*K tap rows.
template <typename T>
void grad_k_task(const Shape& s, const T* gy, const T* x, T* gk, int64_t n, int64_t g, T* scratch) {
    const int64_t cg = s.per_group(), hw = s.plane(), pw = padded_width<T>(s), kw = vec_width<T>(s);
    const int64_t rows = s.height + 2 * s.pad();
    T* xp = scratch;
    T* gyb = xp + cg * rows * pw;
    padded_planes(xp, x + (n * s.channels + g * cg) * hw, cg, rows, s.pad(), s);
    for (int64_t h = 0; h < s.height; ++h) {
        for (int64_t c = 0; c < cg; ++c)
            put_row(gyb + c * kw, kw, gy + (n * s.channels + g * cg + c) * hw + h * s.width, s.width, 0);
        T* dst = gk + (n * s.groups + g) * s.taps() * hw + h * s.width;
        for (int64_t c0 = 0; c0 < cg; c0 += kMaxChunk) {
            const T* grads[kMaxChunk];
            const T* src[kMaxChunk];
            const int nj = chunk_rows(src, xp, c0, cg, rows, h, pw);
            for (int c = 0; c < nj; ++c) grads[c] = gyb + (c0 + c) * kw;
#define DLGT_CORRELATE(NJ) correlate<T, NJ>(dst, hw, grads, src, pw, s, c0 == 0)
            DLGT_BY_CHUNK(nj, DLGT_CORRELATE)
#undef DLGT_CORRELATE
        }
    }
}

// body(n, g, scratch) for every kernel group of every image, statically shared among `threads`
// OpenMP threads, each with its own scratch. Returns 0, or 2 when out of memory.
template <typename T, class Body>
int for_each_group(const Shape& s, int threads, Body body) {
    (void)threads;  // unused in a build without OpenMP
    const int64_t tasks = s.batch * s.groups;
    int status = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        T* scratch = static_cast<T*>(std::malloc(sizeof(T) * scratch_size<T>(s)));
        if (!scratch) {
#pragma omp atomic write
            status = 2;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; ++task) {
            if (scratch) body(task / s.groups, task % s.groups, scratch);
        }
        std::free(scratch);
    }
    return status;
}

bool valid(const Shape& s) {
    return s.batch > 0 && s.channels > 0 && s.groups > 0 && s.channels % s.groups == 0 && s.ksize > 0 &&
           s.ksize % 2 == 1 && s.height > 0 && s.width > 0;
}

template <typename T>
int forward(const T* x, const T* kern, T* out, Shape s, int threads) {
    if (!valid(s)) return 1;
    return for_each_group<T>(s, threads, [&](int64_t n, int64_t g, T* scratch) {
        forward_task(s, x, kern, out, n, g, scratch);
    });
}

// Either gradient may be skipped (null), as autograd asks only for those it needs.
template <typename T>
int backward(const T* gy, const T* x, const T* kern, T* gx, T* gk, Shape s, int threads) {
    if (!valid(s)) return 1;
    int status = 0;
    if (gx) status |= for_each_group<T>(s, threads, [&](int64_t n, int64_t g, T* scratch) {
        grad_x_task(s, gy, kern, gx, n, g, scratch);
    });
    if (gk) status |= for_each_group<T>(s, threads, [&](int64_t n, int64_t g, T* scratch) {
        grad_k_task(s, gy, x, gk, n, g, scratch);
    });
    return status;
}

// ---- GELU gate of the feed-forward: y = gelu(g) * v, and its backward, in one pass each ----

typedef int32_t VI __attribute__((vector_size(32)));
inline V<float> splat(float s) { return V<float>{s, s, s, s, s, s, s, s}; }

// exp(x) for x <= 0 (clamped at -87), eight at once: Cody-Waite reduction by ln 2, degree-7
// Taylor polynomial, exponent put in by integer add (as the fused inference kernels do).
inline V<float> exp_neg(V<float> x) {
    x = x < splat(-87.0f) ? splat(-87.0f) : x;
    const VI n = __builtin_convertvector(x * splat(1.4426950408889634f) - splat(0.5f), VI);
    const V<float> nf = __builtin_convertvector(n, V<float>);
    const V<float> r = x - nf * splat(0.693145751953125f) - nf * splat(1.428606765330187e-06f);
    V<float> q = splat(1.0f / 5040.0f);
    for (float c : {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f}) q = q * r + splat(c);
    return q * (V<float>)((n + 127) << 23);
}

// Phi(x) = 0.5 (1 + erf(x / sqrt 2)) and phi(x) = exp(-x^2 / 2) / sqrt(2 pi), eight at once; erf
// by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as PyTorch's vectorised CPU GELU.
inline void normal_cdf_pdf(V<float> x, V<float>& cdf, V<float>& pdf) {
    const V<float> z = x * splat(0.70710678118654752f);
    const VI sign = (VI)z & 0x80000000;
    const V<float> a = (V<float>)((VI)z & 0x7fffffff);
    const V<float> t = splat(1.0f) / (splat(1.0f) + splat(0.3275911f) * a);
    V<float> r = splat(1.061405429f);
    for (float c : {-1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f}) r = r * t + splat(c);
    const V<float> e = exp_neg(-(a * a));
    const V<float> erf_z = (V<float>)((VI)(splat(1.0f) - r * t * e) | sign);
    cdf = splat(0.5f) * (splat(1.0f) + erf_z);
    pdf = e * splat(0.3989422804014327f);
}

inline void normal_cdf_pdf(double x, double& cdf, double& pdf) {
    cdf = 0.5 * (1.0 + std::erf(x * 0.70710678118654752));
    pdf = std::exp(-0.5 * x * x) * 0.3989422804014327;
}

constexpr int64_t kGateBlock = 4096;  // elements per task

// y = gelu(g) * v over n elements.
void gate_forward(const float* g, const float* v, float* y, int64_t begin, int64_t end) {
    int64_t e = begin;
    for (; e + 8 <= end; e += 8) {
        V<float> cdf, pdf, x = load(g + e);
        normal_cdf_pdf(x, cdf, pdf);
        store(y + e, x * cdf * load(v + e));
    }
    for (; e < end; ++e) {
        double cdf, pdf;
        normal_cdf_pdf(static_cast<double>(g[e]), cdf, pdf);
        y[e] = g[e] * static_cast<float>(cdf) * v[e];
    }
}

void gate_forward(const double* g, const double* v, double* y, int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
        double cdf, pdf;
        normal_cdf_pdf(g[e], cdf, pdf);
        y[e] = g[e] * cdf * v[e];
    }
}

// gg = gy * v * gelu'(g), gv = gy * gelu(g), with gelu'(x) = Phi(x) + x phi(x).
void gate_backward(const float* gy, const float* g, const float* v, float* gg, float* gv, int64_t begin,
                   int64_t end) {
    int64_t e = begin;
    for (; e + 8 <= end; e += 8) {
        V<float> cdf, pdf, x = load(g + e);
        normal_cdf_pdf(x, cdf, pdf);
        const V<float> dy = load(gy + e);
        store(gg + e, dy * load(v + e) * (cdf + x * pdf));
        store(gv + e, dy * x * cdf);
    }
    for (; e < end; ++e) {
        double cdf, pdf;
        normal_cdf_pdf(static_cast<double>(g[e]), cdf, pdf);
        gg[e] = gy[e] * v[e] * static_cast<float>(cdf + g[e] * pdf);
        gv[e] = gy[e] * g[e] * static_cast<float>(cdf);
    }
}

void gate_backward(const double* gy, const double* g, const double* v, double* gg, double* gv, int64_t begin,
                   int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
        double cdf, pdf;
        normal_cdf_pdf(g[e], cdf, pdf);
        gg[e] = gy[e] * v[e] * (cdf + g[e] * pdf);
        gv[e] = gy[e] * g[e] * cdf;
    }
}

template <class Body>
void for_each_block(int64_t n, int threads, Body body) {
    (void)threads;
    const int64_t tasks = (n + kGateBlock - 1) / kGateBlock;
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
        const int64_t begin = task * kGateBlock;
        body(begin, begin + kGateBlock < n ? begin + kGateBlock : n);
    }
}

}  // namespace

extern "C" {

int dlgt_abi_version() { return 2; }

int dlgt_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

// x, out: [N, C, H, W]; kern: [N, G, K, K, H, W]; all contiguous. Returns 0, or 1 for bad shapes.
int dlgt_ddw_forward_f32(const float* x, const float* kern, float* out, int64_t batch, int64_t channels,
                         int64_t groups, int64_t ksize, int64_t height, int64_t width, int threads) {
    return forward(x, kern, out, Shape{batch, channels, groups, ksize, height, width}, threads);
}

int dlgt_ddw_forward_f64(const double* x, const double* kern, double* out, int64_t batch, int64_t channels,
                         int64_t groups, int64_t ksize, int64_t height, int64_t width, int threads) {
    return forward(x, kern, out, Shape{batch, channels, groups, ksize, height, width}, threads);
}

// gy: [N, C, H, W] gradient of out; gx (like x) and gk (like kern) are written, each may be null.
int dlgt_ddw_backward_f32(const float* gy, const float* x, const float* kern, float* gx, float* gk, int64_t batch,
                          int64_t channels, int64_t groups, int64_t ksize, int64_t height, int64_t width,
                          int threads) {
    return backward(gy, x, kern, gx, gk, Shape{batch, channels, groups, ksize, height, width}, threads);
}

int dlgt_ddw_backward_f64(const double* gy, const double* x, const double* kern, double* gx, double* gk,
                          int64_t batch, int64_t channels, int64_t groups, int64_t ksize, int64_t height,
                          int64_t width, int threads) {
    return backward(gy, x, kern, gx, gk, Shape{batch, channels, groups, ksize, height, width}, threads);
}

// GELU gate: y = gelu(g) * v over n contiguous elements; its backward writes gg and gv.
int dlgt_gate_forward_f32(const float* g, const float* v, float* y, int64_t n, int threads) {
    for_each_block(n, threads, [&](int64_t b, int64_t e) { gate_forward(g, v, y, b, e); });
    return 0;
}

int dlgt_gate_forward_f64(const double* g, const double* v, double* y, int64_t n, int threads) {
    for_each_block(n, threads, [&](int64_t b, int64_t e) { gate_forward(g, v, y, b, e); });
    return 0;
}

int dlgt_gate_backward_f32(const float* gy, const float* g, const float* v, float* gg, float* gv, int64_t n,
                           int threads) {
    for_each_block(n, threads, [&](int64_t b, int64_t e) { gate_backward(gy, g, v, gg, gv, b, e); });
    return 0;
}

int dlgt_gate_backward_f64(const double* gy, const double* g, const double* v, double* gg, double* gv, int64_t n,
                           int threads) {
    for_each_block(n, threads, [&](int64_t b, int64_t e) { gate_backward(gy, g, v, gg, gv, b, e); });
    return 0;
}

}  // extern "C"
