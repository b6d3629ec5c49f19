// Evaluates a parsed template with the given variables (plus the global functions), within
// the bounds of `limits` (jinja_limits.h).
#pragma once

#include <string>

#include "kivi/text/jinja_ast.h"

namespace kivi::text::jinja {

// Throws kivi::Error naming the template line on an error or a bound passed (limits).
std::string render(const Body& body, const Dict& variables, const Limits& limits = {});

}  // namespace kivi::text::jinja
