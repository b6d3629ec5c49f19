// Inputs read whole (run.toml, config.json, tokenizer files, chat templates, prompt and text
// files) must be regular files of a bounded size: a directory would read as an empty file, and
// a device or a pipe (/dev/zero) as an endless one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

#include "kivi/util/error.h"

namespace kivi {

inline constexpr uint64_t kMaxSmallInputBytes = uint64_t{1} << 30;  // 1 GiB

// Throws naming the file and `what` (e.g. "config file") unless `path` is a regular file of at
// most max_bytes. Call it once the file opened (a missing file keeps its caller's message).
inline void check_input_file(const std::filesystem::path& path, const std::string& what,
                             uint64_t max_bytes = kMaxSmallInputBytes) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec) return;  // the caller's open and read report it
  if (std::filesystem::is_directory(status))
    throw Error(path.string() + ": the " + what + " is a directory, expected a file");
  if (!std::filesystem::is_regular_file(status))
    throw Error(path.string() + ": the " + what +
                " is not a regular file (a device, pipe or socket), expected a file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_bytes)
    throw Error(path.string() + ": the " + what + " is " + std::to_string(size) +
                " bytes, more than the " + std::to_string(max_bytes) + " this reader takes");
}

}  // namespace kivi
