// What the process was doing when an error arrived without context: an allocation that fails
// deep inside libtorch says only how many bytes it wanted. A scope names the activity (what is
// being allocated, how much) and the setting that controls it; when an exception unwinds it, the
// innermost scope records itself, and the host's error handler prints that in one line instead
// of libtorch's backtrace.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace kivi {

struct Activity {
  std::string what;     // e.g. "allocating the kivi cache: 12.30 GB for 64 sequences"
  std::string setting;  // what to change so that it fits, e.g. "[serve] max_batch"
};

namespace detail {
// The innermost activity that an exception unwound, until a handler takes or clears it.
inline std::optional<Activity>& failed_activity() {
  thread_local std::optional<Activity> failed;
  return failed;
}
}  // namespace detail

// `what` is a string, or a callable that makes one: then nothing is built unless an exception
// unwinds the scope, so that a scope costs nothing in a decode loop. `setting` must outlive it.
template <class What>
class ActivityScope {
 public:
  ActivityScope(What what, std::string_view setting)
      : what_(std::move(what)), setting_(setting), exceptions_(std::uncaught_exceptions()) {}
  ~ActivityScope() {
    // Unwound by an exception: the innermost scope (destroyed first) is the one that failed.
    if (std::uncaught_exceptions() <= exceptions_ || detail::failed_activity()) return;
    try {
      if constexpr (std::is_invocable_v<What&>)
        detail::failed_activity() = Activity{what_(), std::string(setting_)};
      else
        detail::failed_activity() = Activity{std::string(what_), std::string(setting_)};
    } catch (...) {  // no memory even for the message: the error goes out without it
    }
  }
  ActivityScope(const ActivityScope&) = delete;
  ActivityScope& operator=(const ActivityScope&) = delete;

 private:
  What what_;
  std::string_view setting_;
  int exceptions_;
};
ActivityScope(const char*, std::string_view)->ActivityScope<std::string_view>;

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
