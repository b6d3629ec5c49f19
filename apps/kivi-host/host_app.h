// kivi-host's command line: `kivi-host [MODE] [--config run.toml] [--plugin-dir DIR]...`,
// `--help`, `--version`. Returns the process exit code; never throws.
#pragma once

#include <iosfwd>

namespace kivi::host {

int run_host(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace kivi::host
