# Warnings and sanitizers for everything kivi builds.
add_library(kivi_warnings INTERFACE)
target_compile_options(kivi_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter>)

if(KIVI_SANITIZE)
  # AddressSanitizer + UndefinedBehaviorSanitizer for all targets (the core, the plugins,
  # the host and the tests), so that the plugin boundary is checked too.
  # -O1 -g1 (after the build type's -O2 -g, so they win): ASan's reports need line tables only,
  # and libtorch's headers compile much faster without full debug information.
  foreach(flag -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
               -O1 -g1)
    add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${flag}>")
  endforeach()
  add_link_options(-fsanitize=address,undefined)
  message(STATUS "kivi: building with AddressSanitizer and UndefinedBehaviorSanitizer")
endif()

if(KIVI_FUZZ)
  # libFuzzer harnesses (tests/fuzz, tools/fuzz.sh): every target instrumented for coverage and
  # checked by ASan + UBSan; the harnesses alone link libFuzzer's main (-fsanitize=fuzzer).
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "kivi: KIVI_FUZZ=ON needs clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++")
  endif()
  foreach(flag -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
               -fno-sanitize-recover=undefined)
    add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${flag}>")
  endforeach()
  add_link_options(-fsanitize=address,undefined)
  message(STATUS "kivi: building the libFuzzer harnesses (ASan + UBSan)")
endif()
