#include "kivi/text/post_processor.h"

#include <nlohmann/json.hpp>

#include "kivi/text/json_fields.h"
#include "kivi/util/error.h"

namespace kivi::text {

namespace {

// TemplateProcessing's "single": pieces before the one {"Sequence": {"id": "A"}} go in front,
// pieces after it behind; each {"SpecialToken": {"id": name}} expands to special_tokens[name].ids.
SpecialTokensAround from_template(const nlohmann::json& spec, const std::string& where) {
  SpecialTokensAround around;
  const auto& single = json_array(spec, "single", where);
  const nlohmann::json specials = spec.value("special_tokens", nlohmann::json::object());
  bool seen_sequence = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const std::string piece_where = where + ".single[" + std::to_string(i) + "]";
    const auto& piece = single[i];
    if (piece.contains("Sequence")) {
      if (seen_sequence) throw Error(piece_where + ": more than one sequence in the template");
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken"))
      throw Error(piece_where + ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    const std::string name =
        json_string(piece["SpecialToken"], "id", piece_where + ".SpecialToken");
    if (!specials.contains(name) || !specials[name].contains("ids"))
      throw Error(piece_where + ": special token '" + name + "' is not in special_tokens");
    auto& target = seen_sequence ? around.suffix : around.prefix;
    for (const auto& id : specials[name]["ids"]) target.push_back(id.get<int32_t>());
  }
  if (!seen_sequence) throw Error(where + ".single: the template has no {\"Sequence\": ...}");
  return around;
}

// RobertaProcessing/BertProcessing: "cls"/"sep" are [token, id] pairs.
int32_t pair_id(const nlohmann::json& spec, const char* key, const std::string& where) {
  const auto it = spec.find(key);
  if (it == spec.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer())
    throw Error(where + "." + key + ": expected [token, id]");
  return (*it)[1].get<int32_t>();
}

}  // namespace

SpecialTokensAround make_post_processor(const nlohmann::json& spec, const std::string& where) {
  if (spec.is_null()) return {};
  const std::string type = json_type(spec, where);
  if (type == "ByteLevel") return {};
  if (type == "TemplateProcessing") return from_template(spec, where);
  if (type == "RobertaProcessing" || type == "BertProcessing")
    return {{pair_id(spec, "cls", where)}, {pair_id(spec, "sep", where)}};
  if (type == "Sequence") {
    SpecialTokensAround around;
    const auto& list = json_array(spec, "processors", where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto inner =
          make_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]");
      around.prefix.insert(around.prefix.begin(), inner.prefix.begin(), inner.prefix.end());
      around.suffix.insert(around.suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
    return around;
  }
  throw Error(where + ": unsupported post_processor type '" + type +
              "' (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, "
              "Sequence)");
}

}  // namespace kivi::text
