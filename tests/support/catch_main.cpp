// The one Catch2 main shared by every test executable. Exit status: Catch's (failures), or
// kSkipExitCode when nothing failed and every test case that ran was skipped (test_skip.h).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include "test_skip.h"

namespace {

struct SkipCounts {
  std::string current;            // the running test case
  std::set<std::string> ran;      // test cases that started
  std::set<std::string> skipped;  // test cases that called skip_test()
};

SkipCounts& counts() {
  static SkipCounts c;
  return c;
}

struct SkipListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    counts().current = info.name;
    counts().ran.insert(info.name);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SkipListener)

namespace kivi::test {

void skip_test(const std::string& why) {
  counts().skipped.insert(counts().current);
  std::printf("SKIPPED: %s: %s\n", counts().current.c_str(), why.c_str());
  std::fflush(stdout);
}

void skip_without_shared_data(const std::string& what) {
  const char* need = std::getenv("KIVI_TESTS_NEED_SHARED_DATA");
  if (need && std::string(need) == "1")
    FAIL(what << " is absent, and KIVI_TESTS_NEED_SHARED_DATA=1 says the shared data folder must "
                 "be there");
  skip_test(what + " is absent (the shared data folder beside the checkout)");
}

}  // namespace kivi::test

int main(int argc, char** argv) {
  const int status = Catch::Session().run(argc, argv);
  const SkipCounts& c = counts();
  if (status == 0 && !c.ran.empty() && c.skipped.size() == c.ran.size()) {
    std::printf("%zu of %zu test cases skipped (exit %d: CTest reports Skipped)\n",
                c.skipped.size(), c.ran.size(), kivi::test::kSkipExitCode);
    return kivi::test::kSkipExitCode;
  }
  if (!c.skipped.empty())
    std::printf("note: %zu of %zu test cases skipped a part\n", c.skipped.size(), c.ran.size());
  return status;
}
