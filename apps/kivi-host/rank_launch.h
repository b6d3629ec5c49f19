// `kivi-host --tp N` (or [parallel] tensor = N, launch = "local"): this process is rank 0; it
// starts the TCPStore and ranks 1..N-1 (this executable with the same arguments, told their rank
// and the store's port), and watches them: a rank that dies ends the run at once with an error
// that names it, and the ranks end when rank 0 does (PR_SET_PDEATHSIG), so nothing hangs.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "host_config.h"

namespace kivi::host {

class LocalRanks {
 public:
  // Starts the store (on config.parallel.port, or a free one when 0, written back into `config`)
  // and the ranks. `args`: this process's command line after the program name.
  static std::unique_ptr<LocalRanks> start(HostConfig& config, const std::vector<std::string>& args,
                                           std::ostream& err);
  // Waits (bounded) for the ranks to finish after rank 0's run ended with `status`; a rank that
  // failed makes the result 1.
  int finish(int status);
  ~LocalRanks();

 private:
  struct Impl;
  explicit LocalRanks(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Throws unless `config`'s mode can run with [parallel] (a model-running mode, not bench's
// find_max_batch); checked before any rank starts.
void check_parallel_mode(const HostConfig& config);

// Ranks 1..N-1 in kivi-host: load this rank's shard and follow rank 0 until it stops.
int run_rank_mode(struct HostContext& context);

}  // namespace kivi::host
