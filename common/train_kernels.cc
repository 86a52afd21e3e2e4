// Multi-threaded fp32 CPU kernels for fine-tuning (paddle custom operators, see common/train_kernels.py);
// attention without dropout, the span convolution, the residual add + NoNorm and SqueezeBERT's grouped linear layers
// (alone, with residual add and norm, the feed-forward block) also run in exported inference models.
// paddle 2.6.2's own CPU kernels for these ops run on one thread. A Linear's GEMM (ct_matmul), the grouped 1x1
// convolution, the grouped linear layer and attention's batched products (ct_batched_matmul) call oneDNN's GEMMs
// (paddle's libdnnl).
// Every op takes contiguous row-major tensors (the Python side makes them so); the feature
// dimension is the last one unless an op's comment gives another layout.
#include "paddle/extension.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

inline float gelu(float v) { return 0.5f * v * (1.f + erff(v * kInvSqrt2)); }

#ifdef __AVX512F__
// The first min(n, 16) lanes of a vector.
inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1); }

// e^y for y <= 0 (clamped at -87.3): Cody-Waite reduction by ln 2, degree-7 Taylor polynomial of e^r, |r| <= ln 2 / 2.
inline __m512 exp_nonpositive(__m512 y) {
  y = _mm512_max_ps(y, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), y);  // ln 2 in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  for (const float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

// gelu(v) = v / 2 (1 + erf(z)), z = v / sqrt 2, with 1 - erf(|z|) = q(t) e^{-z^2}, t = 1 / (1 + p |z|) (Abramowitz
// and Stegun 7.1.26): v / 2 q for z < 0, v / 2 (2 - q) otherwise. Against double precision, the largest error on
// [-12, 12] is 4.2e-7 (erff's 4.5e-7); 1.6x as fast as the loop over erff (glibc's vector erff) in cache, SqueezeBERT's
// bf16 export at batch 16 162-165 ms with erff, 155-159 with this (Zen 5).
inline __m512 gelu16(__m512 v) {
  const __m512 a = _mm512_abs_ps(_mm512_mul_ps(v, _mm512_set1_ps(kInvSqrt2)));
  const __m512 d = _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.f));
  __m512 t = _mm512_rcp14_ps(d);
  t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.f)));  // a Newton step: 1 / d to ~1e-8
  __m512 q = _mm512_set1_ps(1.061405429f);
  for (const float c : {-1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f}) q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(c));
  q = _mm512_mul_ps(_mm512_mul_ps(q, t), exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a)));
  const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 s = _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(2.f), q), q);
  return _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)), s);
}
#endif

// x[i] = gelu(x[i] + bias[i]) for i < n; ``one_bias``: x[i] = gelu(x[i] + bias[0]) (a channels-first row).
inline void bias_gelu_row(float* x, const float* bias, int64_t n, bool one_bias = false) {
#ifdef __AVX512F__
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = first_lanes(n - i);
    const __m512 b = one_bias ? _mm512_set1_ps(bias[0]) : _mm512_maskz_loadu_ps(m, bias + i);
    _mm512_mask_storeu_ps(x + i, m, gelu16(_mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), b)));
  }
#else
  for (int64_t i = 0; i < n; ++i) x[i] = gelu(x[i] + bias[one_bias ? 0 : i]);
#endif
}

inline float gelu_grad(float v) {
  return 0.5f * (1.f + erff(v * kInvSqrt2)) + v * kInvSqrt2Pi * expf(-0.5f * v * v);
}

// Bernoulli keep-draw of element i for a seed: a splitmix64 hash, kept when its top 32 bits are
// at or above p * 2^32 (the same element and seed always give the same draw).
inline bool keep(uint64_t seed, uint64_t i, uint64_t threshold) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return ((z ^ (z >> 31)) >> 32) >= threshold;
}

inline uint64_t threshold_of(float p) { return static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0); }

void check_float(const paddle::Tensor& t, const char* what) {
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, what, " must be float32");
  PD_CHECK(t.is_cpu(), what, " must be on the CPU");
}

int64_t last_dim(const paddle::Tensor& t) { return t.shape().back(); }

// A std::vector allocator of 64-byte aligned blocks, for the scratch that GEMMs write and vector code reads: malloc
// aligns to 16 bytes only, so such rows could start mid cache line, and AVX-512 loads then split lines.
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}  // NOLINT: an allocator converts implicitly
  T* allocate(std::size_t n) {
    void* p = nullptr;
    if (posix_memalign(&p, 64, std::max<std::size_t>(1, n * sizeof(T))) != 0) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { free(p); }
};
template <class T, class U>
bool operator==(const CacheAligned<T>&, const CacheAligned<U>&) { return true; }
template <class T, class U>
bool operator!=(const CacheAligned<T>&, const CacheAligned<U>&) { return false; }

// A thread's scratch: cache-line aligned.
template <class T>
using Scratch = std::vector<T, CacheAligned<T>>;

// Per-thread accumulators of ``width`` floats each (reductions over rows without atomics), summed
// at the end.
class PartialSums {
 public:
  PartialSums(int threads, int64_t width)
      : threads_(threads), width_(width), data_(static_cast<size_t>(threads) * width, 0.f) {}
  float* of(int thread) { return data_.data() + static_cast<size_t>(thread) * width_; }
  // out[i] = sum over threads of the accumulator's element offset + i, for i < n.
  void sum(int64_t offset, int64_t n, float* out) const {
    for (int64_t i = 0; i < n; ++i) {
      float s = 0.f;
      for (int t = 0; t < threads_; ++t) s += data_[static_cast<size_t>(t) * width_ + offset + i];
      out[i] = s;
    }
  }

 private:
  int threads_;
  int64_t width_;
  Scratch<float> data_;
};

// Column sums of a [rows, n] matrix.
void column_sums(const float* x, int64_t rows, int64_t n, float* out) {
  const int threads = omp_get_max_threads();
  PartialSums partial(threads, n);
#pragma omp parallel num_threads(threads)
  {
    float* acc = partial.of(omp_get_thread_num());
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) acc[i] += row[i];
    }
  }
  partial.sum(0, n, out);
}

// Out = f(X + B) over rows of the last dimension, B that dimension's bias.
template <class F>
paddle::Tensor map_with_bias(const paddle::Tensor& x, const paddle::Tensor& b, const char* what, F f) {
  check_float(x, what);
  check_float(b, "bias");
  const int64_t n = last_dim(x), rows = x.numel() / n;
  PD_CHECK(b.numel() == n, "bias size ", b.numel(), " != last dimension ", n);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  const float *px = x.data<float>(), *pb = b.data<float>();
  float* po = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) po[r * n + i] = f(px[r * n + i] + pb[i]);
  }
  return out;
}

// out = softmax(row * scale + add) over k values (out may be row).
inline void masked_softmax(const float* row, const float* add, float scale, int64_t k, float* out) {
  float mx = row[0] * scale + add[0];  // not -INFINITY: fast-math assumes finite values
#pragma omp simd reduction(max : mx)
  for (int64_t i = 0; i < k; ++i) {
    out[i] = row[i] * scale + add[i];
    mx = out[i] > mx ? out[i] : mx;
  }
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < k; ++i) {
    out[i] = expf(out[i] - mx);
    sum += out[i];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t i = 0; i < k; ++i) out[i] *= inv;
}

// An additive attention mask M [batch, 1, 1 or query, key], checked against those sizes.
class AttentionMask {
 public:
  AttentionMask(const paddle::Tensor& m, int64_t batch, int64_t query, int64_t key) : key_(key) {
    check_float(m, "attention mask");
    const auto ms = m.shape();
    PD_CHECK(ms.size() == 4 && ms[0] == batch && ms[1] == 1 && (ms[2] == 1 || ms[2] == query) && ms[3] == key,
             "attention mask must be [batch, 1, 1 or query, key]");
    rows_ = ms[2];
    data_ = m.data<float>();
  }
  // The key values that query qi of sample b adds.
  const float* row(int64_t b, int64_t qi) const { return data_ + (b * rows_ + (rows_ == 1 ? 0 : qi)) * key_; }
  // From one query's row to the next's: 0 where every query adds the same row.
  int64_t stride() const { return rows_ == 1 ? 0 : key_; }

 private:
  int64_t key_, rows_;
  const float* data_;
};

}  // namespace

// ---- dropout (upscale_in_train): Out = X * keep / (1 - p), Mask = keep --------------------------

std::vector<paddle::Tensor> DropoutForward(const paddle::Tensor& x, float p, int64_t seed) {
  check_float(x, "dropout input");
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  auto mask = paddle::empty(x.shape(), paddle::DataType::UINT8, x.place());
  const float* px = x.data<float>();
  float* po = out.data<float>();
  uint8_t* pm = mask.data<uint8_t>();
  const int64_t n = x.numel();
  const uint64_t threshold = threshold_of(p), s = static_cast<uint64_t>(seed);
  const float scale = 1.f / (1.f - p);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const bool k = keep(s, i, threshold);
    pm[i] = k;
    po[i] = k ? px[i] * scale : 0.f;
  }
  return {out, mask};
}

std::vector<paddle::Tensor> DropoutBackward(const paddle::Tensor& mask, const paddle::Tensor& dout, float p) {
  check_float(dout, "dropout gradient");
  auto dx = paddle::empty(dout.shape(), dout.dtype(), dout.place());
  const uint8_t* pm = mask.data<uint8_t>();
  const float* pd = dout.data<float>();
  float* px = dx.data<float>();
  const int64_t n = dout.numel();
  const float scale = 1.f / (1.f - p);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) px[i] = pm[i] ? pd[i] * scale : 0.f;
  return {dx};
}

PD_BUILD_OP(ct_dropout)
    .Inputs({"X"})
    .Outputs({"Out", "Mask"})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(DropoutForward));

PD_BUILD_GRAD_OP(ct_dropout)
    .Inputs({"Mask", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"p: float"})
    .SetKernelFn(PD_KERNEL(DropoutBackward));

// ---- bias add (a Linear's bias): Out = X + B over the last dimension ----------------------------

std::vector<paddle::Tensor> BiasAddForward(const paddle::Tensor& x, const paddle::Tensor& b) {
  return {map_with_bias(x, b, "bias_add input", [](float v) { return v; })};
}

std::vector<paddle::Tensor> BiasAddBackward(const paddle::Tensor& b, const paddle::Tensor& dout) {
  check_float(dout, "bias_add gradient");
  const int64_t n = b.numel(), rows = dout.numel() / n;
  auto dx = paddle::empty(dout.shape(), dout.dtype(), dout.place());
  auto db = paddle::empty(b.shape(), b.dtype(), b.place());
  const float* pd = dout.data<float>();
  float* px = dx.data<float>();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < rows * n; ++i) px[i] = pd[i];
  column_sums(pd, rows, n, db.data<float>());
  return {dx, db};
}

PD_BUILD_OP(ct_bias_add).Inputs({"X", "B"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(BiasAddForward));

PD_BUILD_GRAD_OP(ct_bias_add)
    .Inputs({"B", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("B")})
    .SetKernelFn(PD_KERNEL(BiasAddBackward));

// ---- bias + exact (erf) GELU: Out = gelu(X + B) ------------------------------------------------

std::vector<paddle::Tensor> BiasGeluForward(const paddle::Tensor& x, const paddle::Tensor& b) {
  return {map_with_bias(x, b, "bias_gelu input", [](float v) { return gelu(v); })};
}

std::vector<paddle::Tensor> BiasGeluBackward(const paddle::Tensor& x, const paddle::Tensor& b,
                                             const paddle::Tensor& dout) {
  check_float(dout, "bias_gelu gradient");
  const int64_t n = b.numel(), rows = x.numel() / n;
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto db = paddle::empty(b.shape(), b.dtype(), b.place());
  const float *px = x.data<float>(), *pb = b.data<float>(), *pd = dout.data<float>();
  float* pg = dx.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      pg[r * n + i] = pd[r * n + i] * gelu_grad(px[r * n + i] + pb[i]);
    }
  }
  column_sums(pg, rows, n, db.data<float>());
  return {dx, db};
}

PD_BUILD_OP(ct_bias_gelu).Inputs({"X", "B"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(BiasGeluForward));

PD_BUILD_GRAD_OP(ct_bias_gelu)
    .Inputs({"X", "B", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("B")})
    .SetKernelFn(PD_KERNEL(BiasGeluBackward));

// ---- exact (erf) GELU without a bias (after a layer that added its own) --------------------------------------

std::vector<paddle::Tensor> GeluForward(const paddle::Tensor& x) {
  check_float(x, "gelu input");
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  const float* px = x.data<float>();
  float* po = out.data<float>();
  const int64_t size = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < size; ++i) po[i] = gelu(px[i]);
  return {out};
}

std::vector<paddle::Tensor> GeluBackward(const paddle::Tensor& x, const paddle::Tensor& dout) {
  check_float(dout, "gelu gradient");
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  const float *px = x.data<float>(), *pd = dout.data<float>();
  float* pg = dx.data<float>();
  const int64_t size = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < size; ++i) pg[i] = pd[i] * gelu_grad(px[i]);
  return {dx};
}

PD_BUILD_OP(ct_gelu).Inputs({"X"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(GeluForward));

PD_BUILD_GRAD_OP(ct_gelu).Inputs({"X", paddle::Grad("Out")}).Outputs({paddle::Grad("X")}).SetKernelFn(PD_KERNEL(GeluBackward));

// ---- bias + ReLU: Out = max(X + B, 0); the gradient reads Out -----------------------------------

std::vector<paddle::Tensor> BiasReluForward(const paddle::Tensor& x, const paddle::Tensor& b) {
  return {map_with_bias(x, b, "bias_relu input", [](float v) { return v > 0.f ? v : 0.f; })};
}

std::vector<paddle::Tensor> BiasReluBackward(const paddle::Tensor& out, const paddle::Tensor& b,
                                             const paddle::Tensor& dout) {
  check_float(dout, "bias_relu gradient");
  const int64_t n = b.numel(), rows = out.numel() / n;
  auto dx = paddle::empty(out.shape(), out.dtype(), out.place());
  auto db = paddle::empty(b.shape(), b.dtype(), b.place());
  const float *po = out.data<float>(), *pd = dout.data<float>();
  float* pg = dx.data<float>();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < rows * n; ++i) pg[i] = po[i] > 0.f ? pd[i] : 0.f;
  column_sums(pg, rows, n, db.data<float>());
  return {dx, db};
}

PD_BUILD_OP(ct_bias_relu).Inputs({"X", "B"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(BiasReluForward));

PD_BUILD_GRAD_OP(ct_bias_relu)
    .Inputs({"Out", "B", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("B")})
    .SetKernelFn(PD_KERNEL(BiasReluBackward));

// ---- elementwise affine over the last dimension (MobileBERT's NoNorm): Out = X * W + B, and with
// a residual: Out = (X + R) * W + B -----------------------------------------------------------------

namespace {

// Out rows = (X + R) * W + B (R optional); out may be x.
void scale_shift_rows(const float* x, const float* residual, const float* w, const float* b, int64_t rows, int64_t n,
                      float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * n, *rr = residual ? residual + r * n : nullptr;
    float* o = out + r * n;
    if (rr) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = (xr[i] + rr[i]) * w[i] + b[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = xr[i] * w[i] + b[i];
    }
  }
}

void check_scale_shift_params(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b) {
  check_float(w, "scale_shift weight");
  check_float(b, "scale_shift bias");
  PD_CHECK(w.numel() == last_dim(x) && b.numel() == last_dim(x), "scale_shift weight/bias size != last dimension ",
           last_dim(x));
}

paddle::Tensor scale_shift(const paddle::Tensor& x, const float* residual, const paddle::Tensor& w,
                           const paddle::Tensor& b) {
  check_float(x, "scale_shift input");
  check_scale_shift_params(x, w, b);
  const int64_t n = last_dim(x);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  scale_shift_rows(x.data<float>(), residual, w.data<float>(), b.data<float>(), x.numel() / n, n, out.data<float>());
  return out;
}

// dX = dOut * W (also dR, where a residual is given), dW = column sums of dOut * (X + R), dB =
// column sums of dOut.
std::vector<paddle::Tensor> scale_shift_grad(const paddle::Tensor& x, const float* residual, const paddle::Tensor& w,
                                             const paddle::Tensor& dout) {
  check_float(dout, "scale_shift gradient");
  const int64_t n = w.numel(), rows = x.numel() / n;
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), w.dtype(), w.place());
  auto db = paddle::empty(w.shape(), w.dtype(), w.place());
  auto dr = residual ? paddle::empty(x.shape(), x.dtype(), x.place()) : dx;
  const float *px = x.data<float>(), *pw = w.data<float>(), *pd = dout.data<float>();
  float *pdx = dx.data<float>(), *pdr = dr.data<float>();
  const int threads = omp_get_max_threads();
  PartialSums partial(threads, 2 * n);  // per thread: dw, then db
#pragma omp parallel num_threads(threads)
  {
    float* acc_w = partial.of(omp_get_thread_num());
    float* acc_b = acc_w + n;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float *row = px + r * n, *res = residual ? residual + r * n : nullptr, *dy = pd + r * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        pdx[r * n + i] = pdr[r * n + i] = dy[i] * pw[i];
        acc_w[i] += dy[i] * (res ? row[i] + res[i] : row[i]);
        acc_b[i] += dy[i];
      }
    }
  }
  partial.sum(0, n, dw.data<float>());
  partial.sum(n, n, db.data<float>());
  if (residual) return {dx, dr, dw, db};
  return {dx, dw, db};
}

}  // namespace

std::vector<paddle::Tensor> ScaleShiftForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                              const paddle::Tensor& b) {
  return {scale_shift(x, nullptr, w, b)};
}

std::vector<paddle::Tensor> ScaleShiftBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                               const paddle::Tensor& dout) {
  return scale_shift_grad(x, nullptr, w, dout);
}

