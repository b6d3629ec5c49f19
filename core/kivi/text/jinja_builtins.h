// The filters, tests, methods and global functions available to chat templates: what
// transformers' environment offers that real chat templates use. Anything else is an error
// naming the template line.
#pragma once

#include <string>

#include "kivi/text/jinja_value.h"

namespace kivi::text::jinja {

Value apply_filter(const std::string& name, const Value& subject, const Arguments& args, int line);
bool apply_test(const std::string& name, const Value& subject, const Arguments& args, int line);
// `object.name(args)` for the str and dict methods templates call (strip, startswith, get, ...).
Value call_method(const Value& object, const std::string& name, const Arguments& args, int line);
// Whether `object.name` names a supported method (so that `x.strip` is not undefined).
bool has_method(const Value& object, const std::string& name);
// The globals: raise_exception, strftime_now, namespace, range.
Dict global_functions();

// Throws kivi::Error("chat template line N: message").
[[noreturn]] void template_error(int line, const std::string& message);

}  // namespace kivi::text::jinja
