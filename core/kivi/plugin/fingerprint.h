// The build fingerprint: what must be identical between the core and a plugin for the C++
// interfaces behind the C handshake to be safe to use (same compiler, same libstdc++ ABI, same
// libtorch, same CUDA, same plugin-API headers: kivi/{plugin,cache,attention,model,config,
// util}). It is computed from macros *where it is compiled*, so the core's copy and each
// plugin's copy describe their own builds.
#pragma once

#include <string>

#include <torch/version.h>

#include "kivi/build_info.h"  // generated: KIVI_VERSION_STRING, KIVI_HEADERS_HASH, KIVI_CUDA_VERSION_STRING
#include "kivi/plugin/plugin_abi.h"

#define KIVI_STRINGIFY_IMPL(x) #x
#define KIVI_STRINGIFY(x) KIVI_STRINGIFY_IMPL(x)

#if defined(__clang__)
#define KIVI_COMPILER_ID "clang-" __clang_version__
#elif defined(__GNUC__)
#define KIVI_COMPILER_ID "gcc-" __VERSION__
#else
#define KIVI_COMPILER_ID "unknown-compiler"
#endif

#if defined(_GLIBCXX_USE_CXX11_ABI) && _GLIBCXX_USE_CXX11_ABI
#define KIVI_STDLIB_ABI "libstdc++-cxx11"
#elif defined(_GLIBCXX_USE_CXX11_ABI)
#define KIVI_STDLIB_ABI "libstdc++-pre-cxx11"
#else
#define KIVI_STDLIB_ABI "other-stdlib"
#endif

// A string literal, so that a plugin can put it into its static descriptor.
#define KIVI_BUILD_FINGERPRINT                                                     \
  "abi=" KIVI_STRINGIFY(KIVI_PLUGIN_ABI_VERSION) " compiler=" KIVI_COMPILER_ID     \
                                                 " stdlib=" KIVI_STDLIB_ABI        \
                                                 " torch=" TORCH_VERSION           \
                                                 " cuda=" KIVI_CUDA_VERSION_STRING \
                                                 " headers=" KIVI_HEADERS_HASH

namespace kivi {
// The fingerprint of the code that calls this (the core's, when called from the core).
inline const char* build_fingerprint() {
  return KIVI_BUILD_FINGERPRINT;
}
}  // namespace kivi
