// Skipping a test case that cannot run here (its data is absent: the shared data folder beside
// the checkout, a fetched model), so that CTest reports it as Skipped, never as Passed.
// catch_main.cpp exits with kSkipExitCode when nothing failed and every test case that ran
// called skip_test(); tests/CMakeLists.txt registers that code as SKIP_RETURN_CODE. CTest runs
// one test case per process, so a skipped case is reported on its own.
#pragma once

#include <string>

namespace kivi::test {

inline constexpr int kSkipExitCode = 77;

// Records that the running test case could not (fully) run, and prints why. The caller returns
// (or skips the part) itself; checks made before or after still count.
void skip_test(const std::string& why);

// The same for data from the shared data folder beside the checkout (../shared/data), unless
// KIVI_TESTS_NEED_SHARED_DATA=1 (.ci/run sets it: CI has that folder), where it is a failure.
void skip_without_shared_data(const std::string& what);

}  // namespace kivi::test
