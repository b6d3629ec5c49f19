// Files written after the work (a JSON of results, a trace) are checked before it: a run of an
// hour must not end in "cannot write". Checked without creating or truncating anything.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

#include "kivi/util/error.h"

namespace kivi {

// Why `path` cannot be written (a missing or unwritable directory, a directory or special file
// in its place, an existing file that is read-only), or "" when it can.
inline std::string output_file_problem(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!ec && fs::exists(status)) {
    if (fs::is_directory(status)) return "it is a directory";
    if (!fs::is_regular_file(status)) return "it is not a regular file (a device, pipe or socket)";
    if (::access(path.c_str(), W_OK) != 0) return "the file is not writable";
    return "";
  }
  const fs::path directory = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const fs::file_status dir_status = fs::status(directory, ec);
  if (ec || !fs::exists(dir_status))
    return "the directory \"" + directory.string() + "\" does not exist";
  if (!fs::is_directory(dir_status)) return "\"" + directory.string() + "\" is not a directory";
  if (::access(directory.c_str(), W_OK | X_OK) != 0)
    return "the directory \"" + directory.string() + "\" is not writable";
  return "";
}

// Throws "<where>: cannot write <path>: <why>" unless `path` can be written.
inline void check_output_file(const std::filesystem::path& path, const std::string& where) {
  const std::string problem = output_file_problem(path);
  if (!problem.empty()) throw Error(where + ": cannot write \"" + path.string() + "\": " + problem);
}

}  // namespace kivi