PD_BUILD_OP(ct_scale_shift).Inputs({"X", "W", "B"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(ScaleShiftForward));

PD_BUILD_GRAD_OP(ct_scale_shift)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .SetKernelFn(PD_KERNEL(ScaleShiftBackward));

std::vector<paddle::Tensor> AddScaleShiftForward(const paddle::Tensor& x, const paddle::Tensor& r,
                                                 const paddle::Tensor& w, const paddle::Tensor& b) {
  check_float(r, "add_scale_shift residual");
  PD_CHECK(r.shape() == x.shape(), "add_scale_shift: residual shape != input shape");
  return {scale_shift(x, r.data<float>(), w, b)};
}

std::vector<paddle::Tensor> AddScaleShiftBackward(const paddle::Tensor& x, const paddle::Tensor& r,
                                                  const paddle::Tensor& w, const paddle::Tensor& dout) {
  return scale_shift_grad(x, r.data<float>(), w, dout);
}

PD_BUILD_OP(ct_add_scale_shift)
    .Inputs({"X", "R", "W", "B"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(AddScaleShiftForward));

PD_BUILD_GRAD_OP(ct_add_scale_shift)
    .Inputs({"X", "R", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("R"), paddle::Grad("W"), paddle::Grad("B")})
    .SetKernelFn(PD_KERNEL(AddScaleShiftBackward));

// ---- layer norm over the last dimension: Out = (X - mean) * rstd * Gamma + Beta -----------------

std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                             const paddle::Tensor& beta, float epsilon) {
  check_float(x, "layer_norm input");
  check_float(gamma, "layer_norm weight");
  check_float(beta, "layer_norm bias");
  const int64_t n = last_dim(x), rows = x.numel() / n;
  PD_CHECK(gamma.numel() == n && beta.numel() == n, "layer_norm weight/bias size != last dimension ", n);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  auto mean = paddle::empty({rows}, x.dtype(), x.place());
  auto rstd = paddle::empty({rows}, x.dtype(), x.place());
  const float *px = x.data<float>(), *pg = gamma.data<float>(), *pb = beta.data<float>();
  float *po = out.data<float>(), *pm = mean.data<float>(), *pr = rstd.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = px + r * n;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += row[i];
    const float mu = sum / n;
    float sq = 0.f;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < n; ++i) sq += (row[i] - mu) * (row[i] - mu);
    const float rs = 1.f / std::sqrt(sq / n + epsilon);
    pm[r] = mu;
    pr[r] = rs;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) po[r * n + i] = (row[i] - mu) * rs * pg[i] + pb[i];
  }
  return {out, mean, rstd};
}

std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                              const paddle::Tensor& mean, const paddle::Tensor& rstd,
                                              const paddle::Tensor& dout) {
  check_float(dout, "layer_norm gradient");
  const int64_t n = gamma.numel(), rows = x.numel() / n;
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dgamma = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  auto dbeta = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  const float *px = x.data<float>(), *pg = gamma.data<float>(), *pm = mean.data<float>();
  const float *pr = rstd.data<float>(), *pd = dout.data<float>();
  float* pdx = dx.data<float>();
  const int threads = omp_get_max_threads();
  PartialSums partial(threads, 2 * n);  // per thread: dgamma, then dbeta
#pragma omp parallel num_threads(threads)
  {
    float* acc_g = partial.of(omp_get_thread_num());
    float* acc_b = acc_g + n;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float *row = px + r * n, *dy = pd + r * n;
      const float mu = pm[r], rs = pr[r];
      float sum_g = 0.f, sum_gx = 0.f;  // sums over the row of dy*gamma and dy*gamma*xhat
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t i = 0; i < n; ++i) {
        const float xhat = (row[i] - mu) * rs, g = dy[i] * pg[i];
        sum_g += g;
        sum_gx += g * xhat;
        acc_g[i] += dy[i] * xhat;
        acc_b[i] += dy[i];
      }
      const float mean_g = sum_g / n, mean_gx = sum_gx / n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float xhat = (row[i] - mu) * rs;
        pdx[r * n + i] = rs * (dy[i] * pg[i] - mean_g - xhat * mean_gx);
      }
    }
  }
  partial.sum(0, n, dgamma.data<float>());
  partial.sum(n, n, dbeta.data<float>());
  return {dx, dgamma, dbeta};
}

PD_BUILD_OP(ct_layer_norm)
    .Inputs({"X", "Gamma", "Beta"})
    .Outputs({"Out", "Mean", "Rstd"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormForward));

PD_BUILD_GRAD_OP(ct_layer_norm)
    .Inputs({"X", "Gamma", "Mean", "Rstd", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));

// ---- attention probabilities: Out = dropout(softmax(S * scale + M)), M an additive [B, 1, 1, K]
// or [B, 1, Q, K] mask over scores S [B, H, Q, K]; Probs (the softmax) and Mask are kept for the
// gradient. -------------------------------------------------------------------------------------

std::vector<paddle::Tensor> SoftmaxDropoutForward(const paddle::Tensor& s, const paddle::Tensor& m, float scale,
                                                  float p, int64_t seed) {
  check_float(s, "attention scores");
  const auto shape = s.shape();
  PD_CHECK(shape.size() == 4, "attention scores must be [batch, heads, query, key]");
  const int64_t batch = shape[0], heads = shape[1], q = shape[2], k = shape[3];
  const AttentionMask additive(m, batch, q, k);
  auto out = paddle::empty(shape, s.dtype(), s.place());
  auto probs = paddle::empty(shape, s.dtype(), s.place());
  auto mask = paddle::empty(shape, paddle::DataType::UINT8, s.place());
  const float* ps = s.data<float>();
  float *po = out.data<float>(), *pp = probs.data<float>();
  uint8_t* pk = mask.data<uint8_t>();
  const uint64_t threshold = threshold_of(p), sd = static_cast<uint64_t>(seed);
  const float keep_scale = 1.f / (1.f - p);
  const int64_t rows = batch * heads * q;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (heads * q), qi = r % q;
    float* prow = pp + r * k;
    masked_softmax(ps + r * k, additive.row(b, qi), scale, k, prow);
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) {
      const bool kp = keep(sd, r * k + i, threshold);
      pk[r * k + i] = kp;
      po[r * k + i] = kp ? prow[i] * keep_scale : 0.f;
    }
  }
  return {out, probs, mask};
}

std::vector<paddle::Tensor> SoftmaxDropoutBackward(const paddle::Tensor& probs, const paddle::Tensor& mask,
                                                   const paddle::Tensor& dout, float scale, float p) {
  check_float(dout, "attention gradient");
  const int64_t k = last_dim(probs), rows = probs.numel() / k;
  auto ds = paddle::empty(probs.shape(), probs.dtype(), probs.place());
  const float *pp = probs.data<float>(), *pd = dout.data<float>();
  const uint8_t* pk = mask.data<uint8_t>();
  float* pg = ds.data<float>();
  const float keep_scale = 1.f / (1.f - p);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *prow = pp + r * k, *drow = pd + r * k;
    const uint8_t* krow = pk + r * k;
    float* grow = pg + r * k;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < k; ++i) {
      grow[i] = krow[i] ? drow[i] * keep_scale : 0.f;  // gradient of the softmax output
      dot += grow[i] * prow[i];
    }
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) grow[i] = scale * prow[i] * (grow[i] - dot);
  }
  return {ds};
}

PD_BUILD_OP(ct_softmax_dropout)
    .Inputs({"S", "M"})
    .Outputs({"Out", "Probs", "Mask"})
    .Attrs({"scale: float", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(SoftmaxDropoutForward));

PD_BUILD_GRAD_OP(ct_softmax_dropout)
    .Inputs({"Probs", "Mask", paddle::Grad("Out")})
    .Outputs({paddle::Grad("S")})
    .Attrs({"scale: float", "p: float"})
    .SetKernelFn(PD_KERNEL(SoftmaxDropoutBackward));

// ---- [A, B, C, D] -> [A, C, B, D], contiguous: attention heads split off ([batch, seq, heads, size]
// -> [batch, heads, seq, size]) or merged back. Its own inverse, so also its gradient. ------------

std::vector<paddle::Tensor> Swap12(const paddle::Tensor& x) {
  check_float(x, "swap12 input");
  const auto shape = x.shape();
  PD_CHECK(shape.size() == 4, "swap12 takes a 4-D tensor");
  const int64_t a = shape[0], b = shape[1], c = shape[2], d = shape[3];
  auto out = paddle::empty({a, c, b, d}, x.dtype(), x.place());
  const float* px = x.data<float>();
  float* po = out.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < a; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      for (int64_t k = 0; k < b; ++k) {
        const float* src = px + ((i * b + k) * c + j) * d;
        float* dst = po + ((i * c + j) * b + k) * d;
#pragma omp simd
        for (int64_t e = 0; e < d; ++e) dst[e] = src[e];
      }
    }
  }
  return {out};
}

PD_BUILD_OP(ct_swap12).Inputs({"X"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(Swap12));

PD_BUILD_GRAD_OP(ct_swap12).Inputs({paddle::Grad("Out")}).Outputs({paddle::Grad("X")}).SetKernelFn(PD_KERNEL(Swap12));

// ---- channels-first [batch, channels, length] layers (SqueezeBERT) ------------------------------

// oneDNN's row-major GEMM from paddle's own libdnnl: its AVX-512 kernels run on any x86 CPU (the MKL
// that paddle ships falls back to AVX2 or SSE code on AMD: 2-4x slower per core on the Zen 5 host).
extern "C" int dnnl_sgemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

namespace {

// C (m x n, ldc) = op(A) op(B) + beta C, row-major; inside a parallel region oneDNN runs on the calling thread.
// True on failure: callers gather it over their parallel region and report it after (check_gemm), since an
// exception may not leave an OpenMP region.
bool gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  return dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc) != 0;
}

void check_gemm(bool failed, const char* what) { PD_CHECK(!failed, what, ": dnnl_sgemm failed"); }

// Out (m x n) = X op(W), X m x k, W k x n or, transposed, n x k (the products of ct_matmul and ct_batched_matmul).
// ldw: the row stride of W's storage where W is the top-left block of a wider matrix (0: W's own width).
bool product(bool transpose_w, int64_t m, int64_t k, int64_t n, const float* x, const float* w, float* out,
             int64_t ldw = 0) {
  return gemm(false, transpose_w, m, n, k, x, k, w, ldw ? ldw : transpose_w ? k : n, 0.f, out, n);
}

// The gradients of product(): Out = X W: dX = dOut W^T, dW = X^T dOut; Out = X W^T: dX = dOut W, dW = dOut^T X.
// dW is written in W's block only.
bool product_grads(bool transpose_w, int64_t m, int64_t k, int64_t n, const float* x, const float* w,
                   const float* dout, float* dx, float* dw, int64_t ldw = 0) {
  if (transpose_w) {
    const int64_t ld = ldw ? ldw : k;
    return gemm(false, false, m, k, n, dout, n, w, ld, 0.f, dx, k) || gemm(true, false, n, k, m, dout, n, x, k, 0.f, dw, ld);
  }
  const int64_t ld = ldw ? ldw : n;
  return gemm(false, true, m, k, n, dout, n, w, ld, 0.f, dx, k) || gemm(true, false, k, n, m, x, k, dout, n, 0.f, dw, ld);
}

struct ConvShape {
  int64_t batch, in, out, length, groups, in_g, out_g;
};

ConvShape conv_shape(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b, int64_t groups) {
  check_float(x, "pointwise_conv input");
  check_float(w, "pointwise_conv weight");
  check_float(b, "pointwise_conv bias");
  const auto xs = x.shape(), ws = w.shape();
  PD_CHECK(xs.size() == 3, "pointwise_conv input must be [batch, channels, length]");
  PD_CHECK(groups > 0 && xs[1] % groups == 0, "channels ", xs[1], " not divisible by groups ", groups);
  ConvShape s{xs[0], xs[1], ws[0], xs[2], groups, xs[1] / groups, ws[0] / groups};
  PD_CHECK(w.numel() == s.out * s.in_g && s.out % groups == 0, "pointwise_conv weight must be [out, in / groups(, 1)]");
  PD_CHECK(b.numel() == s.out, "pointwise_conv bias size != out channels");
  return s;
}

int64_t gcd(int64_t a, int64_t b) {  // std::gcd is C++17; paddle builds operators as C++14
  while (b != 0) a = std::exchange(b, a % b);
  return a;
}

// Each task's n rows (a GEMM's output rows, attention's queries) in blocks, so that the threads share the
// work evenly: where the tasks (groups x samples, samples x heads) are fewer than 4 per thread, each in
// threads / gcd(tasks, threads) blocks, which makes tasks x blocks a multiple of the threads. Otherwise, at
// batch 1, a one-group convolution would leave a core idle, and SqueezeBERT's per-group attention (3 heads
// on 2 threads) one core a third of the time. Block blk holds rows [first(blk), first(blk) + count(blk));
// count may be 0.
struct RowSplit {
  int64_t n, blocks, rows;
  RowSplit(int64_t tasks, int64_t n_rows) : n(n_rows) {
    const int64_t threads = omp_get_max_threads();
    blocks = tasks >= 4 * threads ? 1 : std::max<int64_t>(1, std::min(n, threads / gcd(tasks, threads)));
    rows = (n + blocks - 1) / blocks;
  }
  int64_t first(int64_t blk) const { return blk * rows; }
  int64_t count(int64_t blk) const { return std::max<int64_t>(0, std::min(rows, n - blk * rows)); }
};

// rows x length block of a grouped 1x1 convolution: out = w x + bias (w rows x in_g, x in_g x length, one bias per
// row), the bias written first and the GEMM added to it.
bool conv_block(const float* w, const float* bias, const float* x, int64_t rows, int64_t in_g, int64_t length,
                float* out) {
  for (int64_t c = 0; c < rows; ++c) {
    const float v = bias[c];
#pragma omp simd
    for (int64_t l = 0; l < length; ++l) out[c * length + l] = v;
  }
  return gemm(false, false, rows, length, in_g, w, in_g, x, length, 1.f, out, length);
}

// Y[b] = W X[b] + bias, per sample, group and row block (one GEMM each, spread over the threads); with
// ``gelu_out``, also gelu(Y) into it, each block by its GEMM's thread while the block is in its cache.
paddle::Tensor conv_forward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
                            const ConvShape& s, float* gelu_out = nullptr) {
  auto y = paddle::empty({s.batch, s.out, s.length}, x.dtype(), x.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pb = b.data<float>();
  float* py = y.data<float>();
  const RowSplit split(s.groups * s.batch, s.out_g);
  bool failed = false;
  // Group-major: a thread's consecutive GEMMs share their weight block, which stays in its cache.
#pragma omp parallel for collapse(3) schedule(static) reduction(|| : failed)
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t blk = 0; blk < split.blocks; ++blk) {
        const int64_t count = split.count(blk), c0 = g * s.out_g + split.first(blk);
        if (count == 0) continue;
        float* out = py + (n * s.out + c0) * s.length;
        failed = conv_block(pw + c0 * s.in_g, pb + c0, px + (n * s.in + g * s.in_g) * s.length, count, s.in_g,
                            s.length, out) || failed;
        if (gelu_out != nullptr) {
          float* act = gelu_out + (out - py);
#pragma omp simd
          for (int64_t i = 0; i < count * s.length; ++i) act[i] = gelu(out[i]);
        }
      }
    }
  }
  check_gemm(failed, "pointwise_conv forward");
  return y;
}

// dX = W^T dY per sample, group and row block; dW = sum over samples of dY X^T (threads split groups
// and row blocks, never a sum); dBias = dY summed over samples and positions.
std::vector<paddle::Tensor> conv_backward(const paddle::Tensor& x, const paddle::Tensor& w, const float* pd,
                                          const ConvShape& s) {
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), w.dtype(), w.place());
  auto db = paddle::empty({s.out}, w.dtype(), w.place());
  const float *px = x.data<float>(), *pw = w.data<float>();
  float *pdx = dx.data<float>(), *pdw = dw.data<float>(), *pdb = db.data<float>();
  const RowSplit x_split(s.batch * s.groups, s.in_g), w_split(s.groups, s.out_g);
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
#pragma omp for collapse(3) schedule(static) nowait
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t g = 0; g < s.groups; ++g) {
        for (int64_t blk = 0; blk < x_split.blocks; ++blk) {
          const int64_t first = x_split.first(blk), count = x_split.count(blk), c0 = g * s.in_g + first;
          if (count == 0) continue;
          failed = gemm(true, false, count, s.length, s.out_g, pw + g * s.out_g * s.in_g + first, s.in_g,
                        pd + (n * s.out + g * s.out_g) * s.length, s.length, 0.f,
                        pdx + (n * s.in + c0) * s.length, s.length) || failed;
        }
      }
    }
#pragma omp for collapse(2) schedule(static) nowait
    for (int64_t g = 0; g < s.groups; ++g) {
      for (int64_t blk = 0; blk < w_split.blocks; ++blk) {
        const int64_t count = w_split.count(blk), c0 = g * s.out_g + w_split.first(blk);
        if (count == 0) continue;
        for (int64_t n = 0; n < s.batch; ++n) {
          failed = gemm(false, true, count, s.in_g, s.length, pd + (n * s.out + c0) * s.length, s.length,
                        px + (n * s.in + g * s.in_g) * s.length, s.length, n ? 1.f : 0.f, pdw + c0 * s.in_g,
                        s.in_g) || failed;
        }
      }
    }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < s.out; ++c) {
      float sum = 0.f;
      for (int64_t n = 0; n < s.batch; ++n) {
        const float* row = pd + (n * s.out + c) * s.length;
#pragma omp simd reduction(+ : sum)
        for (int64_t l = 0; l < s.length; ++l) sum += row[l];
      }
      pdb[c] = sum;
    }
  }
  check_gemm(failed, "pointwise_conv backward");
  return {dx, dw, db};
}

}  // namespace

// ---- a Linear's product: Out = X W, X [..., in], W [in, out]; with ``transpose_w`` W [out, in] (a convolution's
// weight) and Out = X W^T. One oneDNN GEMM over all rows (its own threads). paddle's dygraph matmul is MKL's, which on
// AMD CPUs runs AVX2 code at best: half the rate of oneDNN's AVX-512 GEMM on a Zen 5 core.
// ``out`` > 0: only the first ``out`` outputs, and X [..., k] may use the first k inputs of W (an OFA super layer
// narrower than built): the product reads W's block in place, and W's gradient is zero outside it.

namespace {

struct MatmulSizes {
  int64_t m, k, n, ldw;  // rows, in, out, W's row stride where it is used as a block (else 0)
};

MatmulSizes matmul_sizes(const paddle::Tensor& x, const paddle::Tensor& w, bool transpose_w, int64_t out) {
  check_float(x, "matmul input");
  check_float(w, "matmul weight");
  const auto xs = x.shape(), ws = w.shape();
  const int64_t w_in = ws.size() == 2 ? ws[transpose_w ? 1 : 0] : 0, w_out = ws.size() == 2 ? ws[transpose_w ? 0 : 1] : 0;
  PD_CHECK(xs.size() >= 2 && ws.size() == 2 && (out > 0 ? xs.back() <= w_in && out <= w_out : xs.back() == w_in),
           "matmul: input [..., in] and weight ", transpose_w ? "[out, in]" : "[in, out]",
           out > 0 ? " (or wider)" : "", " needed, got input rank ", xs.size(), " and weight rank ", ws.size());
  const int64_t k = xs.back(), n = out > 0 ? out : w_out;
  const bool block = k < w_in || n < w_out;
  return {x.numel() / k, k, n, block ? ws[1] : 0};
}

std::vector<int64_t> matmul_shape(const paddle::Tensor& x, int64_t n) {
  std::vector<int64_t> out(x.shape());
  out.back() = n;
  return out;
}

}  // namespace

