// posttrain_lean::step: `rollout/lean.py` LeanLlama.step, the same ATen calls in the same order (so the same values
// bit for bit), with no Python between them. Built and loaded by `rollout/native.py`; float32 on a CPU, the
// `_Linear` kinds "mkl" (MKL's packed sgemm), "onednn" (oneDNN's prepacked weight) and "avx2" (`panel_linear`
// below, also the op `linear` that the Python step calls, so that both run the same products). Argument layout:
//   cache:  per layer (keys and values [B, 2 KV, len, D], its keys view, its values view)
//   params: embed, final norm weight, then per layer ln1?, ln2? (None: folded into the next linear), then the
//           layer's 4 linears (qkv, o, gate/up, down), each (packed, weight?, bias?, pad?)
//   meta:   heads, KV heads, head dim, linear kind (0 mkl, 1 onednn, 2 avx2), then per layer the MLP width and
//           per linear its packed row count (mkl) or its output width (avx2)
// `advance` is `step`, then the output head (params and meta end with the head's linear and its row count), then
// `hf.sample_next` for greedy (temperature 0) or unfiltered sampling with the rows' uniforms `u` [B, 1]: the next
// tokens and their log-probs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define POSTTRAIN_AVX2 1
#endif

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

Tensor mkl_linear(const Tensor& x, const Tensor& packed, const Tensor& weight, const OptTensor& bias, int64_t m) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkl::_mkl_linear", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, int64_t)>();
  return op.call(x, packed, weight, bias, m);
}

Tensor onednn_linear(const Tensor& x, const Tensor& packed, const OptTensor& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const OptTensor&, c10::string_view,
                                     c10::List<std::optional<c10::Scalar>>, std::optional<c10::string_view>)>();
  return op.call(x, packed, bias, "none", c10::List<std::optional<c10::Scalar>>(), "");
}

// y = x W^T + b for x [M, K] float32 (rows contiguous) and W prepacked in panels of 16 output columns, `panels`
// [ceil(N / 16), K, 16] (panel p, row k holds W[16 p .. 16 p + 15, k]; zero past N; `lean_linear.pack_panels`), `bias`
// (None, or zero-padded to the panels' 16 ceil(N / 16)): the weights stream once per 64 rows, in the order the
// kernel reads them. The kernel is the usual register-blocked one: 6 rows x 16 columns of accumulators (12 AVX
// registers), per k two loads of the panel, one broadcast per row and two fused multiply-adds per row: each output
// one chain of fused multiply-adds in k order, then + b (the bench's generate gave oneDNN's log-probs bit for bit;
// MKL's blocking sums in another order, ~1e-7 apart). The panels are split between the threads
// (`at::parallel_for`). A decode step's 16 rows x 17 linears of the bench's tiny-llama on 2 threads of a Zen 3
// EPYC: 1.4 ms here, 2.2 ms on oneDNN (bench/README.md, "The decode's linears on an AVX2 kernel").
constexpr int64_t PANEL = 16, ROW_BLOCK = 6, ROWS_PER_PASS = 64;

#ifdef POSTTRAIN_AVX2
template <int R>
__attribute__((target("avx2,fma"))) inline void panel_rows(const float* x, int64_t k, const float* p,
                                                            const float* bias, float* y, int64_t ly) {
  __m256 lo[R], hi[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
  for (int64_t t = 0; t < k; ++t) {
    const __m256 w0 = _mm256_loadu_ps(p + t * PANEL), w1 = _mm256_loadu_ps(p + t * PANEL + 8);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256 a = _mm256_broadcast_ss(x + i * k + t);
      lo[i] = _mm256_fmadd_ps(a, w0, lo[i]);
      hi[i] = _mm256_fmadd_ps(a, w1, hi[i]);
    }
  }
  if (bias) {   // added to the finished sum, as F.linear does
    const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      lo[i] = _mm256_add_ps(lo[i], b0);
      hi[i] = _mm256_add_ps(hi[i], b1);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    _mm256_storeu_ps(y + i * ly, lo[i]);
    _mm256_storeu_ps(y + i * ly + 8, hi[i]);
  }
}

