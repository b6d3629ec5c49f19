// Evaluates a parsed template with the given variables (plus the global functions).
#pragma once

#include <string>

#include "kivi/text/jinja_ast.h"

namespace kivi::text::jinja {

std::string render(const Body& body, const Dict& variables);

}  // namespace kivi::text::jinja
