// kivi's one exception type. Messages name the file, the field and the value that was wrong,
// and what was expected; callers add context as an error travels up.
#pragma once

#include <stdexcept>
#include <string>

namespace kivi {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws kivi::Error(message) unless `condition` holds.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace kivi
