# Finds what kivi builds against. Every dependency comes from the project's own set-up:
# libtorch from the pinned PyPI wheel in .venv (tools/setup.sh), the rest from Debian packages
# (on the GPU machine: tools/gpu/gather-deps.sh unpacks them into .gpu-deps/root).
# third_party/README.md says what each is for and which version.

# --- libtorch ---------------------------------------------------------------------------
# KIVI_PYTHON: the interpreter whose torch package provides libtorch. Defaults to the
# project venv, else python3 on the PATH (the GPU machine's torch).
if(NOT KIVI_PYTHON)
  if(EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
    set(KIVI_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  else()
    find_program(KIVI_PYTHON NAMES python3 REQUIRED)
  endif()
endif()
set(KIVI_PYTHON "${KIVI_PYTHON}" CACHE FILEPATH "Python whose torch package provides libtorch")
execute_process(
  COMMAND "${KIVI_PYTHON}" -c "import torch, os; print(torch.utils.cmake_prefix_path); print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__)"
  OUTPUT_VARIABLE _kivi_torch_out RESULT_VARIABLE _kivi_torch_rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _kivi_torch_rc EQUAL 0)
  message(FATAL_ERROR "kivi: '${KIVI_PYTHON}' cannot import torch. Run tools/setup.sh first "
                      "(it installs torch==2.11.0 into .venv), or pass -DKIVI_PYTHON=<python with torch>.")
endif()
string(REPLACE "\n" ";" _kivi_torch_out "${_kivi_torch_out}")
list(GET _kivi_torch_out 0 _kivi_torch_prefix)
list(GET _kivi_torch_out 1 KIVI_TORCH_LIB_DIR)
list(GET _kivi_torch_out 2 KIVI_TORCH_VERSION)
list(APPEND CMAKE_PREFIX_PATH "${_kivi_torch_prefix}")

# --- CUDA (optional) ----------------------------------------------------------------------
include(CheckLanguage)
set(KIVI_WITH_CUDA OFF)
if(NOT KIVI_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES ${KIVI_CUDA_ARCHITECTURES})
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 flag for nvcc 13
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(KIVI_WITH_CUDA ON)
  elseif(KIVI_CUDA STREQUAL "ON")
    message(FATAL_ERROR "kivi: KIVI_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "kivi: CUDA parts ${KIVI_WITH_CUDA} (architectures: ${CMAKE_CUDA_ARCHITECTURES})")

# The torch wheel's CMake package looks for the CUDA toolkit itself; warnings from its
# optional probes (nvToolsExt, kineto) are harmless.
# Without this, torch's CMake probes the local GPU (there may be none) to pick architectures.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "8.0;9.0a")
endif()
find_package(Torch REQUIRED)
message(STATUS "kivi: libtorch ${KIVI_TORCH_VERSION} from ${KIVI_TORCH_LIB_DIR}")
# TorchConfig puts -D_GLIBCXX_USE_CXX11_ABI into TORCH_CXX_FLAGS; the imported target carries it.
# Exported with the kivi package; consumers get `torch` from find_dependency(Torch).
add_library(kivi_torch INTERFACE)
target_link_libraries(kivi_torch INTERFACE torch)

# --- Debian packages ----------------------------------------------------------------------
# toml++ 3.x (header-only), Boost.DLL (header-only, used with std::filesystem),
# nlohmann-json, PCRE2 (tokenizer regexes), utf8proc (NFC), Catch2 v2 (tests).
# toml++ is used header-only (TOML_HEADER_ONLY=1), so no libtomlplusplus.so is needed at run
# time, on the GPU machine either. The include folder is a build-tree path only; the installed
# package looks it up again (kiviConfig.cmake).
find_path(KIVI_TOMLPP_INCLUDE toml++/toml.h REQUIRED)
add_library(kivi_toml INTERFACE)
target_include_directories(kivi_toml SYSTEM INTERFACE $<BUILD_INTERFACE:${KIVI_TOMLPP_INCLUDE}>)
target_compile_definitions(kivi_toml INTERFACE TOML_HEADER_ONLY=1)
find_package(nlohmann_json 3 REQUIRED)
find_path(KIVI_BOOST_DLL_INCLUDE boost/dll.hpp REQUIRED)
find_path(KIVI_PCRE2_INCLUDE pcre2.h REQUIRED)
find_library(KIVI_PCRE2_LIBRARY NAMES pcre2-8 REQUIRED)
find_path(KIVI_UTF8PROC_INCLUDE utf8proc.h REQUIRED)
# Gloo's headers (libgloo-dev), for c10d's ProcessGroupGloo header only: the Gloo code itself is
# the copy inside libtorch_cpu, so no libgloo is linked. Debian's headers are older than torch's
# Gloo; kivi uses only the declarations that ProcessGroupGloo.hpp needs, which both have.
find_path(KIVI_GLOO_INCLUDE gloo/algorithm.h REQUIRED)
# NCCL's header for c10d's ProcessGroupNCCL header (CUDA builds): from torch's nvidia-nccl wheel.
if(KIVI_WITH_CUDA)
  find_path(KIVI_NCCL_INCLUDE nccl.h
            HINTS "${KIVI_TORCH_LIB_DIR}/../../nvidia/nccl/include" "${CUDAToolkit_INCLUDE_DIRS}")
endif()
find_library(KIVI_UTF8PROC_LIBRARY NAMES libutf8proc.a utf8proc REQUIRED)
add_library(kivi_boost_dll INTERFACE)
target_include_directories(kivi_boost_dll SYSTEM INTERFACE "${KIVI_BOOST_DLL_INCLUDE}")
target_compile_definitions(kivi_boost_dll INTERFACE BOOST_DLL_USE_STD_FS)
target_link_libraries(kivi_boost_dll INTERFACE ${CMAKE_DL_LIBS})