// rows [0, m) of x times one panel into columns [0, width) of y (row stride n); width < 16 (the last panel of an
// N that is not a multiple of 16) goes through a scratch block
__attribute__((target("avx2,fma"))) void panel(const float* x, int64_t m, int64_t k, const float* p,
                                               const float* bias, float* y, int64_t n, int64_t width) {
  float scratch[ROW_BLOCK * PANEL];
  for (int64_t i = 0; i < m; i += ROW_BLOCK) {
    const int64_t r = std::min(ROW_BLOCK, m - i);
    float* out = width == PANEL ? y + i * n : scratch;
    const int64_t ly = width == PANEL ? n : PANEL;
    const float* xi = x + i * k;
    switch (r) {
      case 6: panel_rows<6>(xi, k, p, bias, out, ly); break;
      case 5: panel_rows<5>(xi, k, p, bias, out, ly); break;
      case 4: panel_rows<4>(xi, k, p, bias, out, ly); break;
      case 3: panel_rows<3>(xi, k, p, bias, out, ly); break;
      case 2: panel_rows<2>(xi, k, p, bias, out, ly); break;
      default: panel_rows<1>(xi, k, p, bias, out, ly); break;
    }
    if (width != PANEL)
      for (int64_t j = 0; j < r; ++j) std::memcpy(y + (i + j) * n, scratch + j * PANEL, width * sizeof(float));
  }
}

bool avx2_here() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#else
bool avx2_here() { return false; }
#endif

Tensor panel_linear(const Tensor& x, const Tensor& panels, const OptTensor& bias, int64_t n) {
  TORCH_CHECK(avx2_here(), "posttrain_lean::linear needs an x86 CPU with AVX2 and FMA");
  TORCH_CHECK(x.dim() == 2 && panels.dim() == 3 && panels.size(2) == PANEL && panels.size(1) == x.size(1)
              && panels.size(0) * PANEL >= n && n > (panels.size(0) - 1) * PANEL && x.scalar_type() == at::kFloat
              && panels.scalar_type() == at::kFloat && panels.is_contiguous()
              && (!bias.has_value() || (bias->is_contiguous() && bias->numel() == panels.size(0) * PANEL)),
              "posttrain_lean::linear takes float32 x [M, K], panels [ceil(N / 16), K, 16] and a padded bias");
  const Tensor xc = x.contiguous();
  const int64_t m = xc.size(0), k = xc.size(1), count = panels.size(0);
  Tensor y = at::empty({m, n}, xc.options());
#ifdef POSTTRAIN_AVX2
  const float* xp = xc.data_ptr<float>();
  const float* pp = panels.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  for (int64_t r0 = 0; r0 < m; r0 += ROWS_PER_PASS) {
    const int64_t rows = std::min(ROWS_PER_PASS, m - r0);
    at::parallel_for(0, count, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; ++j)
        panel(xp + r0 * k, rows, k, pp + j * k * PANEL, bp ? bp + j * PANEL : nullptr, yp + r0 * n + j * PANEL, n,
              std::min(PANEL, n - j * PANEL));
    });
  }
#endif
  return y;
}

struct Linear {
  Tensor packed;
  OptTensor weight, bias, pad;
  int64_t rows;   // mkl: the packed row count; avx2: the output width
  int64_t kind;   // 0 mkl, 1 onednn, 2 avx2

  // lean._Linear.__call__ once packed for this row count (`_Linear.fit`): rows finished are padded up to the packed
  // row count and the extra outputs dropped
  Tensor operator()(const Tensor& x) const {
    if (kind == 2) return panel_linear(x, packed, bias, rows);
    if (kind == 1) return onednn_linear(x, packed, bias);
    const int64_t m = x.size(0);
    if (m == rows) return mkl_linear(x, packed, *weight, bias, m);
    pad->slice(0, 0, m).copy_(x);
    return mkl_linear(*pad, packed, *weight, bias, rows).slice(0, 0, m);
  }
};

// lean._rms for float32: x * rsqrt(eps + sum(x * x) / width), then the weight unless folded
Tensor rms(const Tensor& x, const OptTensor& weight, const Tensor& eps, const Tensor& width) {
  Tensor h = x * at::addcdiv(eps, (x * x).sum(-1, true), width).rsqrt_();
  return weight.has_value() ? *weight * h : h;
}

