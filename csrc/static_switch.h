// Compile-time switches (flash-attention style): each turns a runtime value into a constexpr
// or a type inside the lambda given as the last argument, so a launcher instantiates exactly
// the kernels it needs and every instantiation lives in one place.
//
//   DTYPE_SWITCH(p.dtype, T, [&] { launch<T>(p); });
//   HEADDIM_SWITCH(max(d, dv), kD, [&] { launch<T, kD>(p); });
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#include "params.h"

// float32 / float16 / bfloat16 inputs; accumulation is always float32 inside the kernels.
#define DTYPE_SWITCH(DTYPE, T, ...)                                                     \
  [&] {                                                                                 \
    switch (DTYPE) {                                                                    \
      case ::fasttrack::DType::kFloat32: {                                              \
        using T = float;                                                                \
        return __VA_ARGS__();                                                           \
      }                                                                                 \
      case ::fasttrack::DType::kFloat16: {                                              \
        using T = __half;                                                               \
        return __VA_ARGS__();                                                           \
      }                                                                                 \
      case ::fasttrack::DType::kBFloat16: {                                             \
        using T = __nv_bfloat16;                                                        \
        return __VA_ARGS__();                                                           \
      }                                                                                 \
    }                                                                                   \
    throw std::invalid_argument("fasttrack._C: argument 'dtype' = " +                   \
                                std::to_string(static_cast<int>(DTYPE)) +               \
                                " is not a dtype code (0 float32, 1 float16, 2 bfloat16)"); \
  }()

// Head dims padded up to 32 / 64 / 128: shared-memory tiles are zero-filled past the real
// dim, so the padded columns add exact zeros to every dot product. Callers check D <= 128.
#define HEADDIM_SWITCH(HEADDIM, kHeadDim, ...) \
  [&] {                                        \
    if ((HEADDIM) <= 32) {                     \
      constexpr int kHeadDim = 32;             \
      return __VA_ARGS__();                    \
    } else if ((HEADDIM) <= 64) {              \
      constexpr int kHeadDim = 64;             \
      return __VA_ARGS__();                    \
    } else {                                   \
      constexpr int kHeadDim = 128;            \
      return __VA_ARGS__();                    \
    }                                          \
  }()

// Token counts T of a cross map padded up to 64 / 128 / 256 (77 for Stable Diffusion -> 128).
// Callers check T <= 256.
#define TOKENS_SWITCH(TOKENS, kTokens, ...) \
  [&] {                                     \
    if ((TOKENS) <= 64) {                   \
      constexpr int kTokens = 64;           \
      return __VA_ARGS__();                 \
    } else if ((TOKENS) <= 128) {           \
      constexpr int kTokens = 128;          \
      return __VA_ARGS__();                 \
    } else {                                \
      constexpr int kTokens = 256;          \
      return __VA_ARGS__();                 \
    }                                       \
  }()
