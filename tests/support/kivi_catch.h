// Include this instead of <catch2/catch.hpp> in tests that use libtorch. c10 defines its own
// CHECK macro (a fatal log, through -isystem so without a redefinition warning); whichever
// comes last wins, and c10's CHECK would silently replace Catch's (failures then abort instead
// of being reported and counted). Including c10's logging first and undefining its CHECK
// makes Catch's the one for the whole file (c10's header is include-guarded).
#pragma once

#if __has_include(<c10/util/Logging.h>)  // tests without libtorch include this too
#include <c10/util/Logging.h>
#undef CHECK
#endif

#include <catch2/catch.hpp>
