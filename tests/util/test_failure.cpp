// Errors that reach a top-level handler (kivi/util/failure.h): one line, libtorch's backtrace
// gone, an allocation failure naming what was being allocated and the setting to change, from
// the innermost ActivityScope it unwound (kivi/util/activity.h).
#include <ATen/ATen.h>

#include <string>

#include "kivi/util/activity.h"
#include "kivi/util/failure.h"
#include "kivi_catch.h"

using Catch::Contains;

namespace {

// What the handler prints for the exception `fn` throws.
template <class Fn>
std::string failure_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return kivi::describe_failure(e);
  }
  FAIL("expected an exception");
  return "";
}

}  // namespace

TEST_CASE("an allocation failure names the activity and the setting, in one line") {
  const std::string line = failure_of([] {
    const kivi::ActivityScope outer("serving", "[serve] max_batch");
    const kivi::ActivityScope inner("allocating the kivi cache for 4096 sequences", "[x] y");
    (void)at::empty({int64_t{1} << 50}, at::kByte);  // a petabyte: the allocator refuses
  });
  INFO(line);
  CHECK_THAT(line, Contains("out of memory while allocating the kivi cache for 4096 sequences: "));
  CHECK_THAT(line, Contains("; to fit, lower [x] y"));
  CHECK(line.find('\n') == std::string::npos);
  CHECK_THAT(line, !Contains("frame #") && !Contains("Exception raised from"));
  // Taken by the handler: the next error names its own activity or none.
  CHECK_FALSE(kivi::take_failed_activity().has_value());
}

TEST_CASE("other libtorch errors lose their backtrace and keep the activity") {
  const std::string line = failure_of([] {
    const kivi::ActivityScope scope("adding", "");
    (void)(at::ones({2}) + at::ones({3}));
  });
  INFO(line);
  CHECK_THAT(line, Contains("must match the size") && Contains("(while adding)"));
  CHECK(line.find('\n') == std::string::npos);
  CHECK_THAT(line, !Contains("out of memory"));
}

TEST_CASE("a failure handled and recovered from does not name a later one") {
  try {
    const kivi::ActivityScope scope("an attempt that may fail", "[bench] batch");
    throw std::runtime_error("out of memory");
  } catch (const std::exception&) {
    kivi::clear_failed_activity();  // what the bench's batch search does
  }
  const std::string line = failure_of([] { throw std::runtime_error("disk full"); });
  CHECK(line == "disk full");
}

TEST_CASE("a scope describes itself only when an exception unwinds it") {
  int described = 0;
  auto describe = [&described] {
    ++described;
    return std::string("a forward pass of 4 rows x 1 tokens");
  };
  { const kivi::ActivityScope quiet(describe, "[serve] max_batch"); }
  CHECK(described == 0);  // nothing built on the way that does not fail
  const std::string line = failure_of([&] {
    const kivi::ActivityScope step(describe, "[serve] max_batch");
    throw std::runtime_error("out of memory");
  });
  CHECK(described == 1);
  CHECK(line ==
        "out of memory while a forward pass of 4 rows x 1 tokens: out of memory; to fit, "
        "lower [serve] max_batch");
}
