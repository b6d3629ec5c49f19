#include "host_app.h"

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "host_context.h"
#include "kivi/plugin/fingerprint.h"
#include "kivi/util/failure.h"
#include "rank_launch.h"

namespace kivi::host {
namespace {

void print_help(std::ostream& out) {
  out << "kivi-host " << KIVI_VERSION_STRING
      << ": LLM inference with a KIVI-quantized KV cache\n\n"
         "usage: kivi-host [MODE] --config run.toml [--set section.key=value]... [--plugin-dir "
         "DIR]...\n"
         "       kivi-host serve --config run.toml --profile N   (profile the first N forward "
         "passes)\n"
         "       kivi-host serve --config run.toml --verbose     (the load and the cache's "
         "pages every 10 s)\n"
         "       kivi-host MODE --config run.toml --tp N          (tensor parallelism over N "
         "ranks: [parallel])\n"
         "       kivi-host plugins [--plugin-dir DIR]...\n"
         "       kivi-host MODE --help | --help | --version\n\n"
         "MODE overrides `mode` in run.toml; --set overrides one key (e.g. --set cache.k_bits=4,\n"
         "--set generate.prompts='[\"Hi\"]'). Modes (kivi-host MODE --help for each one's keys):\n";
  for (const auto& mode : known_modes()) out << "  " << mode << "\n";
  out << "\nPlugins are loaded from the folders in [plugins] dirs, --plugin-dir, and the default\n"
         "folder "
      << Registry::default_plugin_dir().string()
      << ".\nSee docs/config.md for every key of run.toml.\n";
}

struct CommandLine {
  std::string mode;
  std::string config_file;
  std::vector<std::string> plugin_dirs;
  std::vector<std::string> overrides;  // --set section.key=value
  std::string profile_steps;           // --profile N (serve): [serve] profile_steps
  std::string tensor_parallel;         // --tp N: [parallel] tensor = N
  bool verbose = false;                // --verbose (serve): [serve] stats_seconds = 10
  bool help = false;
  bool version = false;
};

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine cl;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= argc) throw Error("command line: " + flag + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h")
      cl.help = true;
    else if (arg == "--version")
      cl.version = true;
    else if (arg == "--config" || arg == "-c")
      cl.config_file = value(arg);
    else if (arg == "--plugin-dir")
      cl.plugin_dirs.push_back(value(arg));
    else if (arg == "--set")
      cl.overrides.push_back(value(arg));
    else if (arg == "--profile")
      cl.profile_steps = value(arg);
    else if (arg == "--tp")
      cl.tensor_parallel = value(arg);
    else if (arg == "--verbose")
      cl.verbose = true;
    else if (!arg.empty() && arg[0] != '-' && cl.mode.empty())
      cl.mode = arg;
    else
      throw Error("command line: unknown argument \"" + arg + "\"; see kivi-host --help");
  }
  return cl;
}

// A flag's whole-number value in [1, max], e.g. --tp 4; `what` names the unit in the message.
int64_t count_argument(const std::string& flag, const std::string& text, int64_t max,
                       const std::string& what) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 1 || value > max)
    throw Error("command line: " + flag + " \"" + text + "\": expected a number of " + what +
                " from 1 to " + std::to_string(max));
  return value;
}

}  // namespace

int run_host(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  try {
    const CommandLine cl = parse_command_line(argc, argv);
    if (cl.help && cl.mode.empty()) {
      print_help(out);
      return 0;
    }
    if (cl.version) {
      out << "kivi-host " << KIVI_VERSION_STRING << "\nbuild fingerprint: " << build_fingerprint()
          << "\n";
      return 0;
    }
    if (!cl.mode.empty()) {
      const auto& modes = known_modes();
      if (std::find(modes.begin(), modes.end(), cl.mode) == modes.end()) {
        std::string list;
        for (const auto& m : modes) list += (list.empty() ? "" : ", ") + m;
        throw Error("command line: unknown mode \"" + cl.mode + "\"; expected one of: " + list);
      }
      if (cl.help) {
        print_mode_help(out, cl.mode);
        return 0;
      }
    }
    HostConfig config;
    if (!cl.config_file.empty())
      config = load_host_config(cl.config_file, cl.overrides);
    else if (!cl.overrides.empty())
      throw Error("command line: --set needs --config run.toml to apply to");
    else if (cl.mode != "plugins")
      throw Error(
          "command line: --config run.toml is required (only `kivi-host plugins` runs without "
          "one)");
    if (!cl.mode.empty()) config.mode = cl.mode;
    if (!cl.profile_steps.empty()) {
      if (config.mode != "serve")
        throw Error("command line: --profile N is for serve (mode here: " + config.mode +
                    "); bench profiles with [bench] profile = true");
      config.serve.profile_steps =
          count_argument("--profile", cl.profile_steps, int64_t{1} << 20, "forward passes");
    }
    if (cl.verbose) {
      if (config.mode != "serve")
        throw Error("command line: --verbose is for serve (mode here: " + config.mode + ")");
      if (config.serve.stats_seconds == 0) config.serve.stats_seconds = 10;
    }
    if (!cl.tensor_parallel.empty()) {
      const int64_t ranks = count_argument("--tp", cl.tensor_parallel, 1024, "ranks");
      config.parallel.present = true;
      config.parallel.tensor = ranks;
    }
    for (const auto& dir : cl.plugin_dirs) config.plugin_dirs.emplace_back(dir);

    // A local launch: this process is rank 0 and starts the others (rank_launch.h).
    std::unique_ptr<LocalRanks> ranks;
    if (config.parallel.present) check_parallel_mode(config);
    if (config.parallel.present && config.parallel.launch == "local" && config.parallel.tensor > 1)
      ranks = LocalRanks::start(config, std::vector<std::string>(argv + 1, argv + argc), err);
    HostContext context{std::move(config), {}, out, err};
    int status = 1;
    try {
      load_plugins(context);
      status = run_mode(context);
    } catch (const std::exception& e) {
      err << "error: " << describe_failure(e) << "\n";
    }
    return ranks ? ranks->finish(status) : status;
  } catch (const std::exception& e) {
    // One line: libtorch's errors without their backtrace, an allocation failure with what
    // was being allocated and the setting to change.
    err << "error: " << describe_failure(e) << "\n";
    return 1;
  }
}

}  // namespace kivi::host