std::vector<paddle::Tensor> MatmulForward(const paddle::Tensor& x, const paddle::Tensor& w, bool transpose_w,
                                          int64_t out_features) {
  const auto [m, k, n, ldw] = matmul_sizes(x, w, transpose_w, out_features);
  auto out = paddle::empty(matmul_shape(x, n), x.dtype(), x.place());
  check_gemm(product(transpose_w, m, k, n, x.data<float>(), w.data<float>(), out.data<float>(), ldw),
             "matmul forward");
  return {out};
}

std::vector<paddle::Tensor> MatmulBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                           const paddle::Tensor& dout, bool transpose_w, int64_t out_features) {
  check_float(dout, "matmul gradient");
  const auto [m, k, n, ldw] = matmul_sizes(x, w, transpose_w, out_features);
  PD_CHECK(dout.shape() == matmul_shape(x, n), "matmul gradient: wrong shape");
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), w.dtype(), w.place());
  float* pdw = dw.data<float>();
  if (ldw) {  // the GEMM writes the block; zeros elsewhere
    const int64_t size = w.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < size; ++i) pdw[i] = 0.f;
  }
  check_gemm(product_grads(transpose_w, m, k, n, x.data<float>(), w.data<float>(), dout.data<float>(),
                           dx.data<float>(), pdw, ldw),
             "matmul backward");
  return {dx, dw};
}

PD_BUILD_OP(ct_matmul)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"transpose_w: bool", "out_features: int64_t"})
    .SetKernelFn(PD_KERNEL(MatmulForward));

PD_BUILD_GRAD_OP(ct_matmul)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"transpose_w: bool", "out_features: int64_t"})
    .SetKernelFn(PD_KERNEL(MatmulBackward));

// ---- Linears in evaluation: Out = X W + B, W [in, out], as the bias rows, then one oneDNN GEMM added to them (its own
// threads): one operator where dygraph evaluation made a product and a bias add, each call about 11 us of fixed
// cost on the Zen 5 host (15-19 on Zen 4); no gradient. ct_linear: one Linear; ct_qkv_linears: attention's query,
// key and value Linears of one input.

namespace {

paddle::Tensor linear_eval(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b, const char* what) {
  const auto [m, k, n, ldw] = matmul_sizes(x, w, false, 0);
  check_float(b, what);
  PD_CHECK(b.numel() == n, what, ": bias size ", b.numel(), " != the weight's ", n, " outputs");
  auto out = paddle::empty(matmul_shape(x, n), x.dtype(), x.place());
  const float* pb = b.data<float>();
  float* po = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < m; ++r) std::copy(pb, pb + n, po + r * n);
  check_gemm(gemm(false, false, m, n, k, x.data<float>(), k, w.data<float>(), n, 1.f, po, n), what);
  return out;
}

}  // namespace

std::vector<paddle::Tensor> LinearForward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b) {
  return {linear_eval(x, w, b, "linear")};
}

PD_BUILD_OP(ct_linear).Inputs({"X", "W", "B"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(LinearForward));

std::vector<paddle::Tensor> QkvLinearsForward(const paddle::Tensor& x, const paddle::Tensor& wq, const paddle::Tensor& bq,
                                              const paddle::Tensor& wk, const paddle::Tensor& bk,
                                              const paddle::Tensor& wv, const paddle::Tensor& bv) {
  return {linear_eval(x, wq, bq, "qkv_linears"), linear_eval(x, wk, bk, "qkv_linears"),
          linear_eval(x, wv, bv, "qkv_linears")};
}

PD_BUILD_OP(ct_qkv_linears)
    .Inputs({"X", "Wq", "Bq", "Wk", "Bk", "Wv", "Bv"})
    .Outputs({"Q", "K", "V"})
    .SetKernelFn(PD_KERNEL(QkvLinearsForward));

// ---- a grouped Linear's product (ConvBERT's grouped FFN): X [..., groups * in], W [groups, in, out],
// Out[..., g * out + j] = sum_i X[..., g * in + i] W[g, i, j]. One oneDNN GEMM per group on X's and Out's column
// blocks in place (their row strides), where paddle reshaped, transposed and copied around a batched matmul.

namespace {

struct GroupedSizes {
  int64_t m, groups, k, n;  // rows, groups, in and out per group
};

GroupedSizes grouped_sizes(const paddle::Tensor& x, const paddle::Tensor& w) {
  check_float(x, "grouped_matmul input");
  check_float(w, "grouped_matmul weight");
  const auto xs = x.shape(), ws = w.shape();
  PD_CHECK(xs.size() >= 2 && ws.size() == 3 && xs.back() == ws[0] * ws[1],
           "grouped_matmul: input [..., groups * in] and weight [groups, in, out] needed");
  return {x.numel() / xs.back(), ws[0], ws[1], ws[2]};
}

}  // namespace

std::vector<paddle::Tensor> GroupedMatmulForward(const paddle::Tensor& x, const paddle::Tensor& w) {
  const auto [m, groups, k, n] = grouped_sizes(x, w);
  auto out = paddle::empty(matmul_shape(x, groups * n), x.dtype(), x.place());
  const float *px = x.data<float>(), *pw = w.data<float>();
  float* po = out.data<float>();
  bool failed = false;
  for (int64_t g = 0; g < groups; ++g) {
    failed = gemm(false, false, m, n, k, px + g * k, groups * k, pw + g * k * n, n, 0.f, po + g * n, groups * n)
             || failed;
  }
  check_gemm(failed, "grouped_matmul forward");
  return {out};
}

// dX (group g's columns) = dOut_g W_g^T, dW_g = X_g^T dOut_g.
std::vector<paddle::Tensor> GroupedMatmulBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                  const paddle::Tensor& dout) {
  check_float(dout, "grouped_matmul gradient");
  const auto [m, groups, k, n] = grouped_sizes(x, w);
  PD_CHECK(dout.shape() == matmul_shape(x, groups * n), "grouped_matmul gradient: wrong shape");
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), w.dtype(), w.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pd = dout.data<float>();
  float *pdx = dx.data<float>(), *pdw = dw.data<float>();
  bool failed = false;
  for (int64_t g = 0; g < groups; ++g) {
    failed = gemm(false, true, m, k, n, pd + g * n, groups * n, pw + g * k * n, n, 0.f, pdx + g * k, groups * k)
             || gemm(true, false, k, n, m, px + g * k, groups * k, pd + g * n, groups * n, 0.f, pdw + g * k * n, n)
             || failed;
  }
  check_gemm(failed, "grouped_matmul backward");
  return {dx, dw};
}

PD_BUILD_OP(ct_grouped_matmul).Inputs({"X", "W"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(GroupedMatmulForward));

PD_BUILD_GRAD_OP(ct_grouped_matmul)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .SetKernelFn(PD_KERNEL(GroupedMatmulBackward));

// ---- attention's products, batched: Out[b] = X[b] op(Y[b]), X [..., m, k], Y [..., k, n] or, transposed,
// [..., n, k]; one oneDNN GEMM per matrix on one thread each (paddle's batched matmul is MKL's, see above).

namespace {

struct BatchShape {
  int64_t count, m, k, n;
};

BatchShape batch_shape(const paddle::Tensor& x, const paddle::Tensor& y, bool transpose_y) {
  check_float(x, "batched_matmul input X");
  check_float(y, "batched_matmul input Y");
  const auto xs = x.shape(), ys = y.shape();
  const size_t r = xs.size();
  PD_CHECK(r >= 3 && ys.size() == r && std::equal(xs.begin(), xs.end() - 2, ys.begin()),
           "batched_matmul: X and Y need the same leading dimensions and rank >= 3");
  const int64_t k = xs[r - 1], n = transpose_y ? ys[r - 2] : ys[r - 1];
  PD_CHECK((transpose_y ? ys[r - 1] : ys[r - 2]) == k, "batched_matmul: X's columns != Y's ",
           transpose_y ? "columns" : "rows");
  return {x.numel() / (xs[r - 2] * k), xs[r - 2], k, n};
}

}  // namespace

std::vector<paddle::Tensor> BatchedMatmulForward(const paddle::Tensor& x, const paddle::Tensor& y, bool transpose_y) {
  const BatchShape s = batch_shape(x, y, transpose_y);
  std::vector<int64_t> shape(x.shape());
  shape.back() = s.n;
  auto out = paddle::empty(shape, x.dtype(), x.place());
  const float *px = x.data<float>(), *py = y.data<float>();
  float* po = out.data<float>();
  bool failed = false;
#pragma omp parallel for schedule(static) reduction(|| : failed)
  for (int64_t b = 0; b < s.count; ++b) {
    failed = product(transpose_y, s.m, s.k, s.n, px + b * s.m * s.k, py + b * s.k * s.n, po + b * s.m * s.n) || failed;
  }
  check_gemm(failed, "batched_matmul forward");
  return {out};
}

std::vector<paddle::Tensor> BatchedMatmulBackward(const paddle::Tensor& x, const paddle::Tensor& y,
                                                  const paddle::Tensor& dout, bool transpose_y) {
  check_float(dout, "batched_matmul gradient");
  const BatchShape s = batch_shape(x, y, transpose_y);
  PD_CHECK(dout.numel() == s.count * s.m * s.n, "batched_matmul gradient: wrong size");
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dy = paddle::empty(y.shape(), y.dtype(), y.place());
  const float *px = x.data<float>(), *py = y.data<float>(), *pd = dout.data<float>();
  float *pdx = dx.data<float>(), *pdy = dy.data<float>();
  bool failed = false;
#pragma omp parallel for schedule(static) reduction(|| : failed)
  for (int64_t b = 0; b < s.count; ++b) {
    failed = product_grads(transpose_y, s.m, s.k, s.n, px + b * s.m * s.k, py + b * s.k * s.n, pd + b * s.m * s.n,
                           pdx + b * s.m * s.k, pdy + b * s.k * s.n) || failed;
  }
  check_gemm(failed, "batched_matmul backward");
  return {dx, dy};
}

PD_BUILD_OP(ct_batched_matmul)
    .Inputs({"X", "Y"})
    .Outputs({"Out"})
    .Attrs({"transpose_y: bool"})
    .SetKernelFn(PD_KERNEL(BatchedMatmulForward));

PD_BUILD_GRAD_OP(ct_batched_matmul)
    .Inputs({"X", "Y", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Y")})
    .Attrs({"transpose_y: bool"})
    .SetKernelFn(PD_KERNEL(BatchedMatmulBackward));

// ---- grouped 1x1 convolution: Out[b] = W X[b] + Bias, X [batch, in, length], W [out, in / groups(, 1)]

std::vector<paddle::Tensor> PointwiseConvForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                 const paddle::Tensor& b, int64_t groups) {
  return {conv_forward(x, w, b, conv_shape(x, w, b, groups))};
}

std::vector<paddle::Tensor> PointwiseConvBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                  const paddle::Tensor& b, const paddle::Tensor& dout,
                                                  int64_t groups) {
  check_float(dout, "pointwise_conv gradient");
  return conv_backward(x, w, dout.data<float>(), conv_shape(x, w, b, groups));
}

PD_BUILD_OP(ct_pointwise_conv)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t"})
    .SetKernelFn(PD_KERNEL(PointwiseConvForward));

PD_BUILD_GRAD_OP(ct_pointwise_conv)
    .Inputs({"X", "W", "B", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs({"groups: int64_t"})
    .SetKernelFn(PD_KERNEL(PointwiseConvBackward));

// ---- the same followed by exact GELU: Out = gelu(Pre), Pre = W X + Bias (kept for the gradient) --

std::vector<paddle::Tensor> PointwiseConvGeluForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                     const paddle::Tensor& b, int64_t groups) {
  const auto s = conv_shape(x, w, b, groups);
  auto out = paddle::empty({s.batch, s.out, s.length}, x.dtype(), x.place());
  auto pre = conv_forward(x, w, b, s, out.data<float>());
  return {out, pre};
}

std::vector<paddle::Tensor> PointwiseConvGeluBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                      const paddle::Tensor& b, const paddle::Tensor& pre,
                                                      const paddle::Tensor& dout, int64_t groups) {
  check_float(dout, "pointwise_conv_gelu gradient");
  auto dpre = paddle::empty(pre.shape(), pre.dtype(), pre.place());
  const float *pp = pre.data<float>(), *pd = dout.data<float>();
  float* pg = dpre.data<float>();
  const int64_t n = pre.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) pg[i] = pd[i] * gelu_grad(pp[i]);
  return conv_backward(x, w, pg, conv_shape(x, w, b, groups));
}

PD_BUILD_OP(ct_pointwise_conv_gelu)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out", "Pre"})
    .Attrs({"groups: int64_t"})
    .SetKernelFn(PD_KERNEL(PointwiseConvGeluForward));

PD_BUILD_GRAD_OP(ct_pointwise_conv_gelu)
    .Inputs({"X", "W", "B", "Pre", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs({"groups: int64_t"})
    .SetKernelFn(PD_KERNEL(PointwiseConvGeluBackward));

// ---- grouped linear layers, token-major (SqueezeBERT's exports for this repo's fp32 predictor) ------------------
// Out[..., out] = X[..., in] W_g + B per group g of the channels, W [groups, in / groups, out / groups] (the
// convolution's weight by group, transposed: the export computes it, paddle.inference folds it into a parameter;
// oneDNN's sgemm ran X W^T about 10 % slower than X W on one Zen 5 core); the threads share (group, row block)
// tasks (RowSplit), each task's GEMMs on one thread (no synchronisation inside a GEMM, where oneDNN's fc splits
// each small GEMM over the threads).

namespace {

struct LinearShape {
  int64_t rows, in, out, groups, in_g, out_g;
  int64_t ldw;  // the row stride of each group's weight block: out_g, or more where its rows end in padding
};

// The sizes of a grouped linear layer's X, W and B (shapes checked; callers check the types). ``padded``: W
// [groups, in / groups, ldw] may hold padding after each row's out / groups values, the bias's size giving out (the
// fused operators' weights in common/inference.py's fp32 predictor, see padded_width there).
LinearShape linear_shape(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b, int64_t groups,
                         const char* what, bool padded = false) {
  const int64_t in = last_dim(x);
  const auto ws = w.shape();
  PD_CHECK(groups > 0 && in % groups == 0, what, ": channels ", in, " not divisible by groups ", groups);
  PD_CHECK(ws.size() == 3 && ws[0] == groups && ws[1] == in / groups, what, ": weight must be [groups, in / groups, ",
           "out / groups] = [", groups, ", ", in / groups, ", out / groups]");
  if (!padded) {
    const int64_t out = groups * ws[2];
    PD_CHECK(b.numel() == out, what, ": bias size != out channels ", out);
    return {x.numel() / in, in, out, groups, in / groups, ws[2], ws[2]};
  }
  const int64_t out = b.numel();
  PD_CHECK(out % groups == 0 && out / groups <= ws[2], what, ": bias size ", out, " is not groups x at most ", ws[2],
           " (the weight's rows)");
  return {x.numel() / in, in, out, groups, in / groups, out / groups, ws[2]};
}

// The row stride of 2-D weight ``which`` [rows, stored] whose rows hold ``width`` values, padding after them allowed.
int64_t padded_stride(const paddle::Tensor& w, int64_t rows, int64_t width, const char* what, const char* which) {
  const auto ws = w.shape();
  PD_CHECK(ws.size() == 2 && ws[0] == rows && ws[1] >= width, what, ": ", which, " must be [", rows, ", ", width,
           " or more], its bias [", width, "]");
  return ws[1];
}

// Rows [0, count) of Y (ldy): the first n values of each plus bias.
void add_bias_rows(float* y, int64_t ldy, const float* bias, int64_t count, int64_t n) {
  for (int64_t r = 0; r < count; ++r) {
    float* row = y + r * ldy;
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) row[c] += bias[c];
  }
}

// Rows [0, count) of one group: Y (ldy) = X (ldx) W + bias, W [in_g, out_g]. True on failure.
bool linear_rows(const float* x, int64_t ldx, const float* w, const float* bias, int64_t count, int64_t in_g,
                 int64_t out_g, float* y, int64_t ldy) {
  const bool failed = gemm(false, false, count, out_g, in_g, x, ldx, w, out_g, 0.f, y, ldy);
  add_bias_rows(y, ldy, bias, count, out_g);
  return failed;
}

// Rows per GEMM call within a task: its output block stays in the core's cache for the bias.
constexpr int64_t kLinearRows = 256;

// f(g, first, count, scratch) for every group g and every block of up to kLinearRows rows [first, first + count),
// the threads sharing the (group, row block) tasks of RowSplit; scratch: the thread's kLinearRows x scratch_cols
// floats. True where any call of f returned true (a failed GEMM).
template <class F>
bool linear_blocks(const LinearShape& s, int64_t scratch_cols, F&& f) {
  const RowSplit split(s.groups, s.rows);
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    Scratch<float> scratch(std::min(split.rows, kLinearRows) * scratch_cols);
#pragma omp for collapse(2) schedule(static)
    for (int64_t g = 0; g < s.groups; ++g) {
      for (int64_t blk = 0; blk < split.blocks; ++blk) {
        const int64_t end = split.first(blk) + split.count(blk);
        for (int64_t first = split.first(blk); first < end; first += kLinearRows) {
          failed = f(g, first, std::min(kLinearRows, end - first), scratch.data()) || failed;
        }
      }
    }
  }
  return failed;
}

std::vector<int64_t> with_last(std::vector<int64_t> shape, int64_t last) {
  shape.back() = last;
  return shape;
}

}  // namespace

std::vector<paddle::Tensor> GroupedLinearForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                 const paddle::Tensor& b, int64_t groups) {
  check_float(x, "grouped_linear input");
  check_float(w, "grouped_linear weight");
  check_float(b, "grouped_linear bias");
  const LinearShape s = linear_shape(x, w, b, groups, "grouped_linear");
  auto y = paddle::empty(with_last(x.shape(), s.out), x.dtype(), x.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pb = b.data<float>();
  float* py = y.data<float>();
  const bool failed = linear_blocks(s, 0, [&](int64_t g, int64_t first, int64_t count, float*) {
    return linear_rows(px + first * s.in + g * s.in_g, s.in, pw + g * s.out_g * s.in_g, pb + g * s.out_g, count, s.in_g,
                       s.out_g, py + first * s.out + g * s.out_g, s.out);
  });
  check_gemm(failed, "grouped_linear");
  return {y};
}

std::vector<std::vector<int64_t>> GroupedLinearShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                     const std::vector<int64_t>&) {
  return {with_last(x, w[0] * w[2])};
}

