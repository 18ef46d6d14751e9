// Device helpers shared by the kernel families: dtype conversion, bounds-checked tile loads
// into float32 shared memory, reductions over the lanes that share one tile row, and the one
// online-softmax update (RowSoftmax, online_softmax_update) every kernel with a softmax uses.
//
// The CUDA extension is a correctness reference (scalar FFMA, no tensor cores; 4-19x slower than
// the Triton kernels on an H200): backend="auto" never picks it (fasttrack/ops/dispatch.py).
//
// Thread layout used by every kernel: a block of kThreads threads is split into row groups of
// kLanes consecutive threads (kLanes divides 32, so a group never straddles a warp). Group g
// owns tile row g; lane l of the group owns the columns l, l + kLanes, l + 2 kLanes, ...
// Shared-memory rows are padded to an odd stride (kD + 1) so that the row groups of one warp,
// reading the same column of different rows, hit different banks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fasttrack {

// exp(x) = exp2(x * log2(e)): the kernels keep scores in the log2 domain and use exp2f.
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float to_float<__half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// dst[r * ld + c] = src[(row0 + r) * row_stride + c * col_stride] for r < kRows, c < kCols,
// zero where row0 + r >= nrows or c >= ncols. Zero rows and columns make padded dot products
// and padded P.V terms exact zeros, so the compute loops need no bounds checks.
// Consecutive threads take consecutive columns: coalesced when col_stride == 1.
template <typename T, int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_tile(float* dst, int ld, const T* src, int64_t row_stride,
                                          int64_t col_stride, int row0, int nrows, int ncols) {
#pragma unroll 4
  for (int idx = threadIdx.x; idx < kRows * kCols; idx += kThreads) {
    const int r = idx / kCols;
    const int c = idx % kCols;
    const int gr = row0 + r;
    float x = 0.f;
    if (gr < nrows && c < ncols) {
      x = to_float(src[static_cast<int64_t>(gr) * row_stride + static_cast<int64_t>(c) * col_stride]);
    }
    dst[r * ld + c] = x;
  }
}

// Max / sum over the kLanes threads of a row group. Every thread of the warp must call these
// (full-warp shuffle mask), which the kernels guarantee by never branching around them.
template <int kLanes>
__device__ __forceinline__ float group_max(float x) {
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  }
  return x;
}

template <int kLanes>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) {
    x += __shfl_xor_sync(0xffffffffu, x, off);
  }
  return x;
}

// s[c] = sum_{d < kD} a[d] * tile[(lane + kLanes * c) * ld + d] for c < kCols: the dot products
// of one shared-memory row `a` with the tile rows this lane owns. a[d] is read once per d and
// reused kCols times from a register.
template <int kD, int kCols, int kLanes>
__device__ __forceinline__ void dot_rows(float (&s)[kCols], const float* a, const float* tile,
                                         int ld, int lane) {
#pragma unroll
  for (int c = 0; c < kCols; ++c) s[c] = 0.f;
#pragma unroll 8
  for (int d = 0; d < kD; ++d) {
    const float ad = a[d];
#pragma unroll
    for (int c = 0; c < kCols; ++c) s[c] = fmaf(ad, tile[(lane + kLanes * c) * ld + d], s[c]);
  }
}

// Online softmax of one query row (FlashAttention-2, Dao 2023, Algorithm 1) in the log2 domain:
// the running max m of the scores seen so far and the running sum l of exp2(score - m).
struct RowSoftmax {
  float m = -INFINITY;
  float l = 0.f;

  // What scores are measured against: m, or 0 while every score seen is -inf (only possible
  // with infinite inputs or no keys), so that no exp2f(-inf - -inf) = NaN enters the sums.
  __device__ __forceinline__ float ref() const { return m == -INFINITY ? 0.f : m; }
  // 1 / l, or 0 for an empty row (Nk == 0: the output is 0).
  __device__ __forceinline__ float inv_sum() const { return l > 0.f ? 1.f / l : 0.f; }
  // Natural-log log-sum-exp of the row, -inf for an empty row.
  __device__ __forceinline__ float lse() const { return l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY; }
};

// Folds one key tile into the row's running max and sum: the update every softmax kernel here
// shares (attention_fwd with and without V, cross_attention_fwd). s holds this lane's kCols
// scores of the tile, already in the log2 domain (s * log2 e * q.k), -inf for padded keys; the
// kLanes lanes of the row group call it together (group shuffles). On return s[c] is
// exp2(s[c] - st.ref()), the unnormalized probability against the new max, and the result is
// exp2(m_old - m_new), the factor by which sums and accumulators over earlier tiles shrink.
template <int kLanes, int kCols>
__device__ __forceinline__ float online_softmax_update(RowSoftmax& st, float (&s)[kCols]) {
  float tile_max = -INFINITY;
#pragma unroll
  for (int c = 0; c < kCols; ++c) tile_max = fmaxf(tile_max, s[c]);
  const float m_old = st.m;
  st.m = fmaxf(m_old, group_max<kLanes>(tile_max));
  const float m_ref = st.ref();
  const float rescale = exp2f(m_old - m_ref);
  float tile_sum = 0.f;
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    s[c] = exp2f(s[c] - m_ref);  // 0 for padded keys
    tile_sum += s[c];
  }
  st.l = st.l * rescale + group_sum<kLanes>(tile_sum);
  return rescale;
}

}  // namespace fasttrack
