#include "serve/api_request.h"

#include <random>

#include "kivi/util/error.h"
#include "kivi/util/json_limits.h"

namespace kivi::serve {
namespace {
using nlohmann::json;

[[noreturn]] void fail(const std::string& message, int status = 400) {
  throw ApiError{status, message};
}

std::string type_name(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  return std::string("a ") + v.type_name();
}

const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

int64_t get_int(const json& body, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number_integer())
    fail(std::string(key) + ": expected an integer, got " + type_name(*v));
  const int64_t x = v->get<int64_t>();
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    fail(std::string(key) + ": " + v->dump() + " is too large");
  if (x < lo || x > hi)
    fail(std::string(key) + " = " + std::to_string(x) + ": expected an integer in [" +
         std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

double get_number(const json& body, const char* key, double fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number()) fail(std::string(key) + ": expected a number, got " + type_name(*v));
  return v->get<double>();
}

bool get_bool(const json& body, const char* key, bool fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(std::string(key) + ": expected true or false, got " + type_name(*v));
  return v->get<bool>();
}

std::vector<std::string> get_stop(const json& body) {
  const json* v = field(body, "stop");
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string())
    out.push_back(v->get<std::string>());
  else if (v->is_array()) {
    for (const json& s : *v) {
      if (!s.is_string())
        fail("stop: expected a string or an array of strings, found " + type_name(s) +
             " in the array");
      out.push_back(s.get<std::string>());
    }
  } else {
    fail("stop: expected a string or an array of strings, got " + type_name(*v));
  }
  if (out.size() > 16) fail("stop: at most 16 stop strings, got " + std::to_string(out.size()));
  for (const std::string& s : out)
    if (s.empty()) fail("stop: an empty stop string would stop at once");
  return out;
}

// Fields we know but do not implement: accepted only at their neutral values, so a client never
// silently gets something other than what it asked for.
void refuse_unsupported(const json& body) {
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (get_number(body, key, 0) != 0) fail(std::string(key) + " is not supported (only 0)");
  if (const json* v = field(body, "logit_bias"); v && !(v->is_object() && v->empty()))
    fail("logit_bias is not supported");
  if (const json* v = field(body, "suffix");
      v && !(v->is_string() && v->get<std::string>().empty()))
    fail("suffix is not supported");
  if (const json* v = field(body, "tools"); v && !(v->is_array() && v->empty()))
    fail("tools are not supported");
  if (const json* v = field(body, "response_format");
      v && !(v->is_object() && v->value("type", "") == "text"))
    fail("response_format is not supported (only {\"type\": \"text\"})");
}

std::vector<int64_t> token_list(const json& list, const ServedModel& model,
                                const std::string& where) {
  std::vector<int64_t> ids;
  for (const json& id : list) {
    if (!id.is_number_integer())
      fail(where + ": expected token ids (integers), found " + type_name(id));
    const int64_t v = id.get<int64_t>();
    if (v < 0 || v >= model.vocab_size)
      fail(where + ": token id " + std::to_string(v) + " is outside the vocabulary [0, " +
           std::to_string(model.vocab_size) + ")");
    ids.push_back(v);
  }
  return ids;
}

std::vector<int64_t> encode(const ServedModel& model, const std::string& text, bool special) {
  if (!model.tokenizer) fail("this model has no tokenizer.json: send the prompt as token ids");
  const std::vector<int32_t> ids = model.tokenizer->encode(text, special);
  return {ids.begin(), ids.end()};
}

std::string decode(const ServedModel& model, const std::vector<int64_t>& ids) {
  if (!model.tokenizer) return "";
  const std::vector<int32_t> ids32(ids.begin(), ids.end());
  return model.tokenizer->decode(ids32, true);
}

// "prompt": a string, an array of strings, an array of token ids, or an array of such arrays.
void read_prompts(const json& body, const ServedModel& model, const ApiLimits& limits,
                  CompletionRequest& r) {
  const json* p = field(body, "prompt");
  if (!p) fail("prompt: required (a string, an array of strings, or token ids)");
  auto add_text = [&](const std::string& text) {
    r.prompts.push_back(encode(model, text, true));
    r.prompt_texts.push_back(text);
  };
  auto add_ids = [&](const json& list, const std::string& where) {
    r.prompts.push_back(token_list(list, model, where));
    r.prompt_texts.push_back(decode(model, r.prompts.back()));
  };
  if (p->is_string())
    add_text(p->get<std::string>());
  else if (!p->is_array())
    fail("prompt: expected a string, an array of strings or token ids, got " + type_name(*p));
  else if (p->empty())
    fail("prompt: the array is empty");
  else if ((*p)[0].is_number_integer())
    add_ids(*p, "prompt");
  else
    for (size_t i = 0; i < p->size(); ++i) {
      const json& item = (*p)[i];
      const std::string where = "prompt[" + std::to_string(i) + "]";
      if (item.is_string())
        add_text(item.get<std::string>());
      else if (item.is_array())
        add_ids(item, where);
      else
        fail(where + ": expected a string or an array of token ids, got " + type_name(item));
    }
}

// "messages": [{"role": ..., "content": "..." or [{"type": "text", "text": "..."}]}], rendered
// with the model's chat template.
void read_messages(const json& body, const ServedModel& model, CompletionRequest& r) {
  if (!model.chat)
    fail("this model has no chat template: use /v1/completions (or give [serve] chat_template)");
  const json* m = field(body, "messages");
  if (!m || !m->is_array() || m->empty())
    fail("messages: required, a non-empty array of {role, content}");
  json messages = json::array();
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object())
      fail(where + ": expected an object with role and content, got " + type_name(msg));
    const json* role = field(msg, "role");
    if (!role || !role->is_string()) fail(where + ".role: required, a string");
    const std::string name = role->get<std::string>();
    if (name != "system" && name != "user" && name != "assistant" && name != "developer")
      fail(where + ".role: \"" + name + "\": expected system, developer, user or assistant");
    std::string content;
    const json* c = field(msg, "content");
    if (c && c->is_string())
      content = c->get<std::string>();
    else if (c && c->is_array())
      for (const json& part : *c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          fail(where +
               ".content: only parts of type \"text\" with a string \"text\" are supported");
        content += part["text"].get<std::string>();
      }
    else if (c)
      fail(where + ".content: expected a string or an array of text parts, got " + type_name(*c));
    messages.push_back({{"role", name == "developer" ? "system" : name}, {"content", content}});
  }
  std::string prompt;
  try {
    prompt = model.chat->render(messages, true, model.template_variables);
  } catch (const Error& e) {
    fail(std::string("messages: the chat template could not render them: ") + e.what());
  }
  r.prompts.push_back(encode(model, prompt, false));  // the template writes the special tokens
  r.prompt_texts.push_back(prompt);
}

}  // namespace

