#include "kivi/util/failure.h"

#include <c10/util/Exception.h>

#include "kivi/util/activity.h"

namespace kivi {

namespace {

// libtorch's message without the backtrace and the lines after its first.
std::string first_line(const std::exception& e) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
  std::string message = torch_error ? torch_error->what_without_backtrace() : e.what();
  const size_t end = message.find('\n');
  if (end != std::string::npos) message.resize(end);
  // "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: ...": the message is
  // what follows the failed condition.
  if (message.rfind("[enforce fail at ", 0) == 0) {
    const size_t condition = message.find("] ");
    const size_t after = condition == std::string::npos ? condition : message.find(". ", condition);
    if (after != std::string::npos) message.erase(0, after + 2);
  }
  return message;
}

}  // namespace

bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return true;
  const std::string what = first_line(e);
  for (const char* words :
       {"out of memory", "not enough memory", "can't allocate memory", "Cannot allocate memory"})
    if (what.find(words) != std::string::npos) return true;
  return false;
}

std::string describe_failure(const std::exception& e) {
  const std::optional<Activity> activity = take_failed_activity();
  const std::string message = first_line(e);
  if (!is_out_of_memory(e)) return activity ? message + " (while " + activity->what + ")" : message;
  std::string line = "out of memory";
  if (activity) line += " while " + activity->what;
  line += ": " + message;
  if (activity && !activity->setting.empty()) line += "; to fit, lower " + activity->setting;
  return line;
}

}  // namespace kivi
