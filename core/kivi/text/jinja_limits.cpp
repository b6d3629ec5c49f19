#include "kivi/text/jinja_limits.h"

namespace kivi::text::jinja {

namespace {
thread_local Budget* current_budget = nullptr;
}  // namespace

Budget::Budget(const Limits& limits) : limits_(limits), previous_(current_budget) {
  current_budget = this;
}

Budget::~Budget() {
  current_budget = previous_;
}

const Limits& Budget::limits() {
  static const Limits defaults;
  return current_budget ? current_budget->limits_ : defaults;
}

void Budget::charge(int64_t n) {
  Budget* b = current_budget;
  if (b == nullptr) return;
  b->steps_ += n;
  if (b->steps_ > b->limits_.max_steps)
    throw LimitError("the template ran more than " + std::to_string(b->limits_.max_steps) +
                     " evaluation steps (Limits::max_steps; a loop that never ends?)");
}

void Budget::iteration() {
  Budget* b = current_budget;
  if (b == nullptr) return;
  if (++b->iterations_ > b->limits_.max_loop_iterations)
    throw LimitError("the template ran more than " +
                     std::to_string(b->limits_.max_loop_iterations) +
                     " loop iterations (Limits::max_loop_iterations)");
  charge(1);
}

void Budget::check_string(std::size_t bytes, const char* what, bool copied) {
  const Limits& l = limits();
  if (bytes > l.max_string_bytes)
    throw LimitError(std::string(what) + " would be " + std::to_string(bytes) +
                     " bytes, more than the limit of " + std::to_string(l.max_string_bytes) +
                     " (Limits::max_string_bytes)");
  if (copied) charge(static_cast<int64_t>(bytes / 64));
}

}  // namespace kivi::text::jinja