std::vector<paddle::DataType> FirstOfThreeDtype(const paddle::DataType& first, const paddle::DataType&,
                                               const paddle::DataType&) {
  return {first};
}

PD_BUILD_OP(ct_grouped_linear)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t"})
    .SetKernelFn(PD_KERNEL(GroupedLinearForward))
    .SetInferShapeFn(PD_INFER_SHAPE(GroupedLinearShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfThreeDtype));

// ---- grouped linear layers with the residual add and layer norm, token-major (SqueezeBERT's exports for this
// repo's fp32 predictor): Out = LayerNorm(Linear(X) + R) (ct_grouped_linear_add_norm: the post-attention layer)
// and Out = LayerNorm(Linear2(GELU(Linear1(X))) + X) (ct_grouped_ffn_add_norm: the feed-forward block, both
// linears with the same groups), over the last dimension. Each task is a block of rows: every group's GEMMs on
// one thread (the feed-forward's inner activations in the thread's scratch), then the bias, residual and norm
// while the block is in the core's cache; one operator where the export had a split, an fc per group, a concat,
// an add and a layer norm.

namespace {

// Rows per task of the fused layers at most; fewer where that leaves a thread without a task. SqueezeBERT's export
// at batch 16 on Zen 5, by hand: 256 rows fp32 259-264 / bf16 159-166 ms, 64 rows 264-266 / 170-173, 32 rows 269 / 186.
constexpr int64_t kNormRows = 256;
// With one group (BERT's layers, common/inference.py's fuse_blocks) each GEMM call packs the layer's whole weight:
// larger blocks share that. BERT-base's fp32 predictor at batch 16 / 32 on Zen 5 against paddle's fcs, paired: 256
// rows 0.99x / 0.98x their speed, 1024 rows 1.00x / 0.99x.
constexpr int64_t kOneGroupRows = 1024;

struct RowBlocks {
  int64_t rows, size, count;
  explicit RowBlocks(int64_t n_rows, int64_t most = kNormRows) : rows(n_rows) {
    const int64_t threads = omp_get_max_threads();
    size = std::max<int64_t>(1, std::min(most, (rows + threads - 1) / threads));
    count = (rows + size - 1) / size;
  }
  int64_t first(int64_t blk) const { return blk * size; }
  int64_t length(int64_t blk) const { return std::min(size, rows - blk * size); }
};

// Rows [0, count) of y (width n, in place): y = LayerNorm(y + bias + r) (r: row stride n).
void bias_add_norm_rows(float* y, const float* bias, const float* r, const float* gamma, const float* beta,
                        float epsilon, int64_t count, int64_t n) {
  for (int64_t row = 0; row < count; ++row) {
    float* v = y + row * n;
    const float* rr = r + row * n;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) {
      v[i] += bias[i] + rr[i];
      sum += v[i];
    }
    const float mean = sum / n;
    float squares = 0.f;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < n; ++i) squares += (v[i] - mean) * (v[i] - mean);
    const float rstd = 1.f / std::sqrt(squares / n + epsilon);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) v[i] = (v[i] - mean) * rstd * gamma[i] + beta[i];
  }
}

// Rows [0, count) of y (width n, in place): y = (y + bias + r) * g + c (r: row stride n), MobileBERT's residual add
// and NoNorm after a linear layer.
void bias_add_scale_shift_rows(float* y, const float* bias, const float* r, const float* g, const float* c,
                               int64_t count, int64_t n) {
  for (int64_t row = 0; row < count; ++row) {
    float* v = y + row * n;
    const float* rr = r + row * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) v[i] = (v[i] + bias[i] + rr[i]) * g[i] + c[i];
  }
}

void check_norm_params(const paddle::Tensor& gamma, const paddle::Tensor& beta, int64_t n, const char* what) {
  check_float(gamma, what);
  check_float(beta, what);
  PD_CHECK(gamma.numel() == n && beta.numel() == n, what, ": norm weight/bias size != ", n, " channels");
}

// f(first, count, scratch) for every row block, the threads sharing them; scratch: the thread's
// RowBlocks.size x scratch_cols floats. True where any call returned true (a failed GEMM).
template <class F>
bool row_blocks(const RowBlocks& blocks, int64_t scratch_cols, F&& f) {
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    Scratch<float> scratch(blocks.size * scratch_cols);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks.count; ++blk) {
      failed = f(blocks.first(blk), blocks.length(blk), scratch.data()) || failed;
    }
  }
  return failed;
}

// Y = Linear2(act(Linear1(X))) without the outer bias for ``count`` rows of X and Y (row stride groups x in_g), per
// group: X's column block times W1 [groups, in_g, ld1 >= mid_g] into h (count x mid_g, the thread's scratch),
// ``act(row, g)`` on each of its rows (the inner bias and activation, in place), h times W2 [groups, mid_g, ld2 >=
// in_g] into Y's block (ld1, ld2: the weights' row strides, padding after the values). True on a failed GEMM.
template <class Act>
bool ffn_rows(const float* x, const float* w1, int64_t ld1, const float* w2, int64_t ld2, int64_t count,
              int64_t groups, int64_t in_g, int64_t mid_g, float* h, float* y, Act&& act) {
  const int64_t in = groups * in_g;
  bool bad = false;
  for (int64_t g = 0; g < groups; ++g) {
    bad = gemm(false, false, count, mid_g, in_g, x + g * in_g, in, w1 + g * in_g * ld1, ld1, 0.f, h, mid_g) || bad;
    for (int64_t r = 0; r < count; ++r) act(h + r * mid_g, g);
    bad = gemm(false, false, count, in_g, mid_g, h, mid_g, w2 + g * mid_g * ld2, ld2, 0.f, y + g * in_g, in) || bad;
  }
  return bad;
}

}  // namespace

std::vector<paddle::Tensor> GroupedLinearAddNormForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                        const paddle::Tensor& b, const paddle::Tensor& r,
                                                        const paddle::Tensor& gamma, const paddle::Tensor& beta,
                                                        int64_t groups, float epsilon) {
  check_float(x, "grouped_linear_add_norm input");
  check_float(w, "grouped_linear_add_norm weight");
  check_float(b, "grouped_linear_add_norm bias");
  check_float(r, "grouped_linear_add_norm residual");
  const LinearShape s = linear_shape(x, w, b, groups, "grouped_linear_add_norm", true);
  const auto shape = with_last(x.shape(), s.out);
  PD_CHECK(r.shape() == shape, "grouped_linear_add_norm: residual shape != the linear layer's output shape");
  check_norm_params(gamma, beta, s.out, "grouped_linear_add_norm");
  auto y = paddle::empty(shape, x.dtype(), x.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pr = r.data<float>();
  float* py = y.data<float>();
  const bool failed = row_blocks(RowBlocks(s.rows, groups == 1 ? kOneGroupRows : kNormRows), 0,
                                 [&](int64_t first, int64_t count, float*) {
    bool bad = false;
    for (int64_t g = 0; g < s.groups; ++g) {
      bad = gemm(false, false, count, s.out_g, s.in_g, px + first * s.in + g * s.in_g, s.in, pw + g * s.in_g * s.ldw,
                 s.ldw, 0.f, py + first * s.out + g * s.out_g, s.out) || bad;
    }
    bias_add_norm_rows(py + first * s.out, b.data<float>(), pr + first * s.out, gamma.data<float>(),
                       beta.data<float>(), epsilon, count, s.out);
    return bad;
  });
  check_gemm(failed, "grouped_linear_add_norm");
  return {y};
}

std::vector<std::vector<int64_t>> GroupedLinearAddNormShape(const std::vector<int64_t>& x,
                                                            const std::vector<int64_t>&,
                                                            const std::vector<int64_t>& b,
                                                            const std::vector<int64_t>&,
                                                            const std::vector<int64_t>&,
                                                            const std::vector<int64_t>&) {
  return {with_last(x, b.back())};
}

std::vector<paddle::DataType> FirstOfSixDtype(const paddle::DataType& first, const paddle::DataType&,
                                              const paddle::DataType&, const paddle::DataType&,
                                              const paddle::DataType&, const paddle::DataType&) {
  return {first};
}

PD_BUILD_OP(ct_grouped_linear_add_norm)
    .Inputs({"X", "W", "B", "R", "Gamma", "Beta"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(GroupedLinearAddNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(GroupedLinearAddNormShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfSixDtype));

std::vector<paddle::Tensor> GroupedFfnAddNormForward(const paddle::Tensor& x, const paddle::Tensor& w1,
                                                     const paddle::Tensor& b1, const paddle::Tensor& w2,
                                                     const paddle::Tensor& b2, const paddle::Tensor& gamma,
                                                     const paddle::Tensor& beta, int64_t groups, float epsilon) {
  check_float(x, "grouped_ffn_add_norm input");
  for (const auto* t : {&w1, &b1, &w2, &b2}) check_float(*t, "grouped_ffn_add_norm weight or bias");
  const LinearShape inner = linear_shape(x, w1, b1, groups, "grouped_ffn_add_norm inner linear", true);
  const int64_t in = inner.in, in_g = inner.in_g, mid_g = inner.out_g, rows = inner.rows;
  const auto ws = w2.shape();
  PD_CHECK(ws.size() == 3 && ws[0] == groups && ws[1] == mid_g && ws[2] >= in_g && b2.numel() == in,
           "grouped_ffn_add_norm: outer weight must be [", groups, ", ", mid_g, ", ", in_g, " or more], its bias [",
           in, "]");
  check_norm_params(gamma, beta, in, "grouped_ffn_add_norm");
  auto y = paddle::empty(x.shape(), x.dtype(), x.place());
  const float *px = x.data<float>(), *pw1 = w1.data<float>(), *pb1 = b1.data<float>(), *pw2 = w2.data<float>();
  float* py = y.data<float>();
  const bool failed = row_blocks(RowBlocks(rows, groups == 1 ? kOneGroupRows : kNormRows), mid_g,
                                 [&](int64_t first, int64_t count, float* h) {
    const bool bad = ffn_rows(px + first * in, pw1, inner.ldw, pw2, ws[2], count, groups, in_g, mid_g, h,
                              py + first * in,
                              [&](float* row, int64_t g) { bias_gelu_row(row, pb1 + g * mid_g, mid_g); });
    bias_add_norm_rows(py + first * in, b2.data<float>(), px + first * in, gamma.data<float>(), beta.data<float>(),
                       epsilon, count, in);
    return bad;
  });
  check_gemm(failed, "grouped_ffn_add_norm");
  return {y};
}

std::vector<std::vector<int64_t>> FirstOfSevenShape(const std::vector<int64_t>& x, const std::vector<int64_t>&,
                                                    const std::vector<int64_t>&, const std::vector<int64_t>&,
                                                    const std::vector<int64_t>&, const std::vector<int64_t>&,
                                                    const std::vector<int64_t>&) {
  return {x};
}

std::vector<paddle::DataType> FirstOfSevenDtype(const paddle::DataType& first, const paddle::DataType&,
                                                const paddle::DataType&, const paddle::DataType&,
                                                const paddle::DataType&, const paddle::DataType&,
                                                const paddle::DataType&) {
  return {first};
}

PD_BUILD_OP(ct_grouped_ffn_add_norm)
    .Inputs({"X", "W1", "B1", "W2", "B2", "Gamma", "Beta"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(GroupedFfnAddNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfSevenShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfSevenDtype));

// ---- MobileBERT's feed-forward network in evaluation: Out = (Linear2(ReLU(Linear1(X))) + X) * G + C (the residual
// add and NoNorm), W1 [in, mid] and W2 [mid, in] (nn.Linear's layout; padding after each row's values allowed,
// padded_stride), per block of up to kNormRows rows as ct_grouped_ffn_add_norm (a block's 512-wide activations, 512
// KiB, stay in a Zen 4 core's L2; MobileBERT's fp32 predictor against paddle's fcs at batch 16 / 32: 256 rows
// 1.01-1.02 / 1.01-1.03x, 1024 rows 0.99 / 1.01x, 128 rows 0.99 / 1.03x). One operator where dygraph ran two
// products, bias + ReLU, a bias add and the add + NoNorm, each over the whole batch, and an fp32 predictor fc with
// ReLU, fc and ct_add_scale_shift_ (common/inference.py's fuse_blocks).

std::vector<paddle::Tensor> FfnReluAddScaleShiftForward(const paddle::Tensor& x, const paddle::Tensor& w1,
                                                        const paddle::Tensor& b1, const paddle::Tensor& w2,
                                                        const paddle::Tensor& b2, const paddle::Tensor& g,
                                                        const paddle::Tensor& c) {
  const char* what = "ffn_relu_add_scale_shift";
  check_float(x, what);
  for (const auto* t : {&w1, &b1, &w2, &b2, &g, &c}) check_float(*t, "ffn_relu_add_scale_shift weight or bias");
  const int64_t in = last_dim(x), rows = x.numel() / in;
  const int64_t mid = b1.numel(), ld1 = padded_stride(w1, in, mid, what, "inner weight"),
                ld2 = padded_stride(w2, mid, in, what, "outer weight");
  PD_CHECK(b2.numel() == in, what, ": outer bias size != ", in, " channels");
  PD_CHECK(g.numel() == in && c.numel() == in, what, ": NoNorm weight/bias size != ", in, " channels");
  auto y = paddle::empty(x.shape(), x.dtype(), x.place());
  const float *px = x.data<float>(), *pb1 = b1.data<float>(), *pb2 = b2.data<float>(), *pg = g.data<float>(),
              *pc = c.data<float>();
  float* py = y.data<float>();
  const bool failed = row_blocks(RowBlocks(rows), mid, [&](int64_t first, int64_t count, float* h) {
    const bool bad = ffn_rows(px + first * in, w1.data<float>(), ld1, w2.data<float>(), ld2, count, 1, in, mid, h,
                              py + first * in, [&](float* row, int64_t) {
#pragma omp simd
      for (int64_t i = 0; i < mid; ++i) row[i] = std::max(row[i] + pb1[i], 0.f);
    });
    bias_add_scale_shift_rows(py + first * in, pb2, px + first * in, pg, pc, count, in);
    return bad;
  });
  check_gemm(failed, what);
  return {y};
}

PD_BUILD_OP(ct_ffn_relu_add_scale_shift)
    .Inputs({"X", "W1", "B1", "W2", "B2", "G", "C"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(FfnReluAddScaleShiftForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfSevenShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfSevenDtype));

// ---- MobileBERT's other residual adds with NoNorm in evaluation (the attention output and the output bottleneck):
// Out = (X W + B + R) * G + C, W [in, out] (nn.Linear's layout, rows may end in padding), per block of up to
// kNormRows rows, the block's output in the core's cache for the epilogue. One operator where dygraph ran the linear
// layer and the add + NoNorm and an fp32 predictor an fc and ct_add_scale_shift_ (common/inference.py's
// fuse_blocks).

std::vector<paddle::Tensor> LinearAddScaleShiftForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                       const paddle::Tensor& b, const paddle::Tensor& r,
                                                       const paddle::Tensor& g, const paddle::Tensor& c) {
  const char* what = "linear_add_scale_shift";
  check_float(x, what);
  for (const auto* t : {&w, &b, &r, &g, &c}) check_float(*t, "linear_add_scale_shift weight, bias or residual");
  const int64_t in = last_dim(x), rows = x.numel() / in;
  const int64_t out = b.numel(), ldw = padded_stride(w, in, out, what, "weight");
  const auto shape = with_last(x.shape(), out);
  PD_CHECK(r.shape() == shape, what, ": residual shape != the linear layer's output shape");
  PD_CHECK(g.numel() == out && c.numel() == out, what, ": NoNorm weight/bias size != ", out, " channels");
  auto y = paddle::empty(shape, x.dtype(), x.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pb = b.data<float>(), *pr = r.data<float>(),
              *pg = g.data<float>(), *pc = c.data<float>();
  float* py = y.data<float>();
  const bool failed = row_blocks(RowBlocks(rows), 0, [&](int64_t first, int64_t count, float*) {
    const bool bad = gemm(false, false, count, out, in, px + first * in, in, pw, ldw, 0.f, py + first * out, out);
    bias_add_scale_shift_rows(py + first * out, pb, pr + first * out, pg, pc, count, out);
    return bad;
  });
  check_gemm(failed, what);
  return {y};
}

std::vector<std::vector<int64_t>> LinearAddScaleShiftShape(const std::vector<int64_t>& x, const std::vector<int64_t>&,
                                                           const std::vector<int64_t>& b, const std::vector<int64_t>&,
                                                           const std::vector<int64_t>&, const std::vector<int64_t>&) {
  return {with_last(x, b.back())};
}

PD_BUILD_OP(ct_linear_add_scale_shift)
    .Inputs({"X", "W", "B", "R", "G", "C"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(LinearAddScaleShiftForward))
    .SetInferShapeFn(PD_INFER_SHAPE(LinearAddScaleShiftShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfSixDtype));

// ---- layer norm over the channels of [batch, channels, length]: per (sample, position) -----------

namespace {

// Out = layer norm over the channels of X (+ R where given) at positions [l0, l0 + count) of one sample, whose
// [channels, length] planes start at x, r and out; mean and rstd of those positions into mu, rs.
void channel_norm(const float* x, const float* r, const float* gamma, const float* beta, float epsilon, int64_t c,
                  int64_t len, int64_t l0, int64_t count, float* out, float* mu, float* rs) {
  for (int64_t l = 0; l < count; ++l) mu[l] = rs[l] = 0.f;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* xs = x + ch * len + l0;
    float* o = out + ch * len + l0;
    if (r != nullptr) {  // the sum, written to out and read back from there
      const float* rr = r + ch * len + l0;
#pragma omp simd
      for (int64_t l = 0; l < count; ++l) o[l] = xs[l] + rr[l];
      xs = o;
    }
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) mu[l] += xs[l];
  }
  for (int64_t l = 0; l < count; ++l) mu[l] /= c;
  const float* src = r != nullptr ? out : x;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* xs = src + ch * len + l0;
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) rs[l] += (xs[l] - mu[l]) * (xs[l] - mu[l]);
  }
  for (int64_t l = 0; l < count; ++l) rs[l] = 1.f / std::sqrt(rs[l] / c + epsilon);
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* xs = src + ch * len + l0;
    float* o = out + ch * len + l0;
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) o[l] = (xs[l] - mu[l]) * rs[l] * gamma[ch] + beta[ch];
  }
}

// The checked [batch, channels, length] shape of the channel layer norms' input.
std::vector<int64_t> channel_norm_shape(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                        const paddle::Tensor& beta) {
  check_float(x, "channel_layer_norm input");
  check_float(gamma, "channel_layer_norm weight");
  check_float(beta, "channel_layer_norm bias");
  const auto shape = x.shape();
  PD_CHECK(shape.size() == 3, "channel_layer_norm input must be [batch, channels, length]");
  PD_CHECK(gamma.numel() == shape[1] && beta.numel() == shape[1], "channel_layer_norm weight/bias size != channels ",
           shape[1]);
  return shape;
}

// The norm of every sample, mean and rstd into [batch, length]. With a sample per thread or more, one task per sample
// (channel_norm over whole rows: its plane is contiguous and stays in the core's cache between the passes). With
// fewer, each thread takes a range of the channels, whole rows (where the operators' GEMM phases leave them: in its
// own cache), and the threads' partial sums over channels meet between barriers. Blocks of positions across all
// channels read rows at a stride of the length, whose cache sets depend on the physical pages: on the Zen 5 host the
// norm in SqueezeBERT's post-attention operator at batch 1 took 0.06 ms longer in most processes than in the others.
void channel_norm_all(const float* x, const float* r, const float* gamma, const float* beta, float epsilon,
                      const std::vector<int64_t>& shape, float* out, float* mean, float* rstd) {
  const int64_t batch = shape[0], c = shape[1], len = shape[2], plane = batch * len;
  const int threads = omp_get_max_threads();
  if (batch >= threads) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < batch; ++n) {
      channel_norm(x + n * c * len, r == nullptr ? nullptr : r + n * c * len, gamma, beta, epsilon, c, len, 0, len,
                   out + n * c * len, mean + n * len, rstd + n * len);
    }
    return;
  }
  PartialSums sums(threads, plane), squares(threads, plane);
  const float* src = r != nullptr ? out : x;  // the norm's input: x + r is written to out first
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t c0 = c * t / nt, c1 = c * (t + 1) / nt;
    Scratch<float> mu(plane), rs(plane);
    for (int64_t n = 0; n < batch; ++n) {
      float* acc = sums.of(t) + n * len;
      for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t row = (n * c + ch) * len;
        const float* xs = x + row;
        if (r != nullptr) {
          const float* rr = r + row;
          float* o = out + row;
#pragma omp simd
          for (int64_t l = 0; l < len; ++l) acc[l] += (o[l] = xs[l] + rr[l]);
        } else {
#pragma omp simd
          for (int64_t l = 0; l < len; ++l) acc[l] += xs[l];
        }
      }
    }
