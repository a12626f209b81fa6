// posttrain_lean::step: `rollout/lean.py` LeanLlama.step, the same ATen calls in the same order (so the same values
// bit for bit), with no Python between them. Built and loaded by `rollout/native.py`; float32 on a CPU, the
// `_Linear` kinds "mkl" (MKL's packed sgemm) and "onednn" (oneDNN's prepacked weight). Argument layout:
//   cache:  per layer (keys and values [B, 2 KV, len, D], its keys view, its values view)
//   params: embed, final norm weight, then per layer ln1?, ln2? (None: folded into the next linear), then the
//           layer's 4 linears (qkv, o, gate/up, down), each (packed, weight?, bias?, pad?)
//   meta:   heads, KV heads, head dim, linear kind (0 mkl, 1 onednn), then per layer the MLP width and the 4
//           linears' packed row counts (mkl)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <vector>

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

struct Linear {
  Tensor packed;
  OptTensor weight, bias, pad;
  int64_t rows;
  bool mkl;

  // lean._Linear.__call__ once packed for this row count (`_Linear.fit`): rows finished are padded up to the packed
  // row count and the extra outputs dropped
  Tensor operator()(const Tensor& x) const {
    if (!mkl) return onednn_linear(x, packed, bias);
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

Tensor step(const Tensor& tokens, const Tensor& cos, const Tensor& sin, at::TensorList cache, int64_t slot,
            const OptTensor& mask, const c10::List<OptTensor>& params, at::IntArrayRef meta,
            at::ArrayRef<double> scales, const Tensor& eps, const Tensor& width) {
  const int64_t b = tokens.size(0), h = meta[0], kv = meta[1], d = meta[2];
  const bool mkl = meta[3] == 0;
  const int64_t layers = static_cast<int64_t>(cache.size()) / 3;
  TORCH_CHECK(static_cast<int64_t>(params.size()) == 2 + layers * 18 && static_cast<int64_t>(meta.size()) == 4 + layers * 5
              && static_cast<int64_t>(scales.size()) == layers, "posttrain_lean::step: argument counts do not match the layers");
  std::vector<OptTensor> p(params.begin(), params.end());
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
      l = Linear{*p[i], p[i + 1], p[i + 2], p[i + 3], meta[j++], mkl};
      i += 4;
    }
    Tensor qkv = lin[0](rms(x, ln1, eps, width)).view({b, h + 2 * kv, 1, d});
    Tensor r = qkv * cos + qkv.roll({d / 2}, {-1}) * sin;                      // lean._rotate
    c.slice(2, slot, slot + 1).copy_(r.slice(1, h));
    Tensor att = at::scaled_dot_product_attention(r.slice(1, 0, h), k.slice(2, 0, slot + 1), v.slice(2, 0, slot + 1),
                                                 mask, 0.0, false, scales[layer], h != kv);
    x = x + lin[1](att.view({b, h * d}));
    Tensor gu = lin[2](rms(x, ln2, eps, width));
    x = x + lin[3](at::silu(gu.slice(1, 0, inter)) * gu.slice(1, inter));
  }
  return rms(x, p[1], eps, width);
}

}  // namespace

// a catch-all kernel: the packed weights are MkldnnCPU tensors, the rest CPU ones
TORCH_LIBRARY(posttrain_lean, m) {
  m.def("step(Tensor tokens, Tensor cos, Tensor sin, Tensor[] cache, int slot, Tensor? mask, Tensor?[] params, "
        "int[] meta, float[] scales, Tensor eps, Tensor width) -> Tensor",
        TORCH_FN(step));
}
