// kivi-host's model-running modes for a program that keeps the model loaded between runs (the
// Python package's kivi.Engine). A run.toml is read and validated as kivi-host reads it; each call
// applies its own "section.key=value" overrides (kivi-host's --set) on top, for that call alone,
// and returns its results as a JSON document. The model loads at the first call and stays loaded
// while [model] is unchanged; each call puts in its own [cache] and [attention] (or compare's
// variants). Bad settings throw kivi::Error naming the file and key, as kivi-host reports them.
// Only std types here: the engine links kivi-host's modes (and their TOML and JSON libraries)
// inside libkivi_engine.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kivi {

class Engine {
 public:
  // Every new token of prompt `row`, with the text it completed (maybe "").
  using TokenFn = std::function<void(int64_t row, int64_t token, const std::string& text)>;

  // From a run.toml file; `plugin_dirs` are searched besides [plugins] dirs (and the default).
  static std::unique_ptr<Engine> from_file(const std::string& config_file,
                                           const std::vector<std::string>& overrides,
                                           const std::vector<std::string>& plugin_dirs);
  // From run.toml's text: `source` names it in messages, and its folder anchors relative paths.
  static std::unique_ptr<Engine> from_text(const std::string& toml_text, const std::string& source,
                                           const std::vector<std::string>& overrides,
                                           const std::vector<std::string>& plugin_dirs);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Continuations of `prompts` (text, encoded with the model's tokenizer) and `prompt_ids`, which
  // replace [generate]'s prompts, prompt_file and prompt_ids when either is non-empty: {"model",
  // "generations": [{"prompt_tokens", "tokens", "text", "stop", "score", "hypotheses" (beam
  // search)}], "new_tokens", "seconds", "cache_bytes"}.
  std::string generate(const std::vector<std::string>& overrides,
                       const std::vector<std::string>& prompts = {},
                       const std::vector<std::vector<int64_t>>& prompt_ids = {},
                       const TokenFn& on_token = {});
  // [perplexity]'s text: {"model", "text", "text_tokens", "windows", "context", "stride",
  // "perplexity", "nll", "tokens", "seconds", "cache_bytes", "bits_per_element"}.
  std::string perplexity(const std::vector<std::string>& overrides);
  // [[compare.variants]]: what kivi-host compare writes to [output] json.
  std::string compare(const std::vector<std::string>& overrides);
  // The model as loaded for `overrides` (loading it if needed): "model: <path> (family ...".
  std::string describe(const std::vector<std::string>& overrides);

 private:
  struct State;
  explicit Engine(std::unique_ptr<State> state);
  // `state` holds run.toml as read; applies `overrides`, validates, loads the plugins.
  static std::unique_ptr<Engine> start(std::unique_ptr<State> state, const std::string& source,
                                       const std::vector<std::string>& overrides,
                                       const std::vector<std::string>& plugin_dirs);
  std::unique_ptr<State> state_;
};

}  // namespace kivi