#pragma omp barrier
    sums.sum(0, plane, mu.data());
    for (float& v : mu) v /= c;
    for (int64_t n = 0; n < batch; ++n) {
      float* acc = squares.of(t) + n * len;
      const float* m = mu.data() + n * len;
      for (int64_t ch = c0; ch < c1; ++ch) {
        const float* xs = src + (n * c + ch) * len;
#pragma omp simd
        for (int64_t l = 0; l < len; ++l) acc[l] += (xs[l] - m[l]) * (xs[l] - m[l]);
      }
    }
#pragma omp barrier
    squares.sum(0, plane, rs.data());
    for (float& v : rs) v = 1.f / std::sqrt(v / c + epsilon);
    if (t == 0) {
      std::copy(mu.begin(), mu.end(), mean);
      std::copy(rs.begin(), rs.end(), rstd);
    }
    for (int64_t n = 0; n < batch; ++n) {
      const float *m = mu.data() + n * len, *q = rs.data() + n * len;
      for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t row = (n * c + ch) * len;
        const float* xs = src + row;
        float* o = out + row;
        const float g = gamma[ch], b = beta[ch];
#pragma omp simd
        for (int64_t l = 0; l < len; ++l) o[l] = (xs[l] - m[l]) * q[l] * g + b;
      }
    }
  }
}

}  // namespace

std::vector<paddle::Tensor> ChannelLayerNormForward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                                    const paddle::Tensor& beta, float epsilon) {
  const auto shape = channel_norm_shape(x, gamma, beta);
  auto out = paddle::empty(shape, x.dtype(), x.place());
  auto mean = paddle::empty({shape[0], shape[2]}, x.dtype(), x.place());
  auto rstd = paddle::empty({shape[0], shape[2]}, x.dtype(), x.place());
  channel_norm_all(x.data<float>(), nullptr, gamma.data<float>(), beta.data<float>(), epsilon, shape,
                   out.data<float>(), mean.data<float>(), rstd.data<float>());
  return {out, mean, rstd};
}

std::vector<paddle::Tensor> ChannelLayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& gamma,
                                                     const paddle::Tensor& mean, const paddle::Tensor& rstd,
                                                     const paddle::Tensor& dout) {
  check_float(dout, "channel_layer_norm gradient");
  const auto shape = x.shape();
  const int64_t batch = shape[0], c = shape[1], len = shape[2];
  auto dx = paddle::empty(shape, x.dtype(), x.place());
  auto dgamma = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  auto dbeta = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  const float *px = x.data<float>(), *pg = gamma.data<float>(), *pm = mean.data<float>();
  const float *pr = rstd.data<float>(), *pd = dout.data<float>();
  float* pdx = dx.data<float>();
  const int threads = omp_get_max_threads();
  PartialSums partial(threads, 2 * c);  // per thread: dgamma, then dbeta
#pragma omp parallel num_threads(threads)
  {
    float* acc_g = partial.of(omp_get_thread_num());
    float* acc_b = acc_g + c;
    std::vector<float> sum_g(len), sum_gx(len);  // per position: sums over channels of dy*gamma, dy*gamma*xhat
#pragma omp for schedule(static)
    for (int64_t n = 0; n < batch; ++n) {
      const float *xs = px + n * c * len, *dys = pd + n * c * len, *mu = pm + n * len, *rs = pr + n * len;
      std::fill(sum_g.begin(), sum_g.end(), 0.f);
      std::fill(sum_gx.begin(), sum_gx.end(), 0.f);
      float *sg = sum_g.data(), *sgx = sum_gx.data();
      for (int64_t ch = 0; ch < c; ++ch) {
        const float *row = xs + ch * len, *dy = dys + ch * len;
        float dgam = 0.f, dbet = 0.f;
#pragma omp simd reduction(+ : dgam, dbet)
        for (int64_t l = 0; l < len; ++l) {
          const float xhat = (row[l] - mu[l]) * rs[l];
          sg[l] += dy[l] * pg[ch];
          sgx[l] += dy[l] * pg[ch] * xhat;
          dgam += dy[l] * xhat;
          dbet += dy[l];
        }
        acc_g[ch] += dgam;
        acc_b[ch] += dbet;
      }
      for (int64_t ch = 0; ch < c; ++ch) {
        const float *row = xs + ch * len, *dy = dys + ch * len;
        float* out = pdx + (n * c + ch) * len;
#pragma omp simd
        for (int64_t l = 0; l < len; ++l) {
          const float xhat = (row[l] - mu[l]) * rs[l];
          out[l] = rs[l] * (dy[l] * pg[ch] - sg[l] / c - xhat * sgx[l] / c);
        }
      }
    }
  }
  partial.sum(0, c, dgamma.data<float>());
  partial.sum(c, c, dbeta.data<float>());
  return {dx, dgamma, dbeta};
}

PD_BUILD_OP(ct_channel_layer_norm)
    .Inputs({"X", "Gamma", "Beta"})
    .Outputs({"Out", "Mean", "Rstd"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(ChannelLayerNormForward));

PD_BUILD_GRAD_OP(ct_channel_layer_norm)
    .Inputs({"X", "Gamma", "Mean", "Rstd", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .SetKernelFn(PD_KERNEL(ChannelLayerNormBackward));

namespace {

// Positions per task at most: a task's inner activations (768 x 128 floats for SqueezeBERT) stay in a core's L2.
constexpr int64_t kFfnPositions = 128;

// Each sample's positions in blocks: RowSplit's count over the (sample, group) tasks (every thread a share where
// they are few), or more where a block would exceed kFfnPositions.
struct PositionBlocks {
  int64_t per_sample, size;
  PositionBlocks(int64_t tasks, int64_t length) {
    per_sample = std::max(RowSplit(tasks, length).blocks, (length + kFfnPositions - 1) / kFfnPositions);
    size = (length + per_sample - 1) / per_sample;
  }
};

}  // namespace

// The grouped 1x1 convolution of X, then the norm of its sum with R; without gradient (SqueezeBERT's
// ConvDropoutLayerNorm in evaluation): one operator where the layer made three. With a sample per thread or more,
// each task is a block of one sample's positions: every group's GEMM, then the bias, residual and norm while the
// block is in the core's cache; with fewer, the convolution's tasks split the rows (each thread reads a share of the
// weight), then the norm. SqueezeBERT's post-attention layer on 2 Zen 5 threads, seq 128, interleaved (00e12d4):
// batch 16 5.8-6.0 against 6.0-6.2 ms for the two phases, batch 2 0.65 against 0.66, batch 1 0.42 against 0.52 for
// the position blocks.
std::vector<paddle::Tensor> PointwiseConvAddNormForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                        const paddle::Tensor& b, const paddle::Tensor& r,
                                                        const paddle::Tensor& gamma, const paddle::Tensor& beta,
                                                        int64_t groups, float epsilon) {
  const ConvShape s = conv_shape(x, w, b, groups);
  check_float(r, "pointwise_conv_add_norm residual");
  const std::vector<int64_t> shape{s.batch, s.out, s.length};
  PD_CHECK(r.shape() == shape, "pointwise_conv_add_norm: residual shape != the convolution's output shape");
  check_norm_params(gamma, beta, s.out, "pointwise_conv_add_norm");
  if (s.batch < omp_get_max_threads()) {
    auto out = conv_forward(x, w, b, s);
    Scratch<float> stats(2 * s.batch * s.length);
    channel_norm_all(out.data<float>(), r.data<float>(), gamma.data<float>(), beta.data<float>(), epsilon, shape,
                     out.data<float>(), stats.data(), stats.data() + s.batch * s.length);
    return {out};
  }
  auto y = paddle::empty(shape, x.dtype(), x.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pb = b.data<float>(), *pr = r.data<float>();
  float* py = y.data<float>();
  const int64_t len = s.length;
  const PositionBlocks blocks(s.batch, len);
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    Scratch<float> stats(2 * blocks.size);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t blk = 0; blk < blocks.per_sample; ++blk) {
        const int64_t l0 = blk * blocks.size, cols = std::min(blocks.size, len - l0);
        if (cols <= 0) continue;
        float* out = py + n * s.out * len;
        for (int64_t ch = 0; ch < s.out; ++ch) {
          const float v = pb[ch];
#pragma omp simd
          for (int64_t l = 0; l < cols; ++l) out[ch * len + l0 + l] = v;
        }
        for (int64_t g = 0; g < groups; ++g) {
          failed = gemm(false, false, s.out_g, cols, s.in_g, pw + g * s.out_g * s.in_g, s.in_g,
                        px + (n * s.in + g * s.in_g) * len + l0, len, 1.f, out + g * s.out_g * len + l0, len) || failed;
        }
        channel_norm(out, pr + n * s.out * len, gamma.data<float>(), beta.data<float>(), epsilon, s.out, len, l0, cols,
                     out, stats.data(), stats.data() + blocks.size);
      }
    }
  }
  check_gemm(failed, "pointwise_conv_add_norm");
  return {y};
}

PD_BUILD_OP(ct_pointwise_conv_add_norm)
    .Inputs({"X", "W", "B", "R", "Gamma", "Beta"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(PointwiseConvAddNormForward));

// ---- the feed-forward block, channels-first: Out = norm over the channels of Conv2(GELU(Conv1(X))) + X, two grouped
// 1x1 convolutions of the same groups (X [batch, channels, length], W1 [inner, channels / groups(, 1)], W2 [channels,
// inner / groups(, 1)]); without gradient (SqueezeBERT's intermediate and output layers in evaluation). Each task is
// one group of a block of one sample's positions: the two GEMMs with GELU between, the inner activations in the
// thread's scratch, and the outer bias; then the residual add and norm (channel_norm_all). One operator where the
// layers made two, and the [batch, inner, length] activations never go to memory.

std::vector<paddle::Tensor> PointwiseFfnAddNormForward(const paddle::Tensor& x, const paddle::Tensor& w1,
                                                       const paddle::Tensor& b1, const paddle::Tensor& w2,
                                                       const paddle::Tensor& b2, const paddle::Tensor& gamma,
                                                       const paddle::Tensor& beta, int64_t groups, float epsilon) {
  const ConvShape s = conv_shape(x, w1, b1, groups);
  const int64_t c = s.in, in_g = s.in_g, mid_g = s.out_g, len = s.length;
  check_float(w2, "pointwise_ffn_add_norm outer weight");
  check_float(b2, "pointwise_ffn_add_norm outer bias");
  PD_CHECK(w2.shape()[0] == c && w2.numel() == c * mid_g && b2.numel() == c,
           "pointwise_ffn_add_norm: outer weight must be [", c, ", ", mid_g, "(, 1)], its bias [", c, "]");
  check_norm_params(gamma, beta, c, "pointwise_ffn_add_norm");
  auto y = paddle::empty(x.shape(), x.dtype(), x.place());
  const float *px = x.data<float>(), *pw1 = w1.data<float>(), *pb1 = b1.data<float>(), *pw2 = w2.data<float>(),
              *pb2 = b2.data<float>();
  float* py = y.data<float>();
  const PositionBlocks blocks(s.batch * groups, len);
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    Scratch<float> h(mid_g * blocks.size);
    // Group-major: a thread's consecutive tasks share their weights, which stay in its cache.
#pragma omp for collapse(3) schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t n = 0; n < s.batch; ++n) {
        for (int64_t blk = 0; blk < blocks.per_sample; ++blk) {
          const int64_t l0 = blk * blocks.size, cols = std::min(blocks.size, len - l0);
          if (cols <= 0) continue;
          failed = gemm(false, false, mid_g, cols, in_g, pw1 + g * mid_g * in_g, in_g,
                        px + (n * c + g * in_g) * len + l0, len, 0.f, h.data(), cols) || failed;
          for (int64_t r = 0; r < mid_g; ++r) bias_gelu_row(h.data() + r * cols, pb1 + g * mid_g + r, cols, true);
          float* out = py + (n * c + g * in_g) * len + l0;
          failed = gemm(false, false, in_g, cols, mid_g, pw2 + g * in_g * mid_g, mid_g, h.data(), cols, 0.f, out, len)
                   || failed;
          for (int64_t ch = 0; ch < in_g; ++ch) {
            const float v = pb2[g * in_g + ch];
#pragma omp simd
            for (int64_t l = 0; l < cols; ++l) out[ch * len + l] += v;
          }
        }
      }
    }
  }
  check_gemm(failed, "pointwise_ffn_add_norm");
  Scratch<float> stats(2 * s.batch * len);
  channel_norm_all(py, px, gamma.data<float>(), beta.data<float>(), epsilon, x.shape(), py, stats.data(),
                   stats.data() + s.batch * len);
  return {y};
}

PD_BUILD_OP(ct_pointwise_ffn_add_norm)
    .Inputs({"X", "W1", "B1", "W2", "B2", "Gamma", "Beta"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(PointwiseFfnAddNormForward));

// ---- ConvBERT's span-based dynamic convolution ---------------------------------------------------
// Positions outside [0, length) read zeros (the "same" padding of odd kernels).

namespace {

// A depthwise weight [channels, 1, kernel] as [kernel, channels]: contiguous over channels.
std::vector<float> kernel_major(const paddle::Tensor& w, int64_t c, int64_t kernel) {
  std::vector<float> wt(kernel * c);
  const float* pw = w.data<float>();
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t k = 0; k < kernel; ++k) wt[k * c + ch] = pw[ch * kernel + k];
  return wt;
}

}  // namespace

// Depthwise convolution along the length of channels-last X [batch, length, channels] with W
// [channels, 1, kernel]: Out[b, l, c] = sum_k W[c, k] X[b, l + k - pad, c].
std::vector<paddle::Tensor> DepthwiseConvForward(const paddle::Tensor& x, const paddle::Tensor& w, int64_t pad) {
  check_float(x, "depthwise_conv input");
  check_float(w, "depthwise_conv weight");
  const auto shape = x.shape();
  PD_CHECK(shape.size() == 3, "depthwise_conv input must be [batch, length, channels]");
  const int64_t batch = shape[0], len = shape[1], c = shape[2], kernel = w.numel() / c;
  PD_CHECK(w.numel() == c * kernel, "depthwise_conv weight must be [channels, 1, kernel]");
  const std::vector<float> wt = kernel_major(w, c, kernel);
  auto out = paddle::empty(shape, x.dtype(), x.place());
  const float* px = x.data<float>();
  float* po = out.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t l = 0; l < len; ++l) {
      float* o = po + (b * len + l) * c;
      for (int64_t ch = 0; ch < c; ++ch) o[ch] = 0.f;
      for (int64_t k = 0; k < kernel; ++k) {
        const int64_t src = l + k - pad;
        if (src < 0 || src >= len) continue;
        const float *xi = px + (b * len + src) * c, *wk = wt.data() + k * c;
#pragma omp simd
        for (int64_t ch = 0; ch < c; ++ch) o[ch] += wk[ch] * xi[ch];
      }
    }
  }
  return {out};
}

std::vector<paddle::Tensor> DepthwiseConvBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                  const paddle::Tensor& dout, int64_t pad) {
  check_float(dout, "depthwise_conv gradient");
  const auto shape = x.shape();
  const int64_t batch = shape[0], len = shape[1], c = shape[2], kernel = w.numel() / c;
  const std::vector<float> wt = kernel_major(w, c, kernel);
  auto dx = paddle::empty(shape, x.dtype(), x.place());
  auto dw = paddle::empty(w.shape(), w.dtype(), w.place());
  const float *px = x.data<float>(), *pd = dout.data<float>();
  float* pdx = dx.data<float>();
  const int threads = omp_get_max_threads();
  PartialSums partial(threads, kernel * c);  // per thread: dW as [kernel, channels]
#pragma omp parallel num_threads(threads)
  {
    float* acc = partial.of(omp_get_thread_num());
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t l = 0; l < len; ++l) {
        float* g = pdx + (b * len + l) * c;  // dX[l] = sum_k W[k] dOut[l - k + pad]
        const float* xl = px + (b * len + l) * c;
        for (int64_t ch = 0; ch < c; ++ch) g[ch] = 0.f;
        for (int64_t k = 0; k < kernel; ++k) {
          const int64_t dst = l - k + pad;
          if (dst < 0 || dst >= len) continue;
          const float *dy = pd + (b * len + dst) * c, *wk = wt.data() + k * c;
          float* ak = acc + k * c;  // dW[k] += dOut[dst] X[dst + k - pad] = dOut[dst] X[l]
#pragma omp simd
          for (int64_t ch = 0; ch < c; ++ch) {
            g[ch] += wk[ch] * dy[ch];
            ak[ch] += dy[ch] * xl[ch];
          }
        }
      }
    }
  }
  std::vector<float> sums(kernel * c);
  partial.sum(0, kernel * c, sums.data());
  float* pdw = dw.data<float>();
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t k = 0; k < kernel; ++k) pdw[ch * kernel + k] = sums[k * c + ch];
  return {dx, dw};
}

