// BatchNorm's training pass in oneDNN, called from XLA:CPU through the XLA FFI (see batchnorm.py, which uses it,
// and onednn.py, which builds and registers it).
//
// Two handlers: the forward pass on the batch's statistics (returning them, for the running averages) and its
// gradient. Channels are the minor axis and every other axis a row, so an NHWC map and a dense layer's (batch,
// features) are the same (rows, channels) matrix. With `relu` set, a ReLU follows the normalisation in the same
// pass over memory, and its gradient precedes the BatchNorm's in the backward one; oneDNN then keeps which outputs
// were positive in a bit mask (its "workspace") that the forward pass returns and the backward pass reads.
//
// XLA:CPU runs its own elementwise fusions and reductions on one core; oneDNN's run on all of them, and its
// backward pass reads the input and the gradient once for both sums (one 16x56x56x256 BatchNorm and ReLU, forward
// and backward: about 20 ms here against XLA's 76).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "onednn_common.h"

namespace ffi = xla::ffi;
using cnn_flax::Engine;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using flags = dnnl::normalization_flags;

namespace {

struct Primitives {
  dnnl::batch_normalization_forward forward;
  dnnl::batch_normalization_backward backward;
  dnnl::memory::desc forward_scratchpad, backward_scratchpad, mask;
};

// Guarded by cnn_flax::RunMutex(), which every handler holds for its whole call.
std::unordered_map<std::string, std::shared_ptr<Primitives>> cache;

dnnl::memory::desc Matrix(int64_t rows, int64_t channels) {
  return dnnl::memory::desc({rows, channels}, dt::f32, tag::nc);
}
dnnl::memory::desc Vector(int64_t channels) { return dnnl::memory::desc({channels}, dt::f32, tag::x); }

// A description only, no kernel generated yet: the queries below take it without the lock.
dnnl::batch_normalization_forward::primitive_desc ForwardDesc(int64_t rows, int64_t channels, float epsilon,
                                                              bool relu,
                                                              const dnnl::primitive_attr& attr = {}) {
  auto how = flags::use_scale | flags::use_shift | (relu ? flags::fuse_norm_relu : flags::none);
  auto data = Matrix(rows, channels);
  return dnnl::batch_normalization_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_training, data,
                                                           data, epsilon, how, attr);
}

dnnl::batch_normalization_backward::primitive_desc BackwardDesc(
    const dnnl::batch_normalization_forward::primitive_desc& forward, const dnnl::primitive_attr& attr = {}) {
  auto data = forward.src_desc();
  return dnnl::batch_normalization_backward::primitive_desc(Engine(), dnnl::prop_kind::backward, data, data, data,
                                                            forward.get_epsilon(), forward.get_flags(), forward,
                                                            attr);
}

// Call with cnn_flax::RunMutex() held.
std::shared_ptr<Primitives> Get(int64_t rows, int64_t channels, float epsilon, bool relu) {
  std::string key = std::to_string(rows) + "," + std::to_string(channels) + "," + std::to_string(epsilon) +
                    (relu ? ",relu" : "");
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  auto forward = ForwardDesc(rows, channels, epsilon, relu, cnn_flax::OwnScratchpad());
  auto backward = BackwardDesc(forward, cnn_flax::OwnScratchpad());
  auto p = std::make_shared<Primitives>(Primitives{dnnl::batch_normalization_forward(forward),
                                                   dnnl::batch_normalization_backward(backward),
                                                   forward.scratchpad_desc(), backward.scratchpad_desc(),
                                                   forward.workspace_desc()});
  return cache.emplace(key, p).first->second;
}

int64_t Rows(ffi::Span<const int64_t> shape) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  return rows;
}

ffi::Error CheckMask(const Primitives& p, ffi::Span<const int64_t> mask_shape, bool relu) {
  if (relu && static_cast<size_t>(mask_shape[0]) != p.mask.get_size())
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "oneDNN BatchNorm: the ReLU mask has the wrong size");
  return ffi::Error::Success();
}

