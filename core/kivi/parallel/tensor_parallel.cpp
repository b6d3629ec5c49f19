#include "kivi/parallel/tensor_parallel.h"

#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "kivi/parallel/nccl_backend.h"
#include "kivi/util/error.h"

namespace kivi {
namespace {

// c10d's messages carry a C++ backtrace after their first line.
std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

}  // namespace

struct TensorParallelGroup::Impl {
  ParallelConfig config;
  at::Device device = at::kCPU;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> control;  // Gloo, CPU tensors
  c10::intrusive_ptr<c10d::Backend> compute;  // the model's collectives: Gloo or NCCL
  mutable std::atomic<bool> failed{false};    // a collective failed: a peer is gone

  std::string who() const {
    return "tensor parallel rank " + std::to_string(config.rank) + " of " +
           std::to_string(config.size);
  }
  // Runs a collective and waits for it; a failure (a rank that died, a timeout) becomes a
  // kivi::Error that says which rank saw it and what it was doing.
  void run(const char* what, const c10::intrusive_ptr<c10d::Work>& work) const {
    try {
      work->wait();
    } catch (const std::exception& e) {
      failed = true;
      throw Error(who() + ": " + what + " failed (another rank died, or did not reach it within " +
                  std::to_string(config.timeout.count() / 1000) + " s): " + first_line(e.what()));
    }
  }
};

namespace {

c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                            const ParallelConfig& config,
                                            std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // Gloo's transport binds to this address; loopback for one host, else the address the other
  // ranks reach this one by (resolved from the hostname).
  options->devices.push_back(config.address == "127.0.0.1" || config.address == "localhost"
                                 ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                 : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(config.rank),
                                                     static_cast<int>(config.size), options);
}

// c10d's flight recorder (a debugging trace of collectives) gathers a stack trace for every
// collective, host time on each all-reduce of every layer, and in torch 2.11 it inserts into a
// map outside its lock, which crashes when several groups record from threads at once (the tests'
// ranks). Off unless the user asks for it with TORCH_FR_BUFFER_SIZE; it reads the variable once,
// when the first group is made.
void disable_flight_recorder() {
  static std::once_flag once;
  std::call_once(once, [] { setenv("TORCH_FR_BUFFER_SIZE", "0", /*overwrite=*/0); });
}

}  // namespace

std::shared_ptr<TensorParallelGroup> TensorParallelGroup::connect(const ParallelConfig& config,
                                                                  at::Device device) {
  check(config.size >= 1,
        "[parallel] tensor = " + std::to_string(config.size) + ": expected a number of ranks >= 1");
  check(config.rank >= 0 && config.rank < config.size,
        "tensor parallel: rank " + std::to_string(config.rank) + " is outside [0, " +
            std::to_string(config.size) + ")");
  // Port 0 (any free port) serves a group of one: nobody else must find the store.
  check((config.port > 0 || config.size == 1) && config.port < 65536,
        "[parallel] port = " + std::to_string(config.port) + ": expected a TCP port in 1..65535");
  disable_flight_recorder();
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->device = device;
  const std::string where = config.address + ":" + std::to_string(config.port);
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(config.port);
    options.isServer = config.rank == 0 && config.rank0_hosts_store;
    options.numWorkers = static_cast<int>(config.size);
    options.waitWorkers = false;
    options.timeout = config.timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(config.address, options);
    auto prefixed = [&](const std::string& prefix) -> c10::intrusive_ptr<c10d::Store> {
      return c10::make_intrusive<c10d::PrefixStore>(prefix, impl->store);
    };
    // The control channel: a year is "as long as it takes" (see ParallelConfig::timeout).
    impl->control = make_gloo(prefixed("kivi/control/"), config, std::chrono::hours(24 * 365));
    if (device.is_cuda())
      impl->compute = make_nccl_backend(prefixed("kivi/nccl/"), config, device);
    else
      impl->compute = make_gloo(prefixed("kivi/compute/"), config, config.timeout);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(
        impl->who() + ": joining the group through the store at " + where + " failed (are all " +
        std::to_string(config.size) +
        " ranks started, with the same [parallel] address and port?): " + first_line(e.what()));
  }
  return std::shared_ptr<TensorParallelGroup>(new TensorParallelGroup(std::move(impl)));
}

struct StoreServer::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

std::unique_ptr<StoreServer> StoreServer::start(const std::string& address, int port) {
  auto impl = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(port);
    options.isServer = true;
    options.waitWorkers = false;
    impl->store = c10::make_intrusive<c10d::TCPStore>(address, options);
  } catch (const std::exception& e) {
    throw Error("tensor parallel: cannot start the TCPStore at " + address + ":" +
                std::to_string(port) +
                " ([parallel] address and port; another run using it?): " + first_line(e.what()));
  }
  return std::unique_ptr<StoreServer>(new StoreServer(std::move(impl)));
}
StoreServer::StoreServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StoreServer::~StoreServer() = default;
int StoreServer::port() const {
  return impl_->store->getPort();
}

TensorParallelGroup::TensorParallelGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TensorParallelGroup::~TensorParallelGroup() {
  // NCCL wants its communicators destroyed by the owner, not at exit (ProcessGroupNCCL warns
  // "destroy_process_group() was not called" otherwise). shutdown() is the normal end: it
  // flushes pending collectives, which would wait forever on a peer that is gone, so after a
  // failed collective the communicators are aborted instead.
  try {
    if (impl_->compute) {
      if (impl_->failed)
        impl_->compute->abort();
      else
        impl_->compute->shutdown();
    }
  } catch (const std::exception&) {  // a destructor must not throw; the process is ending anyway
  }
}

int64_t TensorParallelGroup::rank() const {
  return impl_->config.rank;
}
int64_t TensorParallelGroup::size() const {
  return impl_->config.size;
}
const ParallelConfig& TensorParallelGroup::config() const {
  return impl_->config;
}
std::string TensorParallelGroup::backend() const {
  return impl_->device.is_cuda() ? "nccl" : "gloo";
}

void TensorParallelGroup::all_reduce(at::Tensor& t) {
  check(t.is_contiguous(), impl_->who() + ": all_reduce needs a contiguous tensor");
  std::vector<at::Tensor> tensors{t};
  impl_->run("all-reduce", impl_->compute->allreduce(tensors));
}

at::Tensor TensorParallelGroup::all_gather(const at::Tensor& t, int64_t dim) {
  const at::Tensor input = t.contiguous();
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < impl_->config.size; ++r) parts.push_back(at::empty_like(input));
  std::vector<std::vector<at::Tensor>> outputs{parts};
  std::vector<at::Tensor> inputs{input};
  impl_->run("all-gather", impl_->compute->allgather(outputs, inputs));
  return at::cat(outputs[0], dim);
}

void TensorParallelGroup::broadcast_control(at::Tensor& t, int64_t root) {
  check(t.is_contiguous() && t.device().is_cpu(),
        impl_->who() + ": broadcast_control needs a contiguous CPU tensor");
  std::vector<at::Tensor> tensors{t};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  impl_->run("broadcast", impl_->control->broadcast(tensors, options));
}

void TensorParallelGroup::all_reduce_control(at::Tensor& t) {
  check(t.is_contiguous() && t.device().is_cpu(),
        impl_->who() + ": all_reduce_control needs a contiguous CPU tensor");
  std::vector<at::Tensor> tensors{t};
  impl_->run("all-reduce", impl_->control->allreduce(tensors));
}

void TensorParallelGroup::barrier() {
  impl_->run("barrier", impl_->control->barrier());
}

}  // namespace kivi
