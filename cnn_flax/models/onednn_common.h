// What every oneDNN handler in this library shares (see onednn.py, which builds and registers them).
//
// Each oneDNN primitive already runs on every core (OpenMP), so calls are serialised, primitive creation included:
// XLA may issue independent operations from several threads at once, and two OpenMP teams on the same cores slow
// each other down many times over (without the lock, ResNet-50's 224 px step had not run five steps in 12 minutes;
// with it, 4 s a step). One lock for every handler, convolutions and BatchNorms alike, for the same reason.
#pragma once

#include <mutex>
#include <string>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace cnn_flax {

inline dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Held by every handler for its whole call; it guards the handlers' primitive caches too.
inline std::mutex& RunMutex() {
  static std::mutex mutex;
  return mutex;
}

// Each call passes its own scratch memory: oneDNN's default, a scratchpad kept per calling thread, crashed its
// im2col kernels (AlexNet's stem, from the second step on) when XLA called from different threads.
inline dnnl::primitive_attr OwnScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

inline xla::ffi::Error Failed(const char* what, const dnnl::error& e) {
  return xla::ffi::Error(xla::ffi::ErrorCode::kInternal, std::string(what) + ": " + e.what());
}

}  // namespace cnn_flax