CompletionRequest parse_completion_request(const json& body, const ServedModel& model,
                                           const ApiLimits& limits, bool chat) {
  if (!body.is_object()) fail("the request body must be a JSON object, got " + type_name(body));
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) fail("model: expected a string, got " + type_name(*m));
    if (m->get<std::string>() != model.name)
      throw ApiError{404,
                     "model \"" + m->get<std::string>() +
                         "\" does not exist; this server serves \"" + model.name + "\"",
                     "model_not_found"};
  }
  refuse_unsupported(body);
  CompletionRequest r;
  r.chat = chat;
  if (chat)
    read_messages(body, model, r);
  else
    read_prompts(body, model, limits, r);
  r.n = get_int(body, "n", 1, 1, limits.max_n);
  if (static_cast<int64_t>(r.prompts.size()) * r.n > limits.max_sequences)  // could never be queued
    fail("the request asks for " + std::to_string(r.prompts.size() * r.n) +
         " sequences (prompts x n); this server " + "takes at most " +
         std::to_string(limits.max_sequences) + " per request ([serve] max_queue)");
  if (const json* b = field(body, "best_of");
      b && get_int(body, "best_of", 1, 1, limits.max_n) != r.n)
    fail("best_of is not supported (only equal to n)");
  r.sampling.temperature = get_number(body, "temperature", 1.0);
  if (!(r.sampling.temperature >= 0 && r.sampling.temperature <= 2))
    fail("temperature = " + std::to_string(r.sampling.temperature) +
         ": expected a number in [0, 2] (0 = greedy)");
  r.sampling.top_p = get_number(body, "top_p", 1.0);
  if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1))
    fail("top_p = " + std::to_string(r.sampling.top_p) + ": expected a number in (0, 1]");
  // vLLM-style extensions the sampler has anyway.
  r.sampling.top_k = get_int(body, "top_k", 0, -1, INT32_MAX);
  if (r.sampling.top_k < 0) r.sampling.top_k = 0;  // vLLM's -1 = off
  r.sampling.min_p = get_number(body, "min_p", 0.0);
  r.sampling.repetition_penalty = get_number(body, "repetition_penalty", 1.0);
  try {
    generate::validate(r.sampling, "request");
  } catch (const Error& e) {
    fail(e.what());
  }
  if (field(body, "seed"))
    r.seed = static_cast<uint64_t>(get_int(body, "seed", 0, INT64_MIN, INT64_MAX));
  else
    r.seed = std::random_device{}();
  r.stop = get_stop(body);
  r.stream = get_bool(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) fail("stream_options: expected an object, got " + type_name(*so));
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  r.ignore_eos = get_bool(body, "ignore_eos", false);
  if (chat) {
    if (get_bool(body, "logprobs", false))
      r.logprobs = get_int(body, "top_logprobs", 0, 0, limits.max_logprobs);
    else if (field(body, "top_logprobs"))
      fail("top_logprobs needs logprobs: true");
  } else {
    r.logprobs = get_int(body, "logprobs", -1, 0, limits.max_logprobs);
    r.echo = get_bool(body, "echo", false);
    if (r.echo && r.stream && r.logprobs >= 0)
      fail("echo with logprobs is not supported when streaming");
  }

  // Lengths against the context: a prompt must leave room for at least its first new token.
  int64_t longest = 0;
  for (size_t i = 0; i < r.prompts.size(); ++i) {
    const int64_t size = static_cast<int64_t>(r.prompts[i].size());
    if (size == 0)
      fail("prompt" + (r.prompts.size() > 1 ? "[" + std::to_string(i) + "]" : std::string()) +
           " is empty (it needs at least one token)");
    longest = std::max(longest, size);
  }
  if (longest > model.context)
    fail("the prompt has " + std::to_string(longest) + " tokens; this model's context is " +
         std::to_string(model.context) + " tokens");
  const char* max_key =
      chat && field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const json* requested = field(body, max_key);
  if (requested && requested->is_number_integer() && requested->get<int64_t>() < 0)
    fail(std::string(max_key) + " = " + std::to_string(requested->get<int64_t>()) +
         ": expected an integer >= 0");
  const int64_t room = model.context - longest;
  const int64_t fallback = chat ? room : std::min(limits.default_max_tokens, room);
  r.max_tokens = get_int(body, max_key, fallback, 0, INT32_MAX);
  if (r.max_tokens > room)
    fail("the prompt (" + std::to_string(longest) + " tokens) and " + max_key + " (" +
         std::to_string(r.max_tokens) + ") exceed this model's context of " +
         std::to_string(model.context) + " tokens");
  return r;
}

CompletionRequest parse_completion_body(std::string_view text, const ServedModel& model,
                                        const ApiLimits& limits, bool chat) {
  // Messages go on to the chat template and values into error messages: a request has no reason
  // to nest deeply, so the bound is far below the one for files.
  try {
    check_json_depth(text, "the request body", kMaxRequestDepth);
  } catch (const Error& e) {
    fail(e.what());
  }
  json body;
  try {
    body = json::parse(text);
  } catch (const json::exception& e) {  // syntax, and numbers no double holds (1e400)
    fail(std::string("the body is not valid JSON: ") + e.what());
  }
  return parse_completion_request(body, model, limits, chat);
}

}  // namespace kivi::serve
