// One line for an error that reaches a top-level handler: libtorch's errors without their C++
// backtrace, and out-of-memory errors with what was being allocated and the setting to change
// (from the ActivityScope the error unwound, kivi/util/activity.h).
#pragma once

#include <exception>
#include <string>

namespace kivi {

// Whether e is an allocation failure (libtorch's OutOfMemoryError, or a message that says so).
bool is_out_of_memory(const std::exception& e);

// "out of memory while <activity>: <libtorch's first line>; to fit, lower <setting>" for an
// allocation failure, otherwise the error's message (libtorch's without its backtrace), with
// "while <activity>" when a scope named one. Takes the failed activity (take_failed_activity).
std::string describe_failure(const std::exception& e);

}  // namespace kivi
