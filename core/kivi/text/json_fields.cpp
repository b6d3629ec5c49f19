#include "kivi/text/json_fields.h"

#include "kivi/util/error.h"

namespace kivi::text {

namespace {

const nlohmann::json& require_field(const nlohmann::json& object, const char* key,
                                    const std::string& where) {
  if (!object.is_object()) throw Error(where + ": expected a JSON object, got " + object.dump());
  const auto it = object.find(key);
  if (it == object.end()) throw Error(where + ": missing field '" + key + "'");
  return *it;
}

}  // namespace

std::string json_type(const nlohmann::json& object, const std::string& where) {
  const auto& value = require_field(object, "type", where);
  if (!value.is_string()) throw Error(where + ".type: expected a string, got " + value.dump());
  return value.get<std::string>();
}

std::string json_string(const nlohmann::json& object, const char* key, const std::string& where) {
  const auto& value = require_field(object, key, where);
  if (!value.is_string())
    throw Error(where + "." + key + ": expected a string, got " + value.dump());
  return value.get<std::string>();
}

bool json_bool(const nlohmann::json& object, const char* key, const std::string& where,
               bool fallback) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    throw Error(where + "." + key + ": expected true or false, got " + it->dump());
  return it->get<bool>();
}

long long json_int(const nlohmann::json& object, const char* key, const std::string& where,
                   long long fallback) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<long long>() < 0)
    throw Error(where + "." + key + ": expected a non-negative integer, got " + it->dump());
  return it->get<long long>();
}

const nlohmann::json& json_array(const nlohmann::json& object, const char* key,
                                 const std::string& where) {
  const auto& value = require_field(object, key, where);
  if (!value.is_array())
    throw Error(where + "." + key + ": expected an array, got " + value.dump().substr(0, 80));
  return value;
}

}  // namespace kivi::text
