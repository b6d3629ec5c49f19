// Bounds on what a chat template may cost: nesting (parse and values), loop iterations, range()
// sizes, string sizes and evaluation steps. A template comes from a model's files or a GGUF
// header, written by others: past a bound it fails with kivi::Error naming the bound and the
// template line, instead of overflowing the stack, hanging or exhausting memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kivi/util/error.h"

namespace kivi::text::jinja {

struct Limits {
  int max_nesting = 128;  // blocks in blocks, expression depth, lists/dicts in lists/dicts
  int64_t max_loop_iterations = 1'000'000;   // for-loop iterations in one render
  int64_t max_range = 1'000'000;             // items of one range()
  std::size_t max_string_bytes = 16u << 20;  // any string a template builds, the output too
  int64_t max_steps = 50'000'000;            // expressions evaluated, items and bytes handled
};

// A bound was reached; the interpreter adds the template line where it happened.
class LimitError : public Error {
 public:
  using Error::Error;
};

// The budget of the render running on this thread. render() installs one for its duration;
// values and builtins charge it through the static functions (no-ops when none is installed).
class Budget {
 public:
  explicit Budget(const Limits& limits);
  ~Budget();
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  // The limits in force: the installed budget's, else the defaults.
  static const Limits& limits();
  // Charges `n` steps; throws LimitError past max_steps.
  static void charge(int64_t n);
  // One for-loop iteration; throws LimitError past max_loop_iterations.
  static void iteration();
  // Throws LimitError when a string of `bytes` (what: "the output", "a joined string") would
  // pass max_string_bytes; else, with `copied`, charges bytes/64 steps (copies cost time too).
  static void check_string(std::size_t bytes, const char* what, bool copied = true);

 private:
  Limits limits_;
  int64_t steps_ = 0;
  int64_t iterations_ = 0;
  Budget* previous_;
};

}  // namespace kivi::text::jinja
