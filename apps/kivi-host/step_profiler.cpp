#include "step_profiler.h"

#include <algorithm>
#include <cstdlib>
#include <iomanip>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/profiler_kineto.h>

namespace kivi::host {
namespace {

namespace profiler = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities(bool cuda) {
  std::set<ActivityType> a{ActivityType::CPU};
  if (cuda) a.insert(ActivityType::CUDA);
  return a;
}

struct Interval {
  uint64_t start, end;
  std::string name;
};

// CPU operators not inside another counted operator of the same thread (so a call is counted
// once, with everything it calls).
std::vector<Interval> top_level(std::map<uint64_t, std::vector<Interval>> by_thread) {
  std::vector<Interval> out;
  for (auto& [thread, events] : by_thread) {
    std::sort(events.begin(), events.end(), [](const Interval& a, const Interval& b) {
      return a.start != b.start ? a.start < b.start : a.end > b.end;
    });
    uint64_t covered_until = 0;
    for (const Interval& e : events) {
      if (e.start < covered_until) continue;  // nested in the last top-level one
      out.push_back(e);
      covered_until = e.end;
    }
  }
  return out;
}

std::string short_name(const std::string& name, size_t most = 90) {
  return name.size() <= most ? name : name.substr(0, most - 3) + "...";
}

}  // namespace

StepProfiler::StepProfiler(const at::Device& device) : device_(device), cuda_(device.is_cuda()) {
  // Without a GPU, Kineto logs an "ERROR" for the device count it cannot read while saving the
  // trace; only its errors of level 5 and above are shown then (a user's setting wins).
  if (!cuda_) setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
  profiler::prepareProfiler(ProfilerConfig(ProfilerState::KINETO), activities(cuda_));
}

// A copy to the host waits for the device's stream.
void StepProfiler::wait_for_device() const {
  if (cuda_) (void)at::empty({1}, at::TensorOptions().device(device_)).to(at::kCPU);
}

void StepProfiler::start() {
  wait_for_device();
  profiler::enableProfiler(ProfilerConfig(ProfilerState::KINETO), activities(cuda_));
}

StepProfile StepProfiler::stop(int64_t steps, const std::string& trace_path) {
  wait_for_device();
  std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();
  if (!trace_path.empty()) result->save(trace_path);
  StepProfile p;
  p.device_kernels = cuda_;
  p.steps = std::max<int64_t>(1, steps);
  std::vector<Interval> counted;
  std::map<uint64_t, std::vector<Interval>> cpu_ops;
  // cudaLaunchKernel, cudaGraphLaunch, cudaMemcpyAsync..., and the engine's own scopes
  // (RECORD_FUNCTION "kivi::...", e.g. a graph replay, a layer's attention).
  std::vector<Interval> runtime_calls;
  for (const auto& e : result->events()) {
    if (e.durationNs() == 0) continue;
    const Interval i{e.startNs(), e.endNs(), e.name()};
    if (cuda_ && e.deviceType() == c10::DeviceType::CUDA)
      counted.push_back(i);
    else if (e.deviceType() == c10::DeviceType::CPU && i.name.rfind("aten::", 0) == 0)
      cpu_ops[e.startThreadId()].push_back(i);
    else if (cuda_ && e.deviceType() == c10::DeviceType::CPU &&
             (i.name.rfind("cuda", 0) == 0 || i.name.rfind("kivi::", 0) == 0))
      runtime_calls.push_back(i);
  }
  std::vector<Interval> host = top_level(std::move(cpu_ops));
  // The host's time in ATen operators (launches included): near the step's span, the device
  // waits for the host.
  for (const Interval& i : host) p.host_ops_us += (i.end - i.start) / 1e3;
  if (cuda_) {
    std::map<std::string, ProfileEntry> by_host_name;
    auto add = [&](const Interval& i, const std::string& prefix) {
      ProfileEntry& entry = by_host_name[prefix + i.name];
      entry.name = prefix + i.name;
      entry.calls += 1;
      entry.total_us += (i.end - i.start) / 1e3;
    };
    for (const Interval& i : host) add(i, "");
    for (const Interval& i : runtime_calls)
      add(i, i.name.rfind("kivi::", 0) == 0 ? "scope: " : "runtime: ");
    for (auto& [name, entry] : by_host_name) p.host_entries.push_back(entry);
    std::sort(p.host_entries.begin(), p.host_entries.end(),
              [](const ProfileEntry& a, const ProfileEntry& b) { return a.total_us > b.total_us; });
  }
  if (!cuda_) counted = std::move(host);
  if (counted.empty()) return p;
  std::sort(counted.begin(), counted.end(),
            [](const Interval& a, const Interval& b) { return a.start < b.start; });
  std::map<std::string, ProfileEntry> by_name;
  uint64_t first = counted.front().start, last = 0, busy_until = counted.front().start;
  for (const Interval& i : counted) {
    ProfileEntry& entry = by_name[i.name];
    entry.name = i.name;
    entry.calls += 1;
    entry.total_us += (i.end - i.start) / 1e3;
    if (i.start > busy_until) {
      const double gap_us = (i.start - busy_until) / 1e3;
      entry.idle_before_us += gap_us;
      if (gap_us >= 1.0) {
        p.gaps += 1;
        p.largest_gap_us = std::max(p.largest_gap_us, gap_us);
      }
    }
    p.busy_us += std::max<double>(
        0.0,
        (static_cast<double>(i.end) - static_cast<double>(std::max(i.start, busy_until))) / 1e3);
    busy_until = std::max(busy_until, i.end);
    last = std::max(last, i.end);
  }
  p.span_us = (last - first) / 1e3;
  for (auto& [name, entry] : by_name) p.entries.push_back(entry);
  std::sort(p.entries.begin(), p.entries.end(),
            [](const ProfileEntry& a, const ProfileEntry& b) { return a.total_us > b.total_us; });
  return p;
}

void print_profile(std::ostream& out, const StepProfile& p, size_t rows) {
  const double steps = static_cast<double>(p.steps);
  const double busy = std::max(p.busy_us, 1e-9);
  out << std::fixed << std::setprecision(1) << "profile (" << p.steps << " " << p.step_name << "; "
      << (p.device_kernels ? "GPU kernels and copies" : "top-level CPU operators")
      << "): " << p.span_us / steps << " us per step, busy " << p.busy_us / steps << " us ("
      << 100.0 * p.busy_us / std::max(p.span_us, 1e-9) << "%), "
      << static_cast<double>(p.gaps) / steps << " idle gaps per step (largest " << p.largest_gap_us
      << " us)";
  if (p.device_kernels)
    out << "; host in ATen operators " << p.host_ops_us / steps << " us per step";
  out << "\n";
  const char* what = p.device_kernels ? "kernel" : "operator";
  out << "| " << what << " | calls/step | us/step | share | idle before, us/step |\n"
      << "|---|---|---|---|---|\n";
  auto row = [&](const ProfileEntry& e) {
    out << "| " << short_name(e.name) << " | " << std::setprecision(1)
        << static_cast<double>(e.calls) / steps << " | " << e.total_us / steps << " | "
        << 100.0 * e.total_us / busy << "% | " << e.idle_before_us / steps << " |\n";
  };
  for (size_t i = 0; i < std::min(rows, p.entries.size()); ++i) row(p.entries[i]);
  // Where the idle time ends: the entries the device waited for most.
  std::vector<ProfileEntry> waited = p.entries;
  std::sort(waited.begin(), waited.end(), [](const ProfileEntry& a, const ProfileEntry& b) {
    return a.idle_before_us > b.idle_before_us;
  });
  out << "idle " << (p.span_us - p.busy_us) / steps << " us per step; the " << what
      << "s it ended before:\n| " << what
      << " | calls/step | us/step | share | idle before, us/step |\n"
      << "|---|---|---|---|---|\n";
  for (size_t i = 0; i < std::min<size_t>(8, waited.size()) && waited[i].idle_before_us > 0; ++i)
    row(waited[i]);
  if (!p.host_entries.empty()) {
    out << "the host's time: top-level ATen operators, CUDA runtime calls and the engine's scopes "
           "(what one holds is counted in both)\n| host call | calls/step | us/step |\n"
           "|---|---|---|\n";
    for (size_t i = 0; i < std::min(rows, p.host_entries.size()); ++i)
      out << "| " << short_name(p.host_entries[i].name) << " | " << std::setprecision(1)
          << static_cast<double>(p.host_entries[i].calls) / steps << " | "
          << p.host_entries[i].total_us / steps << " |\n";
  }
  out << std::defaultfloat;
}

nlohmann::json profile_json(const StepProfile& p, size_t rows) {
  nlohmann::json top = nlohmann::json::array();
  const double steps = static_cast<double>(p.steps);
  for (size_t i = 0; i < std::min(rows, p.entries.size()); ++i)
    top.push_back({{"name", p.entries[i].name},
                   {"calls_per_step", static_cast<double>(p.entries[i].calls) / steps},
                   {"us_per_step", p.entries[i].total_us / steps},
                   {"idle_before_us_per_step", p.entries[i].idle_before_us / steps}});
  nlohmann::json host = nlohmann::json::array();
  for (size_t i = 0; i < std::min(rows, p.host_entries.size()); ++i)
    host.push_back({{"name", p.host_entries[i].name},
                    {"calls_per_step", static_cast<double>(p.host_entries[i].calls) / steps},
                    {"us_per_step", p.host_entries[i].total_us / steps}});
  return {{"what", p.device_kernels ? "gpu" : "cpu"},
          {"steps", p.steps},
          {"span_us_per_step", p.span_us / steps},
          {"busy_us_per_step", p.busy_us / steps},
          {"idle_gaps_per_step", static_cast<double>(p.gaps) / steps},
          {"largest_gap_us", p.largest_gap_us},
          {"host_ops_us_per_step", p.host_ops_us / steps},
          {"top", top},
          {"host", host}};
}

}  // namespace kivi::host
