#include "rank_launch.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <ostream>
#include <thread>

#include "host_context.h"
#include "kivi/parallel/tensor_parallel.h"
#include "kivi/util/error.h"
#include "model_session.h"

namespace kivi::host {
namespace {

// "rank 2 (pid 1234) exited with status 1" / "was killed by signal 9 (Killed)".
std::string describe_exit(int64_t rank, pid_t pid, int status) {
  std::string s =
      "tensor parallel rank " + std::to_string(rank) + " (pid " + std::to_string(pid) + ") ";
  if (WIFSIGNALED(status))
    return s + "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return s + "exited with status " + std::to_string(WEXITSTATUS(status));
}

}  // namespace

struct LocalRanks::Impl {
  std::unique_ptr<StoreServer> store;
  std::vector<pid_t> pids;  // rank r's at r - 1
  std::vector<int> statuses;
  std::vector<bool> done;
  std::ostream* err = nullptr;
  std::mutex mutex;
  std::atomic<bool> finishing{false}, stop_watch{false};
  std::thread watcher;

  // Reaps ranks that ended; returns the first that failed (-1: none).
  int64_t reap() {
    std::lock_guard<std::mutex> lock(mutex);
    int64_t failed = -1;
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int status = 0;
      if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        done[i] = true;
        statuses[i] = status;
        if ((!WIFEXITED(status) || WEXITSTATUS(status) != 0) && failed < 0)
          failed = static_cast<int64_t>(i);
      }
    }
    return failed;
  }
  // While rank 0 runs: a rank that dies ends the run now, whatever rank 0 is doing (waiting
  // for a request, or inside a collective that would wait for the timeout).
  void watch() {
    while (!stop_watch) {
      const int64_t failed = reap();
      if (failed >= 0 && !finishing) {
        *err << "error: " << describe_exit(failed + 1, pids[failed], statuses[failed])
             << " while rank 0 ran; ending the run (the other ranks end with it)" << std::endl;
        std::_Exit(1);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
};

LocalRanks::LocalRanks(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<LocalRanks> LocalRanks::start(HostConfig& config,
                                              const std::vector<std::string>& args,
                                              std::ostream& err) {
  ParallelChoice& p = config.parallel;
  auto impl = std::make_unique<Impl>();
  impl->err = &err;
  impl->store = StoreServer::start(p.address, static_cast<int>(p.port));
  p.port = impl->store->port();
  err.flush();
  for (int64_t rank = 1; rank < p.tensor; ++rank) {
    // The same command, as one rank of this group.
    std::vector<std::string> argv = {"kivi-host"};
    argv.insert(argv.end(), args.begin(), args.end());
    for (const std::string& set :
         {std::string("parallel.launch=external"), "parallel.rank=" + std::to_string(rank),
          "parallel.tensor=" + std::to_string(p.tensor), "parallel.port=" + std::to_string(p.port),
          "parallel.address=" + p.address}) {
      argv.push_back("--set");
      argv.push_back(set);
    }
    std::vector<char*> raw;
    for (auto& a : argv) raw.push_back(a.data());
    raw.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    check(pid >= 0, std::string("tensor parallel: cannot start rank ") + std::to_string(rank) +
                        ": fork failed: " + std::strerror(errno));
    if (pid == 0) {
      // The rank ends when rank 0 does, however it ends.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      // Rank 0 prints the results; a rank's stdout would repeat its progress.
      const int null = open("/dev/null", O_WRONLY);
      if (null >= 0) dup2(null, STDOUT_FILENO);
      execv("/proc/self/exe", raw.data());
      _exit(127);
    }
    impl->pids.push_back(pid);
    impl->statuses.push_back(0);
    impl->done.push_back(false);
  }
  Impl* raw_impl = impl.get();
  impl->watcher = std::thread([raw_impl] { raw_impl->watch(); });
  return std::unique_ptr<LocalRanks>(new LocalRanks(std::move(impl)));
}

int LocalRanks::finish(int status) {
  impl_->finishing = true;
  // After a clean run the ranks got rank 0's stop and end at once; after a failed one they
  // notice rank 0's closed connections. Either way they have seconds, then they are ended.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    impl_->reap();
    bool all = true;
    for (bool d : impl_->done) all = all && d;
    if (all || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int result = status;
  for (size_t i = 0; i < impl_->pids.size(); ++i) {
    if (!impl_->done[i]) {
      kill(impl_->pids[i], SIGKILL);
      waitpid(impl_->pids[i], nullptr, 0);
      impl_->done[i] = true;
      *impl_->err << "error: tensor parallel rank " << i + 1 << " (pid " << impl_->pids[i]
                  << ") did not end within 30 s of rank 0; killed\n";
      result = 1;
    } else if (!WIFEXITED(impl_->statuses[i]) || WEXITSTATUS(impl_->statuses[i]) != 0) {
      if (status == 0)
        *impl_->err << "error: "
                    << describe_exit(static_cast<int64_t>(i) + 1, impl_->pids[i],
                                     impl_->statuses[i])
                    << "\n";
      result = 1;
    }
  }
  return result;
}

LocalRanks::~LocalRanks() {
  impl_->finishing = true;
  impl_->stop_watch = true;
  if (impl_->watcher.joinable()) impl_->watcher.join();
  for (size_t i = 0; i < impl_->pids.size(); ++i)
    if (!impl_->done[i]) {
      kill(impl_->pids[i], SIGKILL);
      waitpid(impl_->pids[i], nullptr, 0);
    }
}

namespace {

// A rank whose rank 0 ended (PR_SET_PDEATHSIG) says so and ends.
void on_rank0_gone(int) {
  static const char message[] =
      "error: tensor parallel: this rank was told to stop (SIGTERM: its rank 0 ended)\n";
  [[maybe_unused]] const auto n = write(STDERR_FILENO, message, sizeof(message) - 1);
  _exit(1);
}

}  // namespace

void check_parallel_mode(const HostConfig& cfg) {
  static const std::vector<std::string> modes = {"generate", "chat",  "perplexity",
                                                 "compare",  "bench", "serve"};
  check(std::find(modes.begin(), modes.end(), cfg.mode) != modes.end(),
        cfg.file.string() + ": [parallel] tensor: mode " + cfg.mode +
            " runs no model to split; tensor parallelism is for generate, chat, perplexity, "
            "compare, bench and serve");
  check(!(cfg.mode == "bench" && cfg.bench.find_max_batch),
        cfg.file.string() +
            ": [bench] find_max_batch retries after running out of memory, "
            "which the ranks of [parallel] cannot do together; time a batch");
}

int run_rank_mode(HostContext& context) {
  signal(SIGTERM, on_rank0_gone);
  ModelSession session =
      open_model_session(context, context.config.cache, context.config.attention);
  run_rank_worker(context, session.model(), *session.group);
  return 0;
}

}  // namespace kivi::host