// lean._rotate of q/k/v [B, H + 2 KV, 1, D] (contiguous) at its rows' tables (the same shape), x * cos +
// roll(x, D / 2) * sin, with the same two products and one sum per element as those three ATen calls (each rounded;
// built with -ffp-contract=off: no fused multiply-add), in one pass that writes the k/v heads straight into cache
// slot `slot` of `c` [B, 2 KV, len, D] (the copy `c[:, :, slot] = r[:, H:]`) and returns the q heads [B, H, 1, D]
Tensor rotate_into(const Tensor& qkv, const Tensor& cos, const Tensor& sin, const Tensor& c, int64_t h, int64_t slot) {
  TORCH_CHECK(qkv.is_contiguous() && cos.is_contiguous() && sin.is_contiguous() && c.stride(3) == 1
              && qkv.scalar_type() == at::kFloat && cos.scalar_type() == at::kFloat && c.scalar_type() == at::kFloat,
              "posttrain_lean: rotate_into takes contiguous float32 q/k/v and tables");
  const int64_t b = qkv.size(0), heads = qkv.size(1), d = qkv.size(3), half = d / 2;
  Tensor q = at::empty({b, h, 1, d}, qkv.options());
  const float* x = qkv.data_ptr<float>();
  const float* cs = cos.data_ptr<float>();
  const float* sn = sin.data_ptr<float>();
  float* qo = q.data_ptr<float>();
  float* co = c.data_ptr<float>();
  const int64_t cb = c.stride(0), ch = c.stride(1), cl = c.stride(2);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < heads; ++j) {
      const int64_t at = (i * heads + j) * d;
      const float* xr = x + at;
      const float* cr = cs + at;
      const float* sr = sn + at;
      float* out = j < h ? qo + (i * h + j) * d : co + i * cb + (j - h) * ch + slot * cl;
      for (int64_t k = 0; k < half; ++k) {
        const float a = xr[k] * cr[k], r = xr[k + half] * sr[k];
        out[k] = a + r;
      }
      for (int64_t k = half; k < d; ++k) {
        const float a = xr[k] * cr[k], r = xr[k - half] * sr[k];
        out[k] = a + r;
      }
    }
  }
  return q;
}

Tensor hidden(const std::vector<OptTensor>& p, const Tensor& tokens, const Tensor& cos, const Tensor& sin,
              at::TensorList cache, int64_t slot, const OptTensor& mask, at::IntArrayRef meta,
              at::ArrayRef<double> scales, const Tensor& eps, const Tensor& width) {
  const int64_t b = tokens.size(0), h = meta[0], kv = meta[1], d = meta[2];
  const int64_t kind = meta[3];
  const int64_t layers = static_cast<int64_t>(cache.size()) / 3;
  Tensor x = p[0]->index_select(0, tokens);                                    // [B, hidden]
  size_t i = 2, j = 4;
  for (int64_t layer = 0; layer < layers; ++layer) {
    const Tensor& c = cache[3 * layer];
    const Tensor& k = cache[3 * layer + 1];
    const Tensor& v = cache[3 * layer + 2];
    const OptTensor& ln1 = p[i];
    const OptTensor& ln2 = p[i + 1];
    i += 2;
    const int64_t inter = meta[j++];
    Linear lin[4];
    for (auto& l : lin) {
      l = Linear{*p[i], p[i + 1], p[i + 2], p[i + 3], meta[j++], kind};
      i += 4;
    }
    Tensor qkv = lin[0](rms(x, ln1, eps, width)).view({b, h + 2 * kv, 1, d});
    Tensor q = rotate_into(qkv, cos, sin, c, h, slot);                          // lean._rotate, k/v to the cache
    Tensor att = at::scaled_dot_product_attention(q, k.slice(2, 0, slot + 1), v.slice(2, 0, slot + 1),
                                                 mask, 0.0, false, scales[layer], h != kv);
    x = x + lin[1](att.view({b, h * d}));
    Tensor gu = lin[2](rms(x, ln2, eps, width));
    x = x + lin[3](at::silu(gu.slice(1, 0, inter)) * gu.slice(1, inter));
  }
  return rms(x, p[1], eps, width);
}

