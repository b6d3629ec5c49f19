// Arbitrary bytes as a GGUF file: the reader (header, metadata, tensor table, data bounds), every
// typed metadata lookup on every key (the error paths print the value), dequantization of every
// tensor small enough to be quick, and the tokenizer files built from tokenizer.ggml.*.
// kivi::Error is the expected failure; anything else escaping, or a sanitizer report, is a
// finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "kivi/model/gguf_dequantize.h"
#include "kivi/model/gguf_file.h"
#include "kivi/model/gguf_tokenizer.h"
#include "kivi/util/error.h"
#include "memfd_input.h"

namespace {

template <class F>
void quietly(F&& f) {
  try {
    f();
  } catch (const kivi::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kivi::GgufFile file(kivi::fuzz::as_file(data, size));
    for (const auto& entry : file.metadata()) {
      const std::string& key = entry.first;  // (clang 14 cannot capture a structured binding)
      quietly([&] { (void)file.get_string(key); });
      quietly([&] { (void)file.get_int(key); });
      quietly([&] { (void)file.get_float(key); });
      quietly([&] { (void)file.get_bool(key); });
      quietly([&] { (void)file.get_strings(key); });
      quietly([&] { (void)file.get_ints(key); });
    }
    for (const kivi::GgufTensorInfo& info : file.tensors()) {
      if (info.numel() > (1 << 16)) continue;  // fast inputs; the bounds check is the same
      quietly([&] {
        const at::Tensor t = file.dequantize(info.name);
        if (t.numel() != info.numel()) __builtin_trap();
      });
    }
    quietly([&] { (void)kivi::gguf_tokenizer_files(file); });
  } catch (const kivi::Error&) {
  }
  return 0;
}
