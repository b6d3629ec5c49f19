#include "kivi/text/regex.h"

#include <pcre2.h>

#include "kivi/util/error.h"

namespace kivi::text {

namespace {

// One JIT stack and match block per thread, grown on demand: patterns like `\s+(?!\S)` on a
// long run of spaces need more than PCRE2's 32 KiB default stack.
struct ThreadMatchState {
  pcre2_jit_stack* stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
  pcre2_match_context* context = [this] {
    pcre2_match_context* c = pcre2_match_context_create(nullptr);
    pcre2_jit_stack_assign(c, nullptr, stack);
    return c;
  }();
  pcre2_match_data* data = pcre2_match_data_create(16, nullptr);
  ~ThreadMatchState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};

ThreadMatchState& thread_state() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() { pcre2_code_free(code); }

  int match(std::string_view text, std::size_t offset, pcre2_match_data* data,
            pcre2_match_context* context) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    if (jit) return pcre2_jit_match(code, subject, text.size(), offset, 0, data, context);
    return pcre2_match(code, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, data, context);
  }
};

Regex::Regex(const std::string& pattern, const std::string& where)
    : pattern_(pattern), impl_(std::make_unique<Impl>()) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (impl_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw Error(where + ": regex '" + pattern + "' does not compile at offset " +
                std::to_string(error_offset) + ": " + reinterpret_cast<const char*>(message));
  }
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;

void Regex::for_each_match(std::string_view text,
                           const std::function<void(std::size_t, std::size_t)>& on_match) const {
  ThreadMatchState& state = thread_state();
  std::size_t offset = 0;
  while (offset <= text.size()) {
    const int rc = impl_->match(text, offset, state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw Error("regex '" + pattern_ +
                  "' failed while matching: " + reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const std::size_t start = ovector[0];
    const std::size_t end = ovector[1];
    on_match(start, end);
    if (end > start) {
      offset = end;
    } else {
      if (end >= text.size()) return;
      // Step over one whole character so that the next search starts on a boundary.
      offset = end + 1;
      while (offset < text.size() && (static_cast<unsigned char>(text[offset]) & 0xC0) == 0x80)
        ++offset;
    }
  }
}

bool Regex::search(std::string_view text) const {
  ThreadMatchState& state = thread_state();
  const int rc = impl_->match(text, 0, state.data, state.context);
  return rc >= 0;
}

}  // namespace kivi::text