void check_counts(const char* name, size_t params, size_t meta, size_t scales, size_t cache, size_t head) {
  const size_t layers = cache / 3;
  TORCH_CHECK(params == 2 + layers * 18 + 4 * head && meta == 4 + layers * 5 + head && scales == layers,
              "posttrain_lean::", name, ": argument counts do not match the layers");
}

Tensor step(const Tensor& tokens, const Tensor& cos, const Tensor& sin, at::TensorList cache, int64_t slot,
            const OptTensor& mask, const c10::List<OptTensor>& params, at::IntArrayRef meta,
            at::ArrayRef<double> scales, const Tensor& eps, const Tensor& width) {
  check_counts("step", params.size(), meta.size(), scales.size(), cache.size(), 0);
  std::vector<OptTensor> p(params.begin(), params.end());
  return hidden(p, tokens, cos, sin, cache, slot, mask, meta, scales, eps, width);
}

// hf.sample_next without top-k / top-p: greedy (temperature 0: argmax), else inverse CDF at u * total (hf.draw)
std::tuple<Tensor, Tensor> sample(const Tensor& logits, const OptTensor& u, double temperature) {
  if (temperature == 0.0) {
    Tensor tokens = logits.argmax(-1);
    return {tokens, at::log_softmax(logits, -1).gather(1, tokens.unsqueeze(1)).squeeze(1)};
  }
  TORCH_CHECK(u.has_value(), "posttrain_lean::advance: sampling needs the rows' uniforms");
  Tensor scaled = temperature != 1.0 ? logits / temperature : logits;
  Tensor logps = at::log_softmax(scaled, -1);
  Tensor cdf = logps.exp().cumsum(-1);
  Tensor total = cdf.slice(1, cdf.size(1) - 1).contiguous();
  Tensor top = at::searchsorted(cdf, total);
  Tensor tokens = at::minimum(at::searchsorted(cdf, *u * total, false, true), top).squeeze(1);
  return {tokens, logps.gather(1, tokens.unsqueeze(1)).squeeze(1)};
}

std::tuple<Tensor, Tensor> advance(const Tensor& tokens, const Tensor& pos, const Tensor& cos_table,
                                   const Tensor& sin_table, at::TensorList cache, int64_t slot, const OptTensor& mask,
                                   const c10::List<OptTensor>& params, at::IntArrayRef meta,
                                   at::ArrayRef<double> scales, const Tensor& eps, const Tensor& width,
                                   const OptTensor& u, double temperature) {
  check_counts("advance", params.size(), meta.size(), scales.size(), cache.size(), 1);
  std::vector<OptTensor> p(params.begin(), params.end());
  const size_t n = p.size();
  Tensor x = hidden(p, tokens, cos_table.index_select(0, pos), sin_table.index_select(0, pos), cache, slot, mask,
                    meta, scales, eps, width);
  Linear head{*p[n - 4], p[n - 3], p[n - 2], p[n - 1], meta[meta.size() - 1], meta[3]};
  return sample(head(x), u, temperature);
}

}  // namespace

// a catch-all kernel: the packed weights are MkldnnCPU tensors, the rest CPU ones
TORCH_LIBRARY(posttrain_lean, m) {
  m.def("step(Tensor tokens, Tensor cos, Tensor sin, Tensor[] cache, int slot, Tensor? mask, Tensor?[] params, "
        "int[] meta, float[] scales, Tensor eps, Tensor width) -> Tensor",
        TORCH_FN(step));
  m.def("advance(Tensor tokens, Tensor pos, Tensor cos, Tensor sin, Tensor[] cache, int slot, Tensor? mask, "
        "Tensor?[] params, int[] meta, float[] scales, Tensor eps, Tensor width, Tensor? u, float temperature) "
        "-> (Tensor, Tensor)",
        TORCH_FN(advance));
  m.def("linear(Tensor x, Tensor panels, Tensor? bias, int n) -> Tensor", TORCH_FN(panel_linear));
}
