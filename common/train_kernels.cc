// Multi-threaded fp32 CPU kernels for fine-tuning (paddle custom operators, see common/train_kernels.py).
// paddle 2.6.2's own CPU kernels for these ops run on one thread; GEMMs stay paddle's (MKL).
// Every op takes contiguous row-major tensors (the Python side makes them so) whose last dimension
// is the feature dimension.
#include "paddle/extension.h"

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

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
  std::vector<float> data_;
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
  return {map_with_bias(x, b, "bias_gelu input", [](float v) { return 0.5f * v * (1.f + erff(v * kInvSqrt2)); })};
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
      const float v = px[r * n + i] + pb[i];
      const float cdf = 0.5f * (1.f + erff(v * kInvSqrt2));
      const float pdf = kInvSqrt2Pi * expf(-0.5f * v * v);
      pg[r * n + i] = pd[r * n + i] * (cdf + v * pdf);
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
  check_float(m, "attention mask");
  const auto shape = s.shape();
  PD_CHECK(shape.size() == 4, "attention scores must be [batch, heads, query, key]");
  const int64_t batch = shape[0], heads = shape[1], q = shape[2], k = shape[3];
  const auto mshape = m.shape();
  PD_CHECK(mshape.size() == 4 && mshape[0] == batch && mshape[1] == 1 && (mshape[2] == 1 || mshape[2] == q) &&
               mshape[3] == k,
           "attention mask must be [batch, 1, 1 or query, key]");
  const bool per_query = mshape[2] == q && q != 1;
  auto out = paddle::empty(shape, s.dtype(), s.place());
  auto probs = paddle::empty(shape, s.dtype(), s.place());
  auto mask = paddle::empty(shape, paddle::DataType::UINT8, s.place());
  const float *ps = s.data<float>(), *pmask = m.data<float>();
  float *po = out.data<float>(), *pp = probs.data<float>();
  uint8_t* pk = mask.data<uint8_t>();
  const uint64_t threshold = threshold_of(p), sd = static_cast<uint64_t>(seed);
  const float keep_scale = 1.f / (1.f - p);
  const int64_t rows = batch * heads * q;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (heads * q), qi = r % q;
    const float* add = pmask + (b * (per_query ? q : 1) + (per_query ? qi : 0)) * k;
    const float* row = ps + r * k;
    float* prow = pp + r * k;
    float mx = row[0] * scale + add[0];  // not -INFINITY: fast-math assumes finite values
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < k; ++i) {
      prow[i] = row[i] * scale + add[i];
      mx = prow[i] > mx ? prow[i] : mx;
    }
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < k; ++i) {
      prow[i] = expf(prow[i] - mx);
      sum += prow[i];
    }
    const float inv = 1.f / sum;
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) {
      prow[i] *= inv;
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