PD_BUILD_OP(ct_depthwise_conv)
    .Inputs({"X", "W"})
    .Outputs({"Out"})
    .Attrs({"pad: int64_t"})
    .SetKernelFn(PD_KERNEL(DepthwiseConvForward));

PD_BUILD_GRAD_OP(ct_depthwise_conv)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"pad: int64_t"})
    .SetKernelFn(PD_KERNEL(DepthwiseConvBackward));

// Dynamic convolution of V [batch, length, heads * size] with per-position kernels: P = softmax
// over k of Logits [batch, length, heads * kernel], Out[b, l, h, :] = sum_k P[b, l, h, k]
// V[b, l + k - pad, h, :]. P is kept for the gradient.
std::vector<paddle::Tensor> SpanConvForward(const paddle::Tensor& v, const paddle::Tensor& logits, int64_t heads,
                                            int64_t pad) {
  check_float(v, "span_conv values");
  check_float(logits, "span_conv kernel logits");
  const auto vs = v.shape(), ks = logits.shape();
  PD_CHECK(vs.size() == 3 && ks.size() == 3 && vs[0] == ks[0] && vs[1] == ks[1],
           "span_conv takes [batch, length, heads * size] values and [batch, length, heads * kernel] logits");
  const int64_t batch = vs[0], len = vs[1], size = vs[2] / heads, kernel = ks[2] / heads;
  PD_CHECK(vs[2] == heads * size && ks[2] == heads * kernel, "span_conv: channels not divisible by heads");
  auto out = paddle::empty(vs, v.dtype(), v.place());
  auto probs = paddle::empty(ks, v.dtype(), v.place());
  const float *pv = v.data<float>(), *pk = logits.data<float>();
  float *po = out.data<float>(), *pp = probs.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t l = 0; l < len; ++l) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* z = pk + ((b * len + l) * heads + h) * kernel;
        float* p = pp + ((b * len + l) * heads + h) * kernel;
        float mx = z[0], sum = 0.f;
        for (int64_t k = 1; k < kernel; ++k) mx = z[k] > mx ? z[k] : mx;
        for (int64_t k = 0; k < kernel; ++k) sum += (p[k] = expf(z[k] - mx));
        for (int64_t k = 0; k < kernel; ++k) p[k] /= sum;
        float* o = po + ((b * len + l) * heads + h) * size;
        for (int64_t d = 0; d < size; ++d) o[d] = 0.f;
        for (int64_t k = 0; k < kernel; ++k) {
          const int64_t src = l + k - pad;
          if (src < 0 || src >= len) continue;
          const float* vi = pv + ((b * len + src) * heads + h) * size;
#pragma omp simd
          for (int64_t d = 0; d < size; ++d) o[d] += p[k] * vi[d];
        }
      }
    }
  }
  return {out, probs};
}

std::vector<paddle::Tensor> SpanConvBackward(const paddle::Tensor& v, const paddle::Tensor& probs,
                                             const paddle::Tensor& dout, int64_t heads, int64_t pad) {
  check_float(dout, "span_conv gradient");
  const auto vs = v.shape(), ks = probs.shape();
  const int64_t batch = vs[0], len = vs[1], size = vs[2] / heads, kernel = ks[2] / heads;
  auto dv = paddle::empty(vs, v.dtype(), v.place());
  auto dlogits = paddle::empty(ks, v.dtype(), v.place());
  const float *pv = v.data<float>(), *pp = probs.data<float>(), *pd = dout.data<float>();
  float *pdv = dv.data<float>(), *pdk = dlogits.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t l = 0; l < len; ++l) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t row = (b * len + l) * heads + h;
        const float *p = pp + row * kernel, *dy = pd + row * size;
        float* dz = pdk + row * kernel;
        float dot = 0.f;  // softmax gradient: dZ = P (dP - sum_k P dP), dP[k] = dOut . V[l + k - pad]
        for (int64_t k = 0; k < kernel; ++k) {
          const int64_t src = l + k - pad;
          float dp = 0.f;
          if (src >= 0 && src < len) {
            const float* vi = pv + ((b * len + src) * heads + h) * size;
#pragma omp simd reduction(+ : dp)
            for (int64_t d = 0; d < size; ++d) dp += dy[d] * vi[d];
          }
          dz[k] = dp;
          dot += p[k] * dp;
        }
        for (int64_t k = 0; k < kernel; ++k) dz[k] = p[k] * (dz[k] - dot);
        float* g = pdv + row * size;  // dV[l] = sum_k P[l - k + pad, k] dOut[l - k + pad]
        for (int64_t d = 0; d < size; ++d) g[d] = 0.f;
        for (int64_t k = 0; k < kernel; ++k) {
          const int64_t dst = l - k + pad;
          if (dst < 0 || dst >= len) continue;
          const int64_t r = (b * len + dst) * heads + h;
          const float pk = pp[r * kernel + k], *di = pd + r * size;
#pragma omp simd
          for (int64_t d = 0; d < size; ++d) g[d] += pk * di[d];
        }
      }
    }
  }
  return {dv, dlogits};
}

// In a static graph (ConvBERT's exported models) the outputs take the inputs' shapes and dtype.
std::vector<std::vector<int64_t>> SpanConvShapes(const std::vector<int64_t>& v, const std::vector<int64_t>& logits) {
  return {v, logits};
}

std::vector<paddle::DataType> SpanConvDtypes(const paddle::DataType& v, const paddle::DataType&) { return {v, v}; }

PD_BUILD_OP(ct_span_conv)
    .Inputs({"V", "Logits"})
    .Outputs({"Out", "Probs"})
    .Attrs({"heads: int64_t", "pad: int64_t"})
    .SetKernelFn(PD_KERNEL(SpanConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SpanConvShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(SpanConvDtypes));

PD_BUILD_GRAD_OP(ct_span_conv)
    .Inputs({"V", "Probs", paddle::Grad("Out")})
    .Outputs({paddle::Grad("V"), paddle::Grad("Logits")})
    .Attrs({"heads: int64_t", "pad: int64_t"})
    .SetKernelFn(PD_KERNEL(SpanConvBackward));

// ---- attention without dropout or gradient (inference: exported models, dygraph under no_grad) --------
// Out[b, h] = softmax(Q[b, h] K[b, h]^T * scale + M[b]) V[b, h] per sample b and head h, the heads side by side
// in the channels: token-major Q [batch, query, heads * size] and K, V [batch, key, heads * size] (the
// projections' own layout: no head split or merge), or with ``channels_first`` [batch, heads * size, query]
// and [batch, heads * size, key] (SqueezeBERT's convolutions), Out in Q's layout; M an additive
// [batch, 1, 1 or query, key] mask. One task per sample and head, whose scores stay in the thread's cache
// between the two GEMMs.

namespace {

// softmax(Q K^T * scale + mask) V for ``rows`` queries (from query i0 of sample b) of one head of ``size`` channels
// over nk keys; scores in s (rows x nk). Token-major: Q rows x size (row stride ldq), K and V nk x size (ldk), Out
// rows x size (ldo). Channels-first: Q size x rows (ldq), K and V size x nk (ldk), Out size x rows (ldo; Out^T =
// V^T P^T).
bool attend_head(bool channels_first, const float* q, int64_t ldq, const float* k, const float* v, int64_t ldk,
                 int64_t rows, int64_t nk, int64_t size, const AttentionMask& mask, int64_t b, int64_t i0, float scale,
                 float* s, float* out, int64_t ldo) {
  bool failed = channels_first ? gemm(true, false, rows, nk, size, q, ldq, k, ldk, 0.f, s, nk)
                               : gemm(false, true, rows, nk, size, q, ldq, k, ldk, 0.f, s, nk);
  for (int64_t r = 0; r < rows; ++r) masked_softmax(s + r * nk, mask.row(b, i0 + r), scale, nk, s + r * nk);
  failed = (channels_first ? gemm(false, true, size, rows, nk, v, ldk, s, nk, 0.f, out, ldo)
                           : gemm(false, false, rows, size, nk, s, nk, v, ldk, 0.f, out, ldo)) || failed;
  return failed;
}

struct AttentionSizes {
  int64_t batch, nq, nk, width, size;  // queries, keys, heads x size
};

// The sizes of the attention operators' Q, K, V for ``heads`` heads, each checked: float32, or with ``bf16``
// also bfloat16, Q, K and V of one type.
AttentionSizes attention_sizes(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v, int64_t heads,
                               bool channels_first, bool bf16 = false) {
  if (bf16 && q.dtype() == paddle::DataType::BFLOAT16) {
    PD_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype() && q.is_cpu() && k.is_cpu() && v.is_cpu(),
             "attention: query, key and value must be CPU tensors of one type (float32 or bfloat16)");
  } else {
    check_float(q, "attention query");
    check_float(k, "attention key");
    check_float(v, "attention value");
  }
  const auto qs = q.shape(), ks = k.shape();
  const int c = channels_first ? 1 : 2, t = 3 - c;  // channel and token dimensions
  PD_CHECK(qs.size() == 3 && ks == v.shape() && ks.size() == 3 && ks[0] == qs[0] && ks[c] == qs[c],
           "attention takes query [batch, query, width] and key, value [batch, key, width] (channels_first: "
           "[batch, width, query] and [batch, width, key])");
  const int64_t width = qs[c];
  PD_CHECK(heads > 0 && width % heads == 0, "attention: width ", width, " not divisible by heads ", heads);
  return {qs[0], qs[t], ks[t], width, width / heads};
}

}  // namespace

std::vector<paddle::Tensor> AttentionForward(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                                             const paddle::Tensor& m, int64_t heads, float scale,
                                             bool channels_first) {
  const auto [batch, nq, nk, width, size] = attention_sizes(q, k, v, heads, channels_first);
  const AttentionMask additive(m, batch, nq, nk);
  auto out = paddle::empty(q.shape(), q.dtype(), q.place());
  const float *pq = q.data<float>(), *pk = k.data<float>(), *pv = v.data<float>();
  float* po = out.data<float>();
  const RowSplit split(batch * heads, nq);  // query rows per task
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    Scratch<float> scores(split.rows * nk);
    float* s = scores.data();
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t blk = 0; blk < split.blocks; ++blk) {
          const int64_t i0 = split.first(blk), rows = split.count(blk);
          if (rows == 0) continue;
          // Token-major: a head is a [tokens, size] block of row stride width; channels-first: [size, tokens].
          // The offset of query row i0 (token-major: a row; channels-first: a column) and of the head's keys.
          const int64_t qo = channels_first ? (b * width + h * size) * nq + i0 : (b * nq + i0) * width + h * size;
          const int64_t ko = channels_first ? (b * width + h * size) * nk : b * nk * width + h * size;
          failed = attend_head(channels_first, pq + qo, channels_first ? nq : width, pk + ko, pv + ko,
                               channels_first ? nk : width, rows, nk, size, additive, b, i0, scale, s, po + qo,
                               channels_first ? nq : width) || failed;
        }
      }
    }
  }
  check_gemm(failed, "attention");
  return {out};
}

// ---- SqueezeBERT's query, key and value convolutions with attention, one operator (evaluation) -------------
// X [batch, channels, length] channels-first; Wq, Wk, Wv [channels, channels / groups(, 1)] grouped 1x1
// convolutions whose groups each hold whole heads; M as above. One task per sample and group computes the
// group's query, key and value (a GEMM each, bias added) and then attention over its heads, all in its
// thread's cache: one operator where the layer made four, with no barrier between them.

std::vector<paddle::Tensor> GroupedQkvAttentionForward(const paddle::Tensor& x, const paddle::Tensor& wq,
                                                       const paddle::Tensor& bq, const paddle::Tensor& wk,
                                                       const paddle::Tensor& bk, const paddle::Tensor& wv,
                                                       const paddle::Tensor& bv, const paddle::Tensor& m,
                                                       int64_t groups, int64_t heads, float scale) {
  const ConvShape s = conv_shape(x, wq, bq, groups);
  PD_CHECK(s.out == s.in && heads > 0 && s.out % heads == 0 && heads % groups == 0,
           "grouped_qkv_attention: channels ", s.out, " must be the input's and split into ", heads,
           " heads, each group holding whole heads of the ", groups, " groups");
  PD_CHECK(conv_shape(x, wk, bk, groups).out == s.out && conv_shape(x, wv, bv, groups).out == s.out,
           "grouped_qkv_attention: key and value weights must match the query's");
  const int64_t len = s.length, size = s.out / heads, group_heads = heads / groups, plane = s.out_g * len;
  const AttentionMask additive(m, s.batch, len, len);
  auto out = paddle::empty({s.batch, s.out, len}, x.dtype(), x.place());
  const float* px = x.data<float>();
  const float* pw[3] = {wq.data<float>(), wk.data<float>(), wv.data<float>()};
  const float* pb[3] = {bq.data<float>(), bk.data<float>(), bv.data<float>()};
  float* po = out.data<float>();
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    Scratch<float> buffer(3 * plane + len * len);  // the group's query, key, value; one head's scores
    float *qkv = buffer.data(), *scores = qkv + 3 * plane;
#pragma omp for collapse(2) schedule(static)
    for (int64_t g = 0; g < s.groups; ++g) {
      for (int64_t n = 0; n < s.batch; ++n) {
        const float* xg = px + (n * s.in + g * s.in_g) * len;
        for (int t = 0; t < 3; ++t) {
          failed = conv_block(pw[t] + g * s.out_g * s.in_g, pb[t] + g * s.out_g, xg, s.out_g, s.in_g, len,
                              qkv + t * plane) || failed;
        }
        for (int64_t h = 0; h < group_heads; ++h) {  // channels-first heads
          const int64_t o = h * size * len;
          failed = attend_head(true, qkv + o, len, qkv + plane + o, qkv + 2 * plane + o, len, len, len, size, additive,
                               n, 0, scale, scores, po + (n * s.out + g * s.out_g) * len + o, len) || failed;
        }
      }
    }
  }
  check_gemm(failed, "grouped_qkv_attention");
  return {out};
}

PD_BUILD_OP(ct_grouped_qkv_attention)
    .Inputs({"X", "Wq", "Bq", "Wk", "Bk", "Wv", "Bv", "M"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t", "heads: int64_t", "scale: float"})
    .SetKernelFn(PD_KERNEL(GroupedQkvAttentionForward));

// Out's shape and type: the first input's (the attention operators, ct_add_layer_norm_bf16).
std::vector<std::vector<int64_t>> FirstOfFourShape(const std::vector<int64_t>& first, const std::vector<int64_t>&,
                                                   const std::vector<int64_t>&, const std::vector<int64_t>&) {
  return {first};
}

std::vector<paddle::DataType> FirstOfFourDtype(const paddle::DataType& first, const paddle::DataType&,
                                               const paddle::DataType&, const paddle::DataType&) {
  return {first};
}

PD_BUILD_OP(ct_attention)
    .Inputs({"Q", "K", "V", "M"})
    .Outputs({"Out"})
    .Attrs({"heads: int64_t", "scale: float", "channels_first: bool"})
    .SetKernelFn(PD_KERNEL(AttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfFourShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfFourDtype));

// ---- SqueezeBERT's query, key and value with attention in the token-major export, one operator ------------------
// X [batch, length, channels]; W [groups, channels / groups, 3 * channels / groups]: per group the query, key and
// value weights side by side (X W); B [groups, 3 * channels / groups]; M as above. One task per sample and group:
// the group's three projections as one GEMM into the thread's buffer, then attention over the group's heads from
// it, Out [batch, length, channels] in BERT's head layout.

namespace {

struct SelfAttentionShape {
  int64_t batch, len, channels, groups, in_g, width_g, group_heads, size;
};

// The sizes of grouped self-attention on X [batch, length, channels] with ``groups`` groups of in_g input channels,
// each projecting to out3 = 3 x width_g (query, key, value), bias B [groups, out3], ``heads`` heads (checked).
SelfAttentionShape self_attention_shape(const paddle::Tensor& x, int64_t groups, int64_t in_g, int64_t out3,
                                        const paddle::Tensor& b, int64_t heads, const char* what) {
  const auto xs = x.shape();
  PD_CHECK(xs.size() == 3, what, " takes X [batch, length, channels]");
  PD_CHECK(groups * in_g == xs[2] && out3 == 3 * in_g && b.numel() == 3 * xs[2] && heads > 0 && heads % groups == 0 &&
               in_g % (heads / groups) == 0,
           what, ": weight of ", groups, " groups of ", in_g, " x ", out3, " and ", heads, " heads do not fit ", xs[2],
           " channels in groups of whole heads (query, key and value side by side)");
  return {xs[0], xs[1], xs[2], groups, in_g, in_g, heads / groups, in_g / (heads / groups)};
}

}  // namespace

std::vector<paddle::Tensor> GroupedSelfAttentionForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                        const paddle::Tensor& b, const paddle::Tensor& m,
                                                        int64_t heads, float scale) {
  const char* what = "grouped_self_attention";
  check_float(x, what);
  check_float(w, what);
  check_float(b, what);
  const auto ws = w.shape();
  PD_CHECK(ws.size() == 3, what, ": weight must be [groups, channels / groups, 3 * channels / groups]");
  const SelfAttentionShape s = self_attention_shape(x, ws[0], ws[1], ws[2], b, heads, what);
  const int64_t ld = 3 * s.width_g;
  const AttentionMask additive(m, s.batch, s.len, s.len);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pb = b.data<float>();
  float* po = out.data<float>();
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    Scratch<float> qkv(s.len * ld), scores(s.len * s.len);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t g = 0; g < s.groups; ++g) {
        failed = linear_rows(px + n * s.len * s.channels + g * s.in_g, s.channels, pw + g * s.in_g * ld, pb + g * ld,
                             s.len, s.in_g, ld, qkv.data(), ld) || failed;
        for (int64_t h = 0; h < s.group_heads; ++h) {
          const float* q = qkv.data() + h * s.size;
          failed = attend_head(false, q, ld, q + s.width_g, q + 2 * s.width_g, ld, s.len, s.len, s.size, additive, n, 0,
                               scale, scores.data(), po + n * s.len * s.channels + g * s.width_g + h * s.size,
                               s.channels) || failed;
        }
      }
    }
  }
  check_gemm(failed, what);
  return {out};
}