// y = scale * (x - mean) / sqrt(var + epsilon) + bias (then ReLU), with the batch's mean and biased variance.
ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> bias,
                   ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean,
                   ffi::ResultBuffer<ffi::F32> var, ffi::ResultBuffer<ffi::U8> mask, float epsilon, bool relu) {
  try {
    const int64_t channels = x.dimensions().back(), rows = Rows(x.dimensions());
    std::lock_guard<std::mutex> lock(cnn_flax::RunMutex());  // creation too: see onednn_common.h
    auto p = Get(rows, channels, epsilon, relu);
    if (auto bad = CheckMask(*p, mask->dimensions(), relu); bad.failure()) return bad;
    auto& e = Engine();
    dnnl::stream s(e);
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, dnnl::memory(Matrix(rows, channels), e, x.typed_data())},
        {DNNL_ARG_DST, dnnl::memory(Matrix(rows, channels), e, y->typed_data())},
        {DNNL_ARG_SCALE, dnnl::memory(Vector(channels), e, scale.typed_data())},
        {DNNL_ARG_SHIFT, dnnl::memory(Vector(channels), e, bias.typed_data())},
        {DNNL_ARG_MEAN, dnnl::memory(Vector(channels), e, mean->typed_data())},
        {DNNL_ARG_VARIANCE, dnnl::memory(Vector(channels), e, var->typed_data())},
        {DNNL_ARG_SCRATCHPAD, dnnl::memory(p->forward_scratchpad, e)}};
    if (relu) args[DNNL_ARG_WORKSPACE] = dnnl::memory(p->mask, e, mask->typed_data());
    p->forward.execute(s, args);
    s.wait();
  } catch (const dnnl::error& e) {
    return cnn_flax::Failed("oneDNN BatchNorm", e);
  }
  return ffi::Error::Success();
}

// The gradients of x, scale and bias from the forward pass's input, statistics and (with `relu`) mask.
ffi::Error Backward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> scale,
                    ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::U8> mask,
                    ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dscale,
                    ffi::ResultBuffer<ffi::F32> dbias, float epsilon, bool relu) {
  try {
    const int64_t channels = x.dimensions().back(), rows = Rows(x.dimensions());
    std::lock_guard<std::mutex> lock(cnn_flax::RunMutex());  // creation too: see onednn_common.h
    auto p = Get(rows, channels, epsilon, relu);
    if (auto bad = CheckMask(*p, mask.dimensions(), relu); bad.failure()) return bad;
    auto& e = Engine();
    dnnl::stream s(e);
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, dnnl::memory(Matrix(rows, channels), e, x.typed_data())},
        {DNNL_ARG_DIFF_DST, dnnl::memory(Matrix(rows, channels), e, dy.typed_data())},
        {DNNL_ARG_SCALE, dnnl::memory(Vector(channels), e, scale.typed_data())},
        {DNNL_ARG_MEAN, dnnl::memory(Vector(channels), e, mean.typed_data())},
        {DNNL_ARG_VARIANCE, dnnl::memory(Vector(channels), e, var.typed_data())},
        {DNNL_ARG_DIFF_SRC, dnnl::memory(Matrix(rows, channels), e, dx->typed_data())},
        {DNNL_ARG_DIFF_SCALE, dnnl::memory(Vector(channels), e, dscale->typed_data())},
        {DNNL_ARG_DIFF_SHIFT, dnnl::memory(Vector(channels), e, dbias->typed_data())},
        {DNNL_ARG_SCRATCHPAD, dnnl::memory(p->backward_scratchpad, e)}};
    if (relu) args[DNNL_ARG_WORKSPACE] = dnnl::memory(p->mask, e, const_cast<uint8_t*>(mask.typed_data()));
    p->backward.execute(s, args);
    s.wait();
  } catch (const dnnl::error& e) {
    return cnn_flax::Failed("oneDNN BatchNorm", e);
  }
  return ffi::Error::Success();
}

}  // namespace

// The bytes of the ReLU mask for a (rows, channels) BatchNorm: the forward pass's fourth result is this long.
// Called through ctypes when the computation is traced; -1 if oneDNN has no such primitive.
extern "C" int64_t CnnFlaxBatchNormReluMaskBytes(int64_t rows, int64_t channels) {
  try {
    return static_cast<int64_t>(ForwardDesc(rows, channels, 1e-5f, true).workspace_desc().get_size());
  } catch (const dnnl::error&) {
    return -1;
  }
}

// 1 if oneDNN has generated (jit) kernels for a (rows, channels) BatchNorm with ReLU, forward and backward; 0 if
// only its generic loops, -1 if nothing. The generic loops are what a channel count that is not a multiple of the
// vector width gets: 3-10x slower than Flax's BatchNorm in XLA (DenseNet-BC's 12-channel growth: 196 channels,
// 16x32x32x196 at batch 64, 195 ms forward and backward against XLA's 65 and oneDNN's jit kernels' 28 for 200).
extern "C" int64_t CnnFlaxBatchNormHasKernels(int64_t rows, int64_t channels) {
  try {
    auto forward = ForwardDesc(rows, channels, 1e-5f, true);
    auto backward = BackwardDesc(forward);
    auto generated = [](const std::string& name) { return name.find("jit") != std::string::npos; };
    return generated(forward.impl_info_str()) && generated(backward.impl_info_str()) ? 1 : 0;
  } catch (const dnnl::error&) {
    return -1;
  }
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnFlaxBatchNormForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnFlaxBatchNormBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("relu"));
