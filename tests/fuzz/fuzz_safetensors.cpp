// Arbitrary bytes as a safetensors file: the header (length, JSON through the bounded reader,
// dtypes, shapes, offsets, overlaps) and every tensor handed out (views or aligned copies),
// read whole so that a bounds mistake shows under ASan. kivi::Error is the expected failure.
#include <cstddef>
#include <cstdint>

#include <ATen/ATen.h>

#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"
#include "memfd_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kivi::SafetensorsFile file(kivi::fuzz::as_file(data, size));
    for (const std::string& name : file.names()) {
      const kivi::SafetensorsEntry& entry = file.entry(name);
      try {
        const at::Tensor t = file.tensor(name);
        if (static_cast<uint64_t>(t.nbytes()) != entry.end - entry.begin) __builtin_trap();
        if (t.numel() > 0 && t.numel() <= (1 << 16)) (void)t.clone();  // touches every byte
      } catch (const kivi::Error&) {
      }
    }
  } catch (const kivi::Error&) {
  }
  return 0;
}