PD_BUILD_OP(ct_grouped_self_attention)
    .Inputs({"X", "W", "B", "M"})
    .Outputs({"Out"})
    .Attrs({"heads: int64_t", "scale: float"})
    .SetKernelFn(PD_KERNEL(GroupedSelfAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfFourShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfFourDtype));

// ---- the same attention with bfloat16 products (bf16 inference: paddle.inference's bf16 predictor runs this op
// in place of ct_attention; common/inference.py renames it in the program). Token-major only. Q, K, V, the
// probabilities P are rounded to bf16, products summed in fp32 (VDPBF16PS), softmax in fp32. Q, K, V are
// float32 or bfloat16 (all one type), and Out has their type: in the bf16 predictor they come bf16 from the
// projections' fcs and Out goes bf16 into the output fc, with no conversion operators in between.
#ifdef __AVX512BF16__
namespace {


// f(T{}) with T the element type of float32 or bfloat16 tensor t (uint16_t for bfloat16): the operators that take
// either run one template, viewing their tensors with elements<T>.
template <class F>
void by_element_type(const paddle::Tensor& t, F&& f) {
  if (t.dtype() == paddle::DataType::BFLOAT16) {
    f(uint16_t{});
  } else {
    f(float{});
  }
}
template <class T>
const T* elements(const paddle::Tensor& t) {
  return static_cast<const T*>(t.data());
}
template <class T>
T* elements(paddle::Tensor& t) {
  return static_cast<T*>(t.data());
}

// C[R x n] (fp32, n <= 16 NV) = (A B) * alpha[r] + add[r add_ld + j] (add optional) with A [R x k2] words of bf16
// pairs along k (row stride lda words) and B [k2 x >= 16 NV] words, word (p, j) the pair B[2p, j], B[2p + 1, j]
// (row stride ldb words).
struct Epilogue {
  const float* alpha;  // per row
  const float* add;    // nullptr: none
  int64_t add_ld;      // 0: one add row for all rows
  // The epilogue of the block from row i, column j on.
  Epilogue at(int64_t i, int64_t j) const { return {alpha + i, add ? add + i * add_ld + j : nullptr, add_ld}; }
};

template <int R, int NV>
inline void bf16_tile(int64_t k2, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c, int64_t ldc,
                      __mmask16 tail, Epilogue e) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k2; ++p) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(b + p * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)av, (__m512bh)bv[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m512 alpha = _mm512_set1_ps(e.alpha[r]);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? tail : 0xFFFF;
      const __m512 add = e.add ? _mm512_maskz_loadu_ps(m, e.add + r * e.add_ld + 16 * v) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(c + r * ldc + 16 * v, m, _mm512_fmadd_ps(acc[r][v], alpha, add));
    }
  }
}

template <int R>
void bf16_rows(int64_t n, int64_t k2, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c, int64_t ldc,
               Epilogue e) {
  for (int64_t j = 0; j < n; j += 64) {
    const int64_t w = std::min<int64_t>(64, n - j);
    const __mmask16 tail = first_lanes(w - (w - 1) / 16 * 16);
    const Epilogue ej = e.at(0, j);
    switch ((w + 15) / 16) {
      case 1: bf16_tile<R, 1>(k2, a, lda, b + j, ldb, c + j, ldc, tail, ej); break;
      case 2: bf16_tile<R, 2>(k2, a, lda, b + j, ldb, c + j, ldc, tail, ej); break;
      case 3: bf16_tile<R, 3>(k2, a, lda, b + j, ldb, c + j, ldc, tail, ej); break;
      default: bf16_tile<R, 4>(k2, a, lda, b + j, ldb, c + j, ldc, tail, ej); break;
    }
  }
}

// C [m x n] as in bf16_tile, in tiles of 6 rows by 64 columns (24 fp32 accumulators in registers).
void bf16_gemm(int64_t m, int64_t n, int64_t k2, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c,
               int64_t ldc, Epilogue e) {
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) bf16_rows<6>(n, k2, a + i * lda, lda, b, ldb, c + i * ldc, ldc, e.at(i, 0));
  a += i * lda;
  c += i * ldc;
  e = e.at(i, 0);
  switch (m - i) {
    case 1: bf16_rows<1>(n, k2, a, lda, b, ldb, c, ldc, e); break;
    case 2: bf16_rows<2>(n, k2, a, lda, b, ldb, c, ldc, e); break;
    case 3: bf16_rows<3>(n, k2, a, lda, b, ldb, c, ldc, e); break;
    case 4: bf16_rows<4>(n, k2, a, lda, b, ldb, c, ldc, e); break;
    case 5: bf16_rows<5>(n, k2, a, lda, b, ldb, c, ldc, e); break;
  }
}

// The values x[0 .. 16) where m is set (zero elsewhere) as bf16: rounded from fp32, or as they are.
inline __m256i bf16_lanes(const float* x, __mmask16 m) {
  return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x));
}
inline __m256i bf16_lanes(const uint16_t* x, __mmask16 m) { return _mm256_maskz_loadu_epi16(m, x); }

// n values (fp32 or bf16) to bf16 at out.
template <class T>
inline void to_bf16(const T* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = first_lanes(n - i);
    _mm256_mask_storeu_epi16(out + i, m, bf16_lanes(x + i, m));
  }
}

// A row of n values to bf16 pairs at out, the last pair zero-padded.
template <class T>
inline void pair_row(const T* x, int64_t n, uint32_t* out) {
  uint16_t* o = reinterpret_cast<uint16_t*>(out);
  to_bf16(x, n, o);
  if (n % 2) o[n] = 0;
}

// 2^t for t <= 0: 2^n 2^f with n = round(t), |f| <= 1/2, 2^f a degree-3 minimax polynomial (relative error
// below 7.5e-5; the result is rounded to bf16, whose step is 8e-3). Below -126, 2^-126.
inline __m512 exp2_nonpositive(__m512 t) {
  t = _mm512_max_ps(t, _mm512_set1_ps(-126.f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(5.517166875e-2f), f, _mm512_set1_ps(2.426111479e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.932609878e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.999280720e-1f));
  return _mm512_scalef_ps(p, n);
}

// out = bf16(exp(x - max x)) over the k values of x, zero padded to an even count; returns 1 / their sum (the
// softmax's normalisation, left to the caller).
float exp_to_bf16(const float* x, int64_t k, uint16_t* out) {
  __m512 mx = _mm512_set1_ps(-3.0e38f);
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 m = first_lanes(k - i);
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));  // no read past x[k - 1]
  }
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 top = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(mx)), log2e);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 m = first_lanes(k - i);
    const __m512 e = exp2_nonpositive(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, x + i), log2e, top));  // (x - max) log2 e
    _mm256_mask_storeu_epi16(out + i, m, (__m256i)_mm512_cvtneps_pbh(e));
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  if (k % 2) out[k] = 0;
  return 1.f / _mm512_reduce_add_ps(sum);
}

// Word (p, c) of out (row stride ld words) = the bf16 pair x[2p, c], x[2p + 1, c] of rows x[0 .. rows) of n values
// (fp32 or bf16; row stride ldx; a missing last row is zero).
template <class T>
void pair_rows(const T* x, int64_t rows, int64_t n, int64_t ldx, uint32_t* out, int64_t ld) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                              21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t p = 0; 2 * p < rows; ++p) {
    const T* x0 = x + 2 * p * ldx;
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = first_lanes(n - c);
      const __m256i lo = bf16_lanes(x0 + c, m);
      const __m256i hi = 2 * p + 1 < rows ? bf16_lanes(x0 + ldx + c, m) : _mm256_setzero_si256();
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      _mm512_storeu_si512(out + p * ld + c, _mm512_permutexvar_epi16(interleave, both));
    }
  }
}

// Out rows [rows x size] (row stride width) = P V * norms[r] for P [rows x k2 words] and V [k2 x size_pad words] of
// bf16 pairs: fp32 in place, bf16 through an fp32 buffer of rows x size.
inline void attention_out(int64_t rows, int64_t size, int64_t k2, const uint32_t* p, const uint32_t* v, int64_t size_pad,
                          const float* norms, float* out, int64_t width, float*) {
  bf16_gemm(rows, size, k2, p, k2, v, size_pad, out, width, {norms, nullptr, 0});
}
inline void attention_out(int64_t rows, int64_t size, int64_t k2, const uint32_t* p, const uint32_t* v, int64_t size_pad,
                          const float* norms, uint16_t* out, int64_t width, float* buffer) {
  bf16_gemm(rows, size, k2, p, k2, v, size_pad, buffer, size, {norms, nullptr, 0});
  for (int64_t r = 0; r < rows; ++r) to_bf16(buffer + r * size, size, out + r * width);
}

// One thread's buffers for attend_head_bf16 (nq queries, nk keys, heads of ``size``): Q and K as rows of bf16 pairs,
// K^T and V as pair rows (padded to 16 words), the probabilities of a block of query rows as bf16 pairs, their fp32
// scores, and for a bf16 Out the block's fp32 output.
constexpr int64_t kQueryBlock = 24;
struct HeadBuffers {
  int64_t size2, nk2, nk_pad, size_pad;
  Scratch<uint32_t> qb, kb, kt, vp, probs;
  Scratch<float> scores, scales, norms, rows_out;
  HeadBuffers(int64_t nq, int64_t nk, int64_t size, float scale)
      : size2((size + 1) / 2), nk2((nk + 1) / 2), nk_pad((nk + 15) / 16 * 16), size_pad((size + 15) / 16 * 16),
        qb(nq * size2), kb(nk * size2), kt(size2 * nk_pad), vp(nk2 * size_pad), probs(kQueryBlock * nk2),
        scores(kQueryBlock * nk), scales(kQueryBlock, scale), norms(kQueryBlock), rows_out(kQueryBlock * size) {}
};

// Out (type O, row stride ldo) = softmax(Q K^T * scale + M[b]) V for one head of ``size`` channels: Q [nq, size]
// (row stride ldq), K and V [nk, size] (ldk), of type T (float32 or bf16), products in bf16 (VDPBF16PS).
template <class T, class O>
void attend_head_bf16(const T* q, int64_t ldq, const T* k, const T* v, int64_t ldk, int64_t nq, int64_t nk,
                      int64_t size, const AttentionMask& additive, int64_t b, HeadBuffers& t, O* out, int64_t ldo) {
  const int64_t size2 = t.size2, nk2 = t.nk2;
  for (int64_t i = 0; i < nq; ++i) pair_row(q + i * ldq, size, &t.qb[i * size2]);
  for (int64_t j = 0; j < nk; ++j) pair_row(k + j * ldk, size, &t.kb[j * size2]);
  for (int64_t j = 0; j < nk; ++j)
    for (int64_t p = 0; p < size2; ++p) t.kt[p * t.nk_pad + j] = t.kb[j * size2 + p];
  pair_rows(v, nk, size, ldk, t.vp.data(), t.size_pad);
  for (int64_t i = 0; i < nq; i += kQueryBlock) {
    const int64_t rows = std::min(kQueryBlock, nq - i);
    // scores = Q K^T * scale + M, probabilities exp(scores - max) and their row sums' inverses,
    // Out = probabilities V / sums
    bf16_gemm(rows, nk, size2, &t.qb[i * size2], size2, t.kt.data(), t.nk_pad, t.scores.data(), nk,
              {t.scales.data(), additive.row(b, i), additive.stride()});
    for (int64_t r = 0; r < rows; ++r) {
      t.norms[r] = exp_to_bf16(&t.scores[r * nk], nk, reinterpret_cast<uint16_t*>(&t.probs[r * nk2]));
    }
    attention_out(rows, size, nk2, t.probs.data(), t.vp.data(), t.size_pad, t.norms.data(), out + i * ldo, ldo,
                  t.rows_out.data());
  }
}

// Out (fp32 or bf16, the inputs' type T) of ct_attention_bf16 for Q, K, V of type T.
template <class T>
void attention_bf16(const T* pq, const T* pk, const T* pv, const AttentionMask& additive, int64_t heads, float scale,
                    AttentionSizes sizes, T* po) {
  const auto [batch, nq, nk, width, size] = sizes;
#pragma omp parallel
  {
    HeadBuffers buffers(nq, nk, size, scale);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t oq = b * nq * width + h * size, ok = b * nk * width + h * size;
        attend_head_bf16(pq + oq, width, pk + ok, pv + ok, width, nq, nk, size, additive, b, buffers, po + oq, width);
      }
    }
  }
}

}  // namespace
#endif

std::vector<paddle::Tensor> AttentionBf16Forward(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                                                 const paddle::Tensor& m, int64_t heads, float scale, bool channels_first) {
#ifndef __AVX512BF16__
  PD_THROW("ct_attention_bf16 needs a CPU with AVX512-BF16 (the operators were built for one without)");
#else
  PD_CHECK(!channels_first, "ct_attention_bf16 takes token-major [batch, length, width] query, key and value");
  const AttentionSizes sizes = attention_sizes(q, k, v, heads, false, true);
  const AttentionMask additive(m, sizes.batch, sizes.nq, sizes.nk);
  auto out = paddle::empty(q.shape(), q.dtype(), q.place());
  by_element_type(q, [&](auto zero) {
    using T = decltype(zero);
    attention_bf16(elements<T>(q), elements<T>(k), elements<T>(v), additive, heads, scale, sizes, elements<T>(out));
  });
  return {out};
#endif
}

// Q, K, V under the names paddle's cpu_bfloat16_pass converts (X, Y, Input): common/inference.py marks the
// operator bfloat16 in the bf16 predictor's program, so that the pass feeds it bf16 and takes bf16 from it.
PD_BUILD_OP(ct_attention_bf16)
    .Inputs({"X", "Y", "Input", "M"})
    .Outputs({"Out"})
    .Attrs({"heads: int64_t", "scale: float", "channels_first: bool"})
    .SetKernelFn(PD_KERNEL(AttentionBf16Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfFourShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfFourDtype));

// ---- residual add and layer norm for the bf16 predictor: Out = layer_norm(X + Y) over the last dimension
// (Scale, Bias: float32), X and Y float32 or bfloat16 (one type), Out of their type. common/inference.py puts it
// in place of an elementwise_add read only by a last-axis layer_norm, marked bfloat16 like ct_attention_bf16
// (X and Y are inputs paddle's cpu_bfloat16_pass converts), so the sum stays in cache, one row at a time.
#ifdef __AVX512BF16__
namespace {

inline __m512 fp32_lanes(const float* x, __mmask16 m) { return _mm512_maskz_loadu_ps(m, x); }
inline __m512 fp32_lanes(const uint16_t* x, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x)), 16));
}
inline void store_lanes(float* out, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(out, m, v); }
inline void store_lanes(uint16_t* out, __mmask16 m, __m512 v) {
  _mm256_mask_storeu_epi16(out, m, (__m256i)_mm512_cvtneps_pbh(v));
}

// X and Y of the bf16 predictor's two-input operators: CPU tensors of one shape and type (float32 or bfloat16).
void check_bf16_pair(const paddle::Tensor& x, const paddle::Tensor& y, const char* op) {
  const bool bf16 = x.dtype() == paddle::DataType::BFLOAT16;
  PD_CHECK(x.shape() == y.shape() && x.dtype() == y.dtype() && (bf16 || x.dtype() == paddle::DataType::FLOAT32) &&
               x.is_cpu() && y.is_cpu(),
           op, ": X and Y must be CPU tensors of one shape and type (float32 or bfloat16)");
}

// out (n values of type O) = LayerNorm of the n fp32 values v with scale and bias; total: the lanewise sums of v
// (zero past n), from the pass that wrote v.
template <class O>
void norm_row_to(const float* v, __m512 total, const float* scale, const float* bias, float epsilon, int64_t n,
                 O* out) {
  const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(total) / n);
  __m512 squares = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = first_lanes(n - i);
    const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, v + i), mean);
    squares = _mm512_fmadd_ps(d, d, squares);
  }
  const __m512 rstd = _mm512_set1_ps(1.f / std::sqrt(_mm512_reduce_add_ps(squares) / n + epsilon));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = first_lanes(n - i);
    const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, v + i), mean), rstd);
    store_lanes(out + i, m, _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, scale + i), _mm512_maskz_loadu_ps(m, bias + i)));
  }
}

template <class T>
void add_layer_norm(const T* x, const T* y, const float* scale, const float* bias, float epsilon, int64_t rows,
                    int64_t n, T* out) {
#pragma omp parallel
  {
    std::vector<float> sum(n);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T *xr = x + r * n, *yr = y + r * n;
      __m512 total = _mm512_setzero_ps();
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = first_lanes(n - i);
        const __m512 v = _mm512_add_ps(fp32_lanes(xr + i, m), fp32_lanes(yr + i, m));  // zero past n
        _mm512_mask_storeu_ps(&sum[i], m, v);
        total = _mm512_add_ps(total, v);
      }
      norm_row_to(sum.data(), total, scale, bias, epsilon, n, out + r * n);
    }
  }
}

}  // namespace
#endif

std::vector<paddle::Tensor> AddLayerNormBf16Forward(const paddle::Tensor& x, const paddle::Tensor& y,
                                                    const paddle::Tensor& scale, const paddle::Tensor& bias,
                                                    float epsilon) {
#ifndef __AVX512BF16__
  PD_THROW("ct_add_layer_norm_bf16 needs a CPU with AVX512-BF16 (the operators were built for one without)");
#else
  check_bf16_pair(x, y, "ct_add_layer_norm_bf16");
  check_float(scale, "ct_add_layer_norm_bf16 scale");
  check_float(bias, "ct_add_layer_norm_bf16 bias");
  const int64_t n = last_dim(x), rows = x.numel() / n;
  PD_CHECK(scale.numel() == n && bias.numel() == n, "ct_add_layer_norm_bf16: scale / bias size != last dimension ", n);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  by_element_type(x, [&](auto zero) {
    using T = decltype(zero);
    add_layer_norm(elements<T>(x), elements<T>(y), scale.data<float>(), bias.data<float>(), epsilon, rows, n,
                   elements<T>(out));
  });
  return {out};
#endif
}

