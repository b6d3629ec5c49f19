// The CUDA smoke test: a libtorch tensor op on the GPU and a kernel of our own.
#include "kivi_catch.h"

#include <ATen/ATen.h>

#include "smoke_kernel.h"

TEST_CASE("a libtorch tensor op runs on the GPU", "[gpu]") {
  at::Tensor a = at::randn({256, 256}, at::TensorOptions().device(at::kCUDA));
  at::Tensor b = at::randn({256, 256}, at::TensorOptions().device(at::kCUDA));
  at::Tensor on_gpu = at::matmul(a, b).cpu();
  at::Tensor on_cpu = at::matmul(a.cpu(), b.cpu());
  CHECK(at::allclose(on_gpu, on_cpu, 1e-3, 1e-3));
}

TEST_CASE("our own CUDA kernel runs and computes the right numbers", "[gpu]") {
  const int n = 100003;  // not a multiple of the block size
  at::Tensor x = at::randn({n}, at::TensorOptions().device(at::kCUDA));
  at::Tensor y = at::randn({n}, at::TensorOptions().device(at::kCUDA));
  at::Tensor expected = (2.5f * x + y).cpu();
  const std::string error =
      kivi::test::saxpy_on_device(n, 2.5f, x.data_ptr<float>(), y.data_ptr<float>());
  REQUIRE(error.empty());
  CHECK(at::allclose(y.cpu(), expected, 1e-6, 1e-6));
}
