// What the process was doing when an error arrived without context: an allocation that fails
// deep inside libtorch says only how many bytes it wanted. A scope names the activity (what is
// being allocated, how much) and the setting that controls it; the host's error handler prints
// the innermost scope the error unwound, in one line, instead of libtorch's backtrace.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace kivi {

struct Activity {
  std::string what;     // e.g. "allocating the kivi cache: 12.30 GB for 64 sequences"
  std::string setting;  // what to change so that it fits, e.g. "[serve] max_batch"
};

namespace detail {
inline std::vector<Activity>& activity_stack() {
  thread_local std::vector<Activity> stack;
  return stack;
}
// The innermost activity that an exception unwound, until a handler takes or clears it.
inline std::optional<Activity>& failed_activity() {
  thread_local std::optional<Activity> failed;
  return failed;
}
}  // namespace detail

class ActivityScope {
 public:
  ActivityScope(std::string what, std::string setting) : exceptions_(std::uncaught_exceptions()) {
    detail::activity_stack().push_back({std::move(what), std::move(setting)});
  }
  ~ActivityScope() {
    auto& stack = detail::activity_stack();
    // Unwound by an exception: the innermost scope (destroyed first) is the one that failed.
    if (std::uncaught_exceptions() > exceptions_ && !detail::failed_activity())
      detail::failed_activity() = stack.back();
    stack.pop_back();
  }
  ActivityScope(const ActivityScope&) = delete;
  ActivityScope& operator=(const ActivityScope&) = delete;

 private:
  int exceptions_;
};

// The activity the last exception of this thread unwound, for the handler that reports it
// (taking it clears it). A handler that recovers from an error and goes on (the bench's batch
// search, the server's scheduler) clears it, so that it does not name a later failure.
inline std::optional<Activity> take_failed_activity() {
  std::optional<Activity> failed = std::move(detail::failed_activity());
  detail::failed_activity().reset();
  return failed;
}
inline void clear_failed_activity() {
  detail::failed_activity().reset();
}

}  // namespace kivi
