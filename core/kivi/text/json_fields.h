// Typed access to tokenizer.json fields with errors that name the file, the field and what was
// expected. `where` is "<file>: <json path>" of the object being read.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kivi::text {

// The object's "type" field.
std::string json_type(const nlohmann::json& object, const std::string& where);
// A required string field.
std::string json_string(const nlohmann::json& object, const char* key, const std::string& where);
// An optional boolean field (absent or null gives `fallback`).
bool json_bool(const nlohmann::json& object, const char* key, const std::string& where,
               bool fallback);
// An optional non-negative integer field (absent or null gives `fallback`).
long long json_int(const nlohmann::json& object, const char* key, const std::string& where,
                   long long fallback);
// A required array field.
const nlohmann::json& json_array(const nlohmann::json& object, const char* key,
                                 const std::string& where);

// Builds every element of the array `object[key]` with make(element, where_of_element) and
// keeps the non-null results (the "Sequence" normalizer, pre-tokenizer and decoder).
template <typename Make>
auto make_each(const nlohmann::json& object, const char* key, const std::string& where, Make make) {
  std::vector<decltype(make(object, where))> parts;
  const auto& list = json_array(object, key, where);
  for (std::size_t i = 0; i < list.size(); ++i) {
    auto part = make(list[i], where + "." + key + "[" + std::to_string(i) + "]");
    if (part) parts.push_back(std::move(part));
  }
  return parts;
}

}  // namespace kivi::text
