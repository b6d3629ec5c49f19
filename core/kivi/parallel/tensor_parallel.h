// One rank's membership in a tensor-parallel group: N processes (or threads, in tests) that each
// hold a shard of every layer and combine their partial results with collectives. Built on the
// distributed layer libtorch ships (c10d): ranks meet through a TCPStore, and the collectives run
// on ProcessGroupGloo for CPU tensors and ProcessGroupNCCL for CUDA tensors. c10d stays behind
// this header, so including it needs no Gloo or NCCL headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/Tensor.h>

namespace kivi {

// Where and how the ranks meet ([parallel] in run.toml).
struct ParallelConfig {
  int64_t size = 1;  // ranks in the group ([parallel] tensor)
  int64_t rank = 0;  // this process's rank, 0 .. size - 1
  // The TCPStore every rank connects to. Ranks on other machines name rank 0's address.
  std::string address = "127.0.0.1";
  int port = 29511;  // 0: any free port, for a group of one
  // true: rank 0 runs the store's server; false: a server already listens there (a test, or a
  // launcher that started one).
  bool rank0_hosts_store = true;
  // How long a rank waits for the others, at the rendezvous and in the model's collectives,
  // before it gives up with an error (a rank that hangs; one that dies closes its connections,
  // which the others notice at once). The control channel (broadcast_control) waits without
  // this limit: rank 0 may idle for hours between requests.
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};
};

// A TCPStore server apart from the ranks: what a launcher starts before its ranks, so that
// port 0 (any free port) can be passed on to them, and what tests use.
class StoreServer {
 public:
  // Listens on `address`:`port` (0: a free port the system picks). Throws kivi::Error.
  static std::unique_ptr<StoreServer> start(const std::string& address, int port);
  ~StoreServer();
  int port() const;

 private:
  struct Impl;
  explicit StoreServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class TensorParallelGroup {
 public:
  // Joins the group: blocks until all `config.size` ranks have connected to the store (or the
  // timeout passes). Collectives on `device`'s tensors run on NCCL when it is a CUDA device and
  // on Gloo otherwise; broadcast_control always runs on Gloo (CPU tensors). Throws kivi::Error
  // naming the address, port and rank on failure.
  static std::shared_ptr<TensorParallelGroup> connect(const ParallelConfig& config,
                                                      at::Device device);
  ~TensorParallelGroup();
  TensorParallelGroup(const TensorParallelGroup&) = delete;
  TensorParallelGroup& operator=(const TensorParallelGroup&) = delete;

  int64_t rank() const;
  int64_t size() const;
  const ParallelConfig& config() const;
  // "gloo" or "nccl": the backend of the model's collectives.
  std::string backend() const;

  // Sum over the ranks, in place; `t` must be contiguous, on the group's device.
  void all_reduce(at::Tensor& t);
  // Every rank's `t` (each of the same shape), concatenated along `dim` in rank order.
  at::Tensor all_gather(const at::Tensor& t, int64_t dim);
  // Rank `root`'s values of `t` (CPU, contiguous) into every rank's `t`; waits for the root as
  // long as it takes (its death ends the wait with an error).
  void broadcast_control(at::Tensor& t, int64_t root = 0);
  // Sum of a CPU int64 vector over the ranks (the cache statistics), in place.
  void all_reduce_control(at::Tensor& t);
  // Blocks until every rank has reached it.
  void barrier();

 private:
  struct Impl;
  explicit TensorParallelGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kivi
