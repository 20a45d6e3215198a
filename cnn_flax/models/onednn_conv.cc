// Convolutions in oneDNN, called from XLA:CPU through the XLA FFI (see onednn.py, which builds and registers this).
//
// Three handlers, one per pass: the forward convolution, its input gradient and its kernel gradient. Activations
// are NHWC and kernels HWIO, JAX's channels-last layout, so nothing is transposed on the way in or out; a kernel is
// reordered into the layout oneDNN's primitive prefers (blocked) on each call, which costs little next to the
// convolution. Grouped convolutions (depthwise included) take a `groups` attribute.
//
// A primitive is created once per shape (oneDNN generates its kernel then) and kept in a cache; calls are
// serialised (onednn_common.h says why).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "onednn_common.h"

namespace ffi = xla::ffi;
using cnn_flax::Engine;
using cnn_flax::OwnScratchpad;
using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

namespace {

// One convolution's shapes in oneDNN's terms (NCHW-ordered dims; the memory layouts say where elements lie).
struct Geometry {
  dims src, weights, dst, strides, pad_low, pad_high;
  dims weight_strides;  // HWIO's strides for `weights`
  std::string Key(char pass) const {
    std::string key(1, pass);
    for (const dims* d : {&src, &weights, &dst, &strides, &pad_low, &pad_high})
      for (auto v : *d) key += "," + std::to_string(v);
    return key;
  }
};

Geometry MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
                      ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, int64_t groups) {
  const int64_t kh = w[0], kw = w[1], in_per_group = w[2], out = w[3];
  Geometry g{{x[0], x[3], x[1], x[2]}, {}, {y[0], y[3], y[1], y[2]},
             {strides[0], strides[1]}, {padding[0], padding[2]}, {padding[1], padding[3]}, {}};
  if (groups == 1) {
    g.weights = {out, in_per_group, kh, kw};
    g.weight_strides = {1, out, kw * in_per_group * out, in_per_group * out};
  } else {  // the output channels of group k are k * out/groups ... (k+1) * out/groups - 1, as in XLA
    g.weights = {groups, out / groups, in_per_group, kh, kw};
    g.weight_strides = {out / groups, 1, out, kw * in_per_group * out, in_per_group * out};
  }
  return g;
}

dnnl::memory::desc Activations(const dims& d) { return dnnl::memory::desc(d, dt::f32, tag::nhwc); }
dnnl::memory::desc AnyLayout(const dims& d) { return dnnl::memory::desc(d, dt::f32, tag::any); }
dnnl::memory::desc Hwio(const Geometry& g) { return dnnl::memory::desc(g.weights, dt::f32, g.weight_strides); }

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, Activations(g.src),
      AnyLayout(g.weights), Activations(g.dst), g.strides, g.pad_low, g.pad_high, OwnScratchpad());
}

struct Primitive {
  dnnl::primitive run;
  dnnl::memory::desc weights;             // the layout the primitive reads or writes its (diff) weights in
  dnnl::memory::desc scratchpad;          // the scratch memory each execution needs
  std::unique_ptr<dnnl::reorder> reorder;  // HWIO -> that layout (or back, for the kernel gradient), if they differ
};

// Guarded by cnn_flax::RunMutex(), which every handler holds for its whole call.
std::unordered_map<std::string, std::shared_ptr<Primitive>> cache;

// Call with cnn_flax::RunMutex() held.
template <typename Make>
std::shared_ptr<Primitive> Cached(const std::string& key, Make make) {
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  return cache.emplace(key, make()).first->second;
}

template <typename Kind>
std::shared_ptr<Primitive> Finish(const Geometry& g, const typename Kind::primitive_desc& pd,
                                  const dnnl::memory::desc& weights, bool weights_are_output) {
  auto p = std::make_shared<Primitive>();
  p->run = Kind(pd);
  p->weights = weights;
  p->scratchpad = pd.scratchpad_desc();
  if (weights != Hwio(g)) {
    auto& e = Engine();
    p->reorder = std::make_unique<dnnl::reorder>(
        weights_are_output ? dnnl::reorder::primitive_desc(e, weights, e, Hwio(g))
                           : dnnl::reorder::primitive_desc(e, Hwio(g), e, weights));
  }
  return p;
}

// The kernel in the primitive's layout: `hwio` itself, or a reordered copy.
dnnl::memory KernelFor(const Primitive& p, dnnl::memory hwio, dnnl::stream& s) {
  if (!p.reorder) return hwio;
  dnnl::memory copy(p.weights, Engine());
  p.reorder->execute(s, hwio, copy);
  return copy;
}

