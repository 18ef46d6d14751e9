// Runtime queries that must never throw: fasttrack._ext uses cuda_status() to tell "built but
// no CUDA device/driver" apart from a working extension.
#include <cuda_runtime.h>

#include <string>
#include <tuple>

#include "check.h"
#include "ops.h"

#ifndef FASTTRACK_CUDA_ARCHS
#define FASTTRACK_CUDA_ARCHS "unknown"
#endif

namespace fasttrack {

std::tuple<int, std::string> cuda_status() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls report their own failures
    return {0, detail::concat(cudaGetErrorName(err), ": ", cudaGetErrorString(err))};
  }
  if (count == 0) return {0, "no CUDA device visible"};
  return {count, ""};
}

std::string build_info() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) {
    cudaGetLastError();
    driver = 0;
  }
  return detail::concat("cuda_runtime=", CUDART_VERSION, " cuda_driver=", driver,
                        " archs=", FASTTRACK_CUDA_ARCHS);
}

}  // namespace fasttrack
