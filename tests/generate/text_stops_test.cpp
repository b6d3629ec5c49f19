// Stop strings over streamed pieces: a match across pieces, and nothing printed that a stop
// string then cuts.
#include <catch2/catch.hpp>

#include "kivi/generate/text_stops.h"

using kivi::generate::TextStops;

TEST_CASE("a stop string split over pieces stops, and its start was held back", "[generate]") {
  TextStops stops({"\n\n", "THE END"});
  std::string printed;
  auto add = [&](const std::string& piece) {
    auto [out, stop] = stops.add(piece);
    printed += out;
    return stop;
  };
  CHECK_FALSE(add("Once upon"));
  CHECK_FALSE(add(" a time. TH"));
  CHECK(printed == "Once upon a time. ");  // "TH" could start "THE END"
  CHECK_FALSE(add("E"));
  CHECK(add(" END and more"));
  CHECK(printed == "Once upon a time. ");
}

TEST_CASE("held-back text that is no stop string comes out later or at the end", "[generate]") {
  TextStops stops({"STOP"});
  auto [a, s1] = stops.add("go ST");
  CHECK(a == "go ");
  auto [b, s2] = stops.add("ay");
  CHECK(b == "STay");
  auto [c, s3] = stops.add(" S");
  CHECK(c == " ");
  CHECK(stops.finish("") == "S");
  CHECK_FALSE((s1 || s2 || s3));
}