// The padding must be exact, (out - 1) * stride + k == low + in + high (onednn.py makes it so): with more,
// oneDNN's im2col kernels read past the input.
ffi::Error CheckExact(const Geometry& g) {
  for (int i = 0; i < 2; ++i) {
    const int64_t kernel = g.weights[g.weights.size() - 2 + i];
    if ((g.dst[2 + i] - 1) * g.strides[i] + kernel != g.pad_low[i] + g.src[2 + i] + g.pad_high[i])
      return ffi::Error(ffi::ErrorCode::kInvalidArgument, "oneDNN convolution: padding not exact for the output");
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, int64_t groups) {
  try {
    Geometry g = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), strides, padding, groups);
    if (auto bad = CheckExact(g); bad.failure()) return bad;
    std::lock_guard<std::mutex> lock(cnn_flax::RunMutex());  // creation too: see onednn_common.h
    auto p = Cached(g.Key('f'), [&] {
      auto pd = ForwardDesc(g);
      return Finish<dnnl::convolution_forward>(g, pd, pd.weights_desc(), false);
    });
    auto& e = Engine();
    dnnl::stream s(e);
    dnnl::memory kernel = KernelFor(*p, dnnl::memory(Hwio(g), e, w.typed_data()), s);
    p->run.execute(s, {{DNNL_ARG_SRC, dnnl::memory(Activations(g.src), e, x.typed_data())},
                       {DNNL_ARG_WEIGHTS, kernel},
                       {DNNL_ARG_DST, dnnl::memory(Activations(g.dst), e, y->typed_data())},
                       {DNNL_ARG_SCRATCHPAD, dnnl::memory(p->scratchpad, e)}});
    s.wait();
  } catch (const dnnl::error& e) {
    return cnn_flax::Failed("oneDNN convolution", e);
  }
  return ffi::Error::Success();
}

// The input gradient from the output gradient and the kernel (the input's shape is the result's).
ffi::Error InputGradient(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx,
                         ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, int64_t groups) {
  try {
    Geometry g = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), strides, padding, groups);
    if (auto bad = CheckExact(g); bad.failure()) return bad;
    std::lock_guard<std::mutex> lock(cnn_flax::RunMutex());  // creation too: see onednn_common.h
    auto p = Cached(g.Key('d'), [&] {
      auto pd = dnnl::convolution_backward_data::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, Activations(g.src), AnyLayout(g.weights),
          Activations(g.dst), g.strides, g.pad_low, g.pad_high, ForwardDesc(g), OwnScratchpad());
      return Finish<dnnl::convolution_backward_data>(g, pd, pd.weights_desc(), false);
    });
    auto& e = Engine();
    dnnl::stream s(e);
    dnnl::memory kernel = KernelFor(*p, dnnl::memory(Hwio(g), e, w.typed_data()), s);
    p->run.execute(s, {{DNNL_ARG_DIFF_DST, dnnl::memory(Activations(g.dst), e, dy.typed_data())},
                       {DNNL_ARG_WEIGHTS, kernel},
                       {DNNL_ARG_DIFF_SRC, dnnl::memory(Activations(g.src), e, dx->typed_data())},
                       {DNNL_ARG_SCRATCHPAD, dnnl::memory(p->scratchpad, e)}});
    s.wait();
  } catch (const dnnl::error& e) {
    return cnn_flax::Failed("oneDNN convolution", e);
  }
  return ffi::Error::Success();
}

// The kernel gradient from the input and the output gradient (the kernel's shape is the result's).
ffi::Error KernelGradient(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                          ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, int64_t groups) {
  try {
    Geometry g = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), strides, padding, groups);
    if (auto bad = CheckExact(g); bad.failure()) return bad;
    std::lock_guard<std::mutex> lock(cnn_flax::RunMutex());  // creation too: see onednn_common.h
    auto p = Cached(g.Key('w'), [&] {
      auto pd = dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, Activations(g.src), AnyLayout(g.weights),
          Activations(g.dst), g.strides, g.pad_low, g.pad_high, ForwardDesc(g), OwnScratchpad());
      return Finish<dnnl::convolution_backward_weights>(g, pd, pd.diff_weights_desc(), true);
    });
    auto& e = Engine();
    dnnl::stream s(e);
    dnnl::memory hwio(Hwio(g), e, dw->typed_data());
    dnnl::memory kernel = p->reorder ? dnnl::memory(p->weights, e) : hwio;
    p->run.execute(s, {{DNNL_ARG_SRC, dnnl::memory(Activations(g.src), e, x.typed_data())},
                       {DNNL_ARG_DIFF_DST, dnnl::memory(Activations(g.dst), e, dy.typed_data())},
                       {DNNL_ARG_DIFF_WEIGHTS, kernel},
                       {DNNL_ARG_SCRATCHPAD, dnnl::memory(p->scratchpad, e)}});
    if (p->reorder) p->reorder->execute(s, kernel, hwio);
    s.wait();
  } catch (const dnnl::error& e) {
    return cnn_flax::Failed("oneDNN convolution", e);
  }
  return ffi::Error::Success();
}

auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("padding")
      .Attr<int64_t>("groups");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnFlaxConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnFlaxConvInputGradient, InputGradient, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnFlaxConvKernelGradient, KernelGradient, Binding());
