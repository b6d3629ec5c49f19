// Main for GPU test executables: without a usable CUDA device, exit 77, which CTest reports
// as "skipped" (SKIP_RETURN_CODE), so the suite passes cleanly on machines without a GPU.
#define CATCH_CONFIG_RUNNER
#include "kivi_catch.h"

#include <cstdio>

#include <torch/cuda.h>

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device: skipping GPU tests\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
