// Argument checks for the launchers. Every message names the argument at fault; the exceptions
// are standard C++ ones that pybind11 maps to Python: std::invalid_argument -> ValueError,
// std::runtime_error -> RuntimeError (CUDA runtime failures).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fasttrack {
namespace detail {

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace detail
}  // namespace fasttrack

// FT_CHECK(cond, "argument 'D' ...", value): ValueError with the message when cond is false.
#define FT_CHECK(cond, ...)                                                                  \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      throw std::invalid_argument(::fasttrack::detail::concat("fasttrack._C: ", __VA_ARGS__));  \
    }                                                                                        \
  } while (0)

// An integer argument inside [lo, hi].
#define FT_CHECK_RANGE(name, value, lo, hi)                                                   \
  FT_CHECK((value) >= (lo) && (value) <= (hi), "argument '", name, "' = ", (value),            \
           " is outside the supported range [", (lo), ", ", (hi), "]")

// A device pointer that will be dereferenced must not be null.
#define FT_CHECK_PTR(name, ptr) \
  FT_CHECK((ptr) != 0, "argument '", name, "' is a null device pointer")

// A stride list with the tensor's rank (strides are in elements, as torch.Tensor.stride()).
#define FT_CHECK_STRIDES(name, vec, rank)                                                    \
  FT_CHECK(static_cast<int64_t>((vec).size()) == (rank), "argument '", name, "' must hold ", \
           (rank), " strides, got ", (vec).size())

// A CUDA runtime call that must succeed: RuntimeError naming the call and the CUDA error.
#define FT_CUDA_CHECK(expr)                                                                  \
  do {                                                                                       \
    cudaError_t ft_err_ = (expr);                                                            \
    if (ft_err_ != cudaSuccess) {                                                            \
      throw std::runtime_error(::fasttrack::detail::concat("fasttrack._C: ", #expr, " failed: ", \
                                                           cudaGetErrorString(ft_err_)));    \
    }                                                                                        \
  } while (0)
