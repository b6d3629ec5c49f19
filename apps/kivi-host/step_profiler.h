// What a span of the engine's work spends its time on, recorded with libtorch's own profiler
// (Kineto: the CPU's operators, and on a GPU its kernels through CUPTI, which the torch wheel
// ships): per decode step, the kernels (or, on the CPU, the top-level operators) that take the
// most time and their share, how busy the device was and the idle gaps between its work; the
// whole recording as a Chrome trace (chrome://tracing, Perfetto).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

namespace kivi::host {

struct ProfileEntry {
  std::string name;
  int64_t calls = 0;
  double total_us = 0;  // over the whole recording
  // Idle time of the device right before this entry's calls began (the gaps it ended): where
  // the launches lag, e.g. at the boundaries of graph replays and eager work.
  double idle_before_us = 0;
};

struct StepProfile {
  bool device_kernels = false;  // true: GPU kernels and copies; false: top-level CPU operators
  int64_t steps = 1;
  std::string step_name = "decode steps";  // what a step is (the server's: forward passes)
  double span_us = 0;                      // first start to last end of what is counted
  double busy_us = 0;                      // the union of their intervals
  int64_t gaps = 0;                        // idle gaps of at least 1 us between them
  double largest_gap_us = 0;
  double host_ops_us = 0;             // the host's time in top-level ATen operators (CPU events)
  std::vector<ProfileEntry> entries;  // by total time, largest first
  // Where the host's time goes (GPU only): top-level ATen operators and CUDA runtime calls
  // (graph launches, kernel launches, copies, synchronisations), by total time, largest first.
  // At batch 1 the host's launches can be the limit; these say which.
  std::vector<ProfileEntry> host_entries;
};

class StepProfiler {
 public:
  // On a CUDA device it also records the GPU's activity (kernels, copies) and summarizes that.
  explicit StepProfiler(const at::Device& device);
  // Both wait for the device's queued work first, so the recording holds what was launched in
  // between and all of it.
  void start();
  // Stops, writes the Chrome trace to trace_path (unless empty) and summarizes `steps` steps.
  StepProfile stop(int64_t steps, const std::string& trace_path);

 private:
  void wait_for_device() const;
  at::Device device_;
  bool cuda_;
};

// Tables: per step, the top `rows` entries (calls, us, share of the busy time, idle before
// them), then the entries that end the most idle time.
void print_profile(std::ostream& out, const StepProfile& p, size_t rows = 15);
nlohmann::json profile_json(const StepProfile& p, size_t rows = 30);

}  // namespace kivi::host