PD_BUILD_OP(ct_add_layer_norm_bf16)
    .Inputs({"X", "Y", "Scale", "Bias"})
    .Outputs({"Out"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(AddLayerNormBf16Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfFourShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfFourDtype));

// ---- MobileBERT's residual add and NoNorm in exports, in place: Out = (X + Y) * W + B over the last dimension
// (W, B float32), written over X, the dense's output, read by nothing else.
void AddScaleShiftInplace(paddle::Tensor& x, const paddle::Tensor& y, const paddle::Tensor& w,
                          const paddle::Tensor& b) {
  check_float(x, "ct_add_scale_shift_ X");
  check_float(y, "ct_add_scale_shift_ Y");
  PD_CHECK(x.shape() == y.shape(), "ct_add_scale_shift_: Y shape != X shape");
  check_scale_shift_params(x, w, b);
  const int64_t n = last_dim(x);
  scale_shift_rows(x.data<float>(), y.data<float>(), w.data<float>(), b.data<float>(), x.numel() / n, n,
                   x.data<float>());
}

PD_BUILD_OP(ct_add_scale_shift_)
    .Inputs({"X", "Y", "W", "B"})
    .Outputs({"Out"})
    .SetInplaceMap({{"X", "Out"}})
    .SetKernelFn(PD_KERNEL(AddScaleShiftInplace));

// ---- the same for the bf16 predictor, into a new tensor: common/inference.py puts it in place of
// ct_add_scale_shift_, marked bfloat16 like ct_attention_bf16, so its fcs write X and Y in bf16 and read Out in
// bf16, with no conversion operators in between. X and Y float32 or bfloat16 (one type), Out of their type.
#ifdef __AVX512BF16__
namespace {

template <class T>
void add_scale_shift(const T* x, const T* y, const float* w, const float* b, int64_t rows, int64_t n, T* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = first_lanes(n - i);
      const __m512 sum = _mm512_add_ps(fp32_lanes(x + r * n + i, m), fp32_lanes(y + r * n + i, m));
      store_lanes(out + r * n + i, m,
                  _mm512_fmadd_ps(sum, _mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
  }
}

}  // namespace
#endif

std::vector<paddle::Tensor> AddScaleShiftBf16Forward(const paddle::Tensor& x, const paddle::Tensor& y,
                                                     const paddle::Tensor& w, const paddle::Tensor& b) {
#ifndef __AVX512BF16__
  PD_THROW("ct_add_scale_shift_bf16 needs a CPU with AVX512-BF16 (the operators were built for one without)");
#else
  check_bf16_pair(x, y, "ct_add_scale_shift_bf16");
  check_scale_shift_params(x, w, b);
  const int64_t n = last_dim(x);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  by_element_type(x, [&](auto zero) {
    using T = decltype(zero);
    add_scale_shift(elements<T>(x), elements<T>(y), w.data<float>(), b.data<float>(), x.numel() / n, n,
                    elements<T>(out));
  });
  return {out};
#endif
}

PD_BUILD_OP(ct_add_scale_shift_bf16)
    .Inputs({"X", "Y", "W", "B"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(AddScaleShiftBf16Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfFourShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfFourDtype));

// ---- SqueezeBERT's grouped linear layers for the bf16 predictor: common/inference.py puts these in place of
// ct_grouped_linear, ct_grouped_linear_add_norm and ct_grouped_ffn_add_norm, marked bfloat16 like ct_attention_bf16
// (X, and the residual Y, are inputs paddle's cpu_bfloat16_pass converts), with the weights cast to bfloat16 (folded
// into parameters). X and Y float32 or bfloat16, Out of X's type; bf16 products summed in fp32 (oneDNN's gemm_bf16bf16f32, each on one thread), bias, GELU, residual and norm
// in fp32, the feed-forward's inner activations rounded to bf16 for the outer product. Their weights are
// [groups, out / groups, in / groups] (the fp32 operators' transposed back: oneDNN's bf16 GEMM ran X W^T faster).

extern "C" int dnnl_gemm_bf16bf16f32(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                                     const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta,
                                     float* c, int64_t ldc);

#ifdef __AVX512BF16__
namespace {

// C (m x n, ldc, fp32) = A B^T, A [m, k] (lda) and B [n, k] (ldb) bf16. True on failure.
bool gemm_bf16(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
               float* c, int64_t ldc) {
  return dnnl_gemm_bf16bf16f32('N', 'T', m, n, k, 1.f, a, lda, b, ldb, 0.f, c, ldc) != 0;
}

// The sizes of a bf16 grouped linear layer, weight W [groups, out / groups, in / groups].
LinearShape linear_shape_bf16(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
                              int64_t groups, const char* what) {
  const int64_t in = last_dim(x);
  const auto ws = w.shape();
  PD_CHECK(groups > 0 && in % groups == 0, what, ": channels ", in, " not divisible by groups ", groups);
  PD_CHECK(ws.size() == 3 && ws[0] == groups && ws[2] == in / groups, what, ": weight must be [groups, ",
           "out / groups, in / groups] = [", groups, ", out / groups, ", in / groups, "]");
  PD_CHECK(b.numel() == groups * ws[1], what, ": bias size != out channels ", groups * ws[1]);
  return {x.numel() / in, in, groups * ws[1], groups, in / groups, ws[1], in / groups};
}

// The bf16 elements of input x (float32 or bfloat16; a float32 one, e.g. a first-token slice, converted into
// ``converted``).
const uint16_t* bf16_input(const paddle::Tensor& x, std::vector<uint16_t>& converted, const char* what) {
  PD_CHECK(x.is_cpu() && (x.dtype() == paddle::DataType::BFLOAT16 || x.dtype() == paddle::DataType::FLOAT32), what,
           ": input must be a float32 or bfloat16 CPU tensor");
  if (x.dtype() == paddle::DataType::BFLOAT16) return elements<uint16_t>(x);
  converted.resize(x.numel());
  const int64_t n = last_dim(x), rows = x.numel() / n;
  const float* pf = x.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) to_bf16(pf + r * n, n, converted.data() + r * n);
  return converted.data();
}

void check_bf16_weight(const paddle::Tensor& w, const paddle::Tensor& b, const char* what) {
  PD_CHECK(w.dtype() == paddle::DataType::BFLOAT16 && w.is_cpu(), what, ": weight must be a bfloat16 CPU tensor");
  check_float(b, what);
}

// Rows [0, count) of out (width n, type O) = LayerNorm(y + bias + r) with y fp32 (overwritten) and r, the residual,
// of type R, both of row stride n.
template <class R, class O>
void bias_add_norm_to(float* y, const float* bias, const R* r, const float* gamma, const float* beta, float epsilon,
                      int64_t count, int64_t n, O* out) {
  for (int64_t row = 0; row < count; ++row) {
    float* v = y + row * n;
    __m512 total = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = first_lanes(n - i);
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(m, v + i), _mm512_maskz_loadu_ps(m, bias + i)),
                                       fp32_lanes(r + row * n + i, m));
      _mm512_mask_storeu_ps(v + i, m, sum);
      total = _mm512_add_ps(total, sum);  // zero past n
    }
    norm_row_to(v, total, gamma, beta, epsilon, n, out + row * n);
  }
}

// Out = X W + B per group (no norm: bias only, into out of type O).
template <class O>
bool grouped_linear_bf16(const uint16_t* x, const uint16_t* w, const float* bias, const LinearShape& s, O* out) {
  return linear_blocks(s, s.out_g, [&](int64_t g, int64_t first, int64_t count, float* c) {
    const bool failed = gemm_bf16(count, s.out_g, s.in_g, x + first * s.in + g * s.in_g, s.in,
                                  w + g * s.in_g * s.out_g, s.in_g, c, s.out_g);
    const float* b = bias + g * s.out_g;
    for (int64_t r = 0; r < count; ++r) {
      for (int64_t i = 0; i < s.out_g; i += 16) {
        const __mmask16 m = first_lanes(s.out_g - i);
        store_lanes(out + (first + r) * s.out + g * s.out_g + i, m,
                    _mm512_add_ps(_mm512_maskz_loadu_ps(m, c + r * s.out_g + i), _mm512_maskz_loadu_ps(m, b + i)));
      }
    }
    return failed;
  });
}

}  // namespace
#endif

std::vector<paddle::Tensor> GroupedLinearBf16Forward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                     const paddle::Tensor& b, int64_t groups) {
#ifndef __AVX512BF16__
  PD_THROW("ct_grouped_linear_bf16 needs a CPU with AVX512-BF16 (the operators were built for one without)");
#else
  check_bf16_weight(w, b, "ct_grouped_linear_bf16");
  std::vector<uint16_t> converted;
  const uint16_t* px = bf16_input(x, converted, "ct_grouped_linear_bf16");
  const LinearShape s = linear_shape_bf16(x, w, b, groups, "ct_grouped_linear_bf16");
  auto y = paddle::empty(with_last(x.shape(), s.out), x.dtype(), x.place());
  bool failed = false;
  by_element_type(x, [&](auto zero) {
    using T = decltype(zero);
    failed = grouped_linear_bf16(px, elements<uint16_t>(w), b.data<float>(), s, elements<T>(y));
  });
  PD_CHECK(!failed, "ct_grouped_linear_bf16: dnnl_gemm_bf16bf16f32 failed");
  return {y};
#endif
}

// The bf16 grouped operators' output shape: X's with out = groups x out / groups channels (their weight layout).
std::vector<std::vector<int64_t>> GroupedLinearBf16Shape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                         const std::vector<int64_t>&) {
  return {with_last(x, w[0] * w[1])};
}

PD_BUILD_OP(ct_grouped_linear_bf16)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t"})
    .SetKernelFn(PD_KERNEL(GroupedLinearBf16Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(GroupedLinearBf16Shape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfThreeDtype));

std::vector<paddle::Tensor> GroupedLinearAddNormBf16Forward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                            const paddle::Tensor& b, const paddle::Tensor& r,
                                                            const paddle::Tensor& gamma, const paddle::Tensor& beta,
                                                            int64_t groups, float epsilon) {
#ifndef __AVX512BF16__
  PD_THROW("ct_grouped_linear_add_norm_bf16 needs a CPU with AVX512-BF16 (the operators were built for one without)");
#else
  const char* what = "ct_grouped_linear_add_norm_bf16";
  check_bf16_weight(w, b, what);
  std::vector<uint16_t> converted;
  const uint16_t* px = bf16_input(x, converted, what);
  const LinearShape s = linear_shape_bf16(x, w, b, groups, what);
  const auto shape = with_last(x.shape(), s.out);
  PD_CHECK(r.is_cpu() && r.shape() == shape &&
               (r.dtype() == paddle::DataType::FLOAT32 || r.dtype() == paddle::DataType::BFLOAT16),
           what, ": the residual must be a float32 or bfloat16 CPU tensor of the output's shape");
  check_norm_params(gamma, beta, s.out, what);
  auto y = paddle::empty(shape, x.dtype(), x.place());
  const uint16_t* pw = elements<uint16_t>(w);
  bool failed = false;
  by_element_type(x, [&](auto out_zero) {
    using O = decltype(out_zero);
    by_element_type(r, [&](auto res_zero) {
      using R = decltype(res_zero);
      failed = row_blocks(RowBlocks(s.rows), s.out, [&](int64_t first, int64_t count, float* c) {
        bool bad = false;
        for (int64_t g = 0; g < s.groups; ++g) {
          bad = gemm_bf16(count, s.out_g, s.in_g, px + first * s.in + g * s.in_g, s.in, pw + g * s.in_g * s.out_g,
                          s.in_g, c + g * s.out_g, s.out) || bad;
        }
        bias_add_norm_to(c, b.data<float>(), elements<R>(r) + first * s.out, gamma.data<float>(), beta.data<float>(),
                         epsilon, count, s.out, elements<O>(y) + first * s.out);
        return bad;
      });
    });
  });
  PD_CHECK(!failed, what, ": dnnl_gemm_bf16bf16f32 failed");
  return {y};
#endif
}

std::vector<std::vector<int64_t>> GroupedLinearAddNormBf16Shape(const std::vector<int64_t>& x,
                                                                const std::vector<int64_t>& w,
                                                                const std::vector<int64_t>&, const std::vector<int64_t>&,
                                                                const std::vector<int64_t>&,
                                                                const std::vector<int64_t>&) {
  return {with_last(x, w[0] * w[1])};
}

PD_BUILD_OP(ct_grouped_linear_add_norm_bf16)
    .Inputs({"X", "W", "B", "Y", "Gamma", "Beta"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(GroupedLinearAddNormBf16Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(GroupedLinearAddNormBf16Shape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfSixDtype));

std::vector<paddle::Tensor> GroupedFfnAddNormBf16Forward(const paddle::Tensor& x, const paddle::Tensor& w1,
                                                         const paddle::Tensor& b1, const paddle::Tensor& w2,
                                                         const paddle::Tensor& b2, const paddle::Tensor& gamma,
                                                         const paddle::Tensor& beta, int64_t groups, float epsilon) {
#ifndef __AVX512BF16__
  PD_THROW("ct_grouped_ffn_add_norm_bf16 needs a CPU with AVX512-BF16 (the operators were built for one without)");
#else
  const char* what = "ct_grouped_ffn_add_norm_bf16";
  check_bf16_weight(w1, b1, what);
  check_bf16_weight(w2, b2, what);
  std::vector<uint16_t> converted;
  const uint16_t* px = bf16_input(x, converted, what);
  const LinearShape inner = linear_shape_bf16(x, w1, b1, groups, what);
  const int64_t in = inner.in, in_g = inner.in_g, mid_g = inner.out_g;
  const auto ws = w2.shape();
  PD_CHECK(ws.size() == 3 && ws[0] == groups && ws[1] == in_g && ws[2] == mid_g && b2.numel() == in, what,
           ": outer weight must be [", groups, ", ", in_g, ", ", mid_g, "], its bias [", in, "]");
  check_norm_params(gamma, beta, in, what);
  auto y = paddle::empty(x.shape(), x.dtype(), x.place());
  const uint16_t *pw1 = elements<uint16_t>(w1), *pw2 = elements<uint16_t>(w2);
  const float* pb1 = b1.data<float>();
  const RowBlocks blocks(inner.rows);
  bool failed = false;
  by_element_type(x, [&](auto zero) {
    using T = decltype(zero);
    // scratch per row: the inner product (fp32), its GELU in bf16 (in floats' room), the outer product
    failed = row_blocks(blocks, mid_g + (mid_g + 1) / 2 + in, [&](int64_t first, int64_t count, float* c) {
      uint16_t* h = reinterpret_cast<uint16_t*>(c + blocks.size * mid_g);
      float* o = c + blocks.size * (mid_g + (mid_g + 1) / 2);
      bool bad = false;
      for (int64_t g = 0; g < groups; ++g) {
        bad = gemm_bf16(count, mid_g, in_g, px + first * in + g * in_g, in, pw1 + g * in_g * mid_g, in_g, c, mid_g) ||
              bad;
        const float* bias = pb1 + g * mid_g;
        for (int64_t r = 0; r < count; ++r) {
          bias_gelu_row(c + r * mid_g, bias, mid_g);
          to_bf16(c + r * mid_g, mid_g, h + r * mid_g);
        }
        bad = gemm_bf16(count, in_g, mid_g, h, mid_g, pw2 + g * mid_g * in_g, mid_g, o + g * in_g, in) || bad;
      }
      bias_add_norm_to(o, b2.data<float>(), elements<T>(x) + first * in, gamma.data<float>(), beta.data<float>(),
                       epsilon, count, in, elements<T>(y) + first * in);
      return bad;
    });
  });
  PD_CHECK(!failed, what, ": dnnl_gemm_bf16bf16f32 failed");
  return {y};
#endif
}

PD_BUILD_OP(ct_grouped_ffn_add_norm_bf16)
    .Inputs({"X", "W1", "B1", "W2", "B2", "Gamma", "Beta"})
    .Outputs({"Out"})
    .Attrs({"groups: int64_t", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(GroupedFfnAddNormBf16Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfSevenShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfSevenDtype));

std::vector<paddle::Tensor> GroupedSelfAttentionBf16Forward(const paddle::Tensor& x, const paddle::Tensor& w,
                                                            const paddle::Tensor& b, const paddle::Tensor& m,
                                                            int64_t heads, float scale) {
#ifndef __AVX512BF16__
  PD_THROW("ct_grouped_self_attention_bf16 needs a CPU with AVX512-BF16 (the operators were built for one without)");
#else
  const char* what = "ct_grouped_self_attention_bf16";
  check_bf16_weight(w, b, what);
  std::vector<uint16_t> converted;
  const uint16_t* px = bf16_input(x, converted, what);
  const auto ws = w.shape();
  PD_CHECK(ws.size() == 3, what, ": weight must be [groups, 3 * channels / groups, channels / groups]");
  const SelfAttentionShape s = self_attention_shape(x, ws[0], ws[2], ws[1], b, heads, what);
  const int64_t ld = 3 * s.width_g;
  const AttentionMask additive(m, s.batch, s.len, s.len);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  const uint16_t* pw = elements<uint16_t>(w);
  const float* pb = b.data<float>();
  bool failed = false;
  by_element_type(x, [&](auto zero) {
    using T = decltype(zero);
    T* po = elements<T>(out);
#pragma omp parallel reduction(|| : failed)
    {
      Scratch<float> qkv(s.len * ld);
      HeadBuffers buffers(s.len, s.len, s.size, scale);
#pragma omp for collapse(2) schedule(static)
      for (int64_t n = 0; n < s.batch; ++n) {
        for (int64_t g = 0; g < s.groups; ++g) {
          failed = gemm_bf16(s.len, ld, s.in_g, px + n * s.len * s.channels + g * s.in_g, s.channels, pw + g * ld * s.in_g,
                             s.in_g, qkv.data(), ld) || failed;
          add_bias_rows(qkv.data(), ld, pb + g * ld, s.len, ld);
          for (int64_t h = 0; h < s.group_heads; ++h) {
            const float* q = qkv.data() + h * s.size;
            attend_head_bf16(q, ld, q + s.width_g, q + 2 * s.width_g, ld, s.len, s.len, s.size, additive, n, buffers,
                             po + n * s.len * s.channels + g * s.width_g + h * s.size, s.channels);
          }
        }
      }
    }
  });
  PD_CHECK(!failed, what, ": dnnl_gemm_bf16bf16f32 failed");
  return {out};
#endif
}

// X as ct_grouped_self_attention's, W [groups, 3 * channels / groups, channels / groups] bf16 (its weight transposed
// back), marked bfloat16 in bf16 predictors by common/inference.py like the other grouped operators.
PD_BUILD_OP(ct_grouped_self_attention_bf16)
    .Inputs({"X", "W", "B", "M"})
    .Outputs({"Out"})
    .Attrs({"heads: int64_t", "scale: float"})
    .SetKernelFn(PD_KERNEL(GroupedSelfAttentionBf16Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(FirstOfFourShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FirstOfFourDtype));
