// Runs the forward kernels' device code on the host (host_shim.h) at odd sizes and checks them
// against float64 references computed here from the same (rounded) inputs. Exit status 0 when
// every case matches. Inputs are strided with shuffled dimension orders and padded rows, like
// non-contiguous torch tensors, and live in exact-size heap arrays so that AddressSanitizer
// catches any access outside them. Built and run by tests/test_build.py:
//   g++ -std=c++20 -O1 -fsanitize=address,undefined -I<cuda>/include -Icsrc emulate_kernels.cpp
#include "host_shim.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "attention_kernel.cuh"
#include "cross_attention_kernel.cuh"
#include "self_cross_kernel.cuh"
#include "static_switch.h"

using namespace fasttrack;

namespace {

std::mt19937 rng(1234);

template <typename T>
T store(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else return __float2bfloat16_rn(x);
}

// A strided tensor: dimensions laid out in a random order, the innermost one padded by `pad`.
template <typename T>
struct Strided {
  std::vector<int64_t> shape, stride;
  std::unique_ptr<T[]> data;
  Strided(std::vector<int64_t> shp, int pad) : shape(shp), stride(shp.size()) {
    std::vector<size_t> order(shp.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    int64_t s = 1;
    for (size_t r = order.size(); r-- > 0;) {
      stride[order[r]] = s;
      s *= shape[order[r]] + (r + 1 == order.size() ? pad : 0);
    }
    int64_t n = 1;
    for (size_t i = 0; i < shp.size(); ++i) n += (shp[i] - 1) * stride[i];
    data.reset(new T[n]);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t i = 0; i < n; ++i) data[i] = store<T>(normal(rng));
  }
  int64_t offset(std::initializer_list<int64_t> idx) const {
    int64_t o = 0, d = 0;
    for (int64_t i : idx) o += i * stride[d++];
    return o;
  }
  double at(std::initializer_list<int64_t> idx) const { return to_float(data[offset(idx)]); }
  void copy_strides(int64_t* dst) const { std::copy(stride.begin(), stride.end(), dst); }
};

double tolerance(DType dt) {
  return dt == DType::kFloat32 ? 2e-5 : (dt == DType::kFloat16 ? 3e-3 : 2.5e-2);
}

enum class Op { kLse, kAttention, kCrossAttention };
const char* name(Op op) {
  return op == Op::kLse ? "lse_fwd" : (op == Op::kAttention ? "attention_fwd" : "cross_attention_fwd");
}

template <typename T>
bool check_attention(Op op, DType dt, int B, int H, int Nq, int Nk, int D, int Dv) {
  Strided<T> q({B, H, Nq, D}, 1), k({B, H, Nk, D}, 0), v({B, H, Nk, Dv}, 3);
  Strided<T> out({B, H, Nq, Dv}, 0), probs({B, Nq, Nk}, 2);
  Strided<float> lse({B, H, Nq}, 0);
  const float scale = 1.3f / std::sqrt(static_cast<float>(D));  // sharper than 1/sqrt(D)
  AttnParams p{};
  p.q = q.data.get();
  p.k = k.data.get();
  p.v = op == Op::kLse ? nullptr : v.data.get();
  p.out = op == Op::kLse ? nullptr : out.data.get();
  p.lse = lse.data.get();
  p.probs = op == Op::kCrossAttention ? probs.data.get() : nullptr;
  p.batch = B, p.heads = H, p.nq = Nq, p.nk = Nk, p.d = D, p.dv = op == Op::kLse ? 0 : Dv;
  q.copy_strides(p.q_stride), k.copy_strides(p.k_stride), v.copy_strides(p.v_stride);
  out.copy_strides(p.out_stride), lse.copy_strides(p.lse_stride), probs.copy_strides(p.probs_stride);
  p.scale = scale, p.dtype = dt;

  bool ok = HEADDIM_SWITCH(op == Op::kLse ? D : std::max(D, Dv), kD, [&] {
    if (op == Op::kLse) {  // the attention kernel without V (kHasV = false)
      using C = AttentionConfig<false>;
      return emu::launch(dim3((Nq + C::kBlockM - 1) / C::kBlockM, H, B), C::kThreads,
                         C::template smem_bytes<kD>(), [&] { attention_fwd_kernel<T, kD, false>(p); });
    }
    if (op == Op::kAttention) {
      using C = AttentionConfig<true>;
      return emu::launch(dim3((Nq + C::kBlockM - 1) / C::kBlockM, H, B), C::kThreads,
                         C::template smem_bytes<kD>(), [&] { attention_fwd_kernel<T, kD, true>(p); });
    }
    using C = CrossAttentionConfig;
    return emu::launch(dim3((Nq + C::kBlockM - 1) / C::kBlockM, B, 1), C::kThreads,
                       C::smem_bytes<kD>(Nk), [&] { cross_attention_fwd_kernel<T, kD>(p); });
  });

  double err_out = 0, err_lse = 0, err_probs = 0;
  std::vector<double> s(Nk), mean(static_cast<size_t>(Nq) * Nk);
  for (int b = 0; b < B; ++b) {
    std::fill(mean.begin(), mean.end(), 0.0);
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < Nq; ++i) {
        double m = -INFINITY, l = 0;
        for (int j = 0; j < Nk; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += q.at({b, h, i, d}) * k.at({b, h, j, d});
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        for (int j = 0; j < Nk; ++j) l += std::exp(s[j] - m);
        const double L = m + std::log(l);
        err_lse = std::max(err_lse, std::abs(L - lse.at({b, h, i})));
        if (op == Op::kLse) continue;
        for (int c = 0; c < Dv; ++c) {
          double o = 0;
          for (int j = 0; j < Nk; ++j) o += std::exp(s[j] - L) * v.at({b, h, j, c});
          err_out = std::max(err_out, std::abs(o - out.at({b, h, i, c})));
        }
        for (int j = 0; j < Nk; ++j) mean[static_cast<size_t>(i) * Nk + j] += std::exp(s[j] - L) / H;
      }
    }
    if (op != Op::kCrossAttention) continue;
    for (int i = 0; i < Nq; ++i)
      for (int j = 0; j < Nk; ++j)
        err_probs = std::max(err_probs, std::abs(mean[static_cast<size_t>(i) * Nk + j] - probs.at({b, i, j})));
  }
  const double tol = tolerance(dt);
  ok = ok && err_out <= tol && err_probs <= tol && err_lse <= 1e-4;  // NaN fails every comparison
  std::printf("%s %-19s dtype=%d B=%d H=%d Nq=%d Nk=%d D=%d Dv=%d: out %.1e lse %.1e probs %.1e\n",
              ok ? "PASS" : "FAIL", name(op), static_cast<int>(dt), B, H, Nq, Nk, D, Dv, err_out, err_lse,
              err_probs);
  return ok;
}

template <typename T>
bool check_self_cross(DType dt, int B, int H, int Nq, int Nk, int D, int Tt) {
  Strided<T> q({B, H, Nq, D}, 1), k({B, H, Nk, D}, 0), cross({B, Nq, Tt}, 1), out({B, Nk, Tt}, 2);
  Strided<float> lse({B, H, Nq}, 0);
  const float scale = 1.1f / std::sqrt(static_cast<float>(D));
  auto score = [&](int b, int h, int i, int j) {
    double dot = 0;
    for (int d = 0; d < D; ++d) dot += q.at({b, h, i, d}) * k.at({b, h, j, d});
    return dot * scale;
  };
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Nq; ++i) {
        double m = -INFINITY, l = 0;
        for (int j = 0; j < Nk; ++j) m = std::max(m, score(b, h, i, j));
        for (int j = 0; j < Nk; ++j) l += std::exp(score(b, h, i, j) - m);
        lse.data[lse.offset({b, h, i})] = static_cast<float>(m + std::log(l));
      }
  SelfCrossParams p{};
  p.q = q.data.get(), p.k = k.data.get(), p.cross = cross.data.get(), p.lse = lse.data.get();
  p.out = out.data.get();
  p.batch = B, p.heads = H, p.nq = Nq, p.nk = Nk, p.d = D, p.t = Tt;
  q.copy_strides(p.q_stride), k.copy_strides(p.k_stride), cross.copy_strides(p.cross_stride);
  lse.copy_strides(p.lse_stride), out.copy_strides(p.out_stride);
  p.scale = scale, p.dtype = dt;

  bool ok = HEADDIM_SWITCH(D, kD, [&] {
    return TOKENS_SWITCH(Tt, kT, [&] {
      using C = SelfCrossConfig;
      return emu::launch(dim3((Nk + C::kBlockN - 1) / C::kBlockN, B, 1), C::kThreads, C::smem_bytes<kD, kT>(),
                         [&] { self_cross_fwd_kernel<T, kD, kT>(p); });
    });
  });

  double err = 0, mag = 0;
  std::vector<double> acc(Tt);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < Nk; ++j) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < Nq; ++i) {
          const double pij = std::exp(score(b, h, i, j) - lse.at({b, h, i}));
          for (int t = 0; t < Tt; ++t) acc[t] += pij * cross.at({b, i, t});
        }
      for (int t = 0; t < Tt; ++t) {
        mag = std::max(mag, std::abs(acc[t] / H));
        err = std::max(err, std::abs(acc[t] / H - out.at({b, j, t})));
      }
    }
  ok = ok && err <= tolerance(dt) * std::max(1.0, mag);
  std::printf("%s %-19s dtype=%d B=%d H=%d Nq=%d Nk=%d D=%d T=%d: out %.1e (max |out| %.2f)\n",
              ok ? "PASS" : "FAIL", "self_cross_fwd", static_cast<int>(dt), B, H, Nq, Nk, D, Tt, err, mag);
  return ok;
}

}  // namespace

int main() {
  using bf16 = __nv_bfloat16;
  constexpr DType f32 = DType::kFloat32, f16 = DType::kFloat16, b16 = DType::kBFloat16;
  bool ok = true;
  ok &= check_attention<float>(Op::kLse, f32, 2, 3, 37, 77, 40, 40);
  ok &= check_attention<float>(Op::kLse, f32, 1, 2, 130, 300, 64, 64);
  ok &= check_attention<__half>(Op::kLse, f16, 1, 2, 67, 45, 100, 100);
  ok &= check_attention<bf16>(Op::kLse, b16, 2, 1, 9, 1, 16, 16);
  ok &= check_attention<float>(Op::kAttention, f32, 2, 3, 37, 77, 40, 24);
  ok &= check_attention<float>(Op::kAttention, f32, 1, 2, 130, 65, 128, 100);
  ok &= check_attention<float>(Op::kAttention, f32, 1, 1, 5, 1, 8, 128);
  ok &= check_attention<__half>(Op::kAttention, f16, 1, 2, 67, 45, 72, 72);
  ok &= check_attention<bf16>(Op::kAttention, b16, 1, 2, 67, 45, 32, 80);
  ok &= check_attention<float>(Op::kCrossAttention, f32, 2, 3, 37, 77, 40, 40);
  ok &= check_attention<float>(Op::kCrossAttention, f32, 1, 2, 20, 300, 128, 17);
  ok &= check_attention<__half>(Op::kCrossAttention, f16, 1, 3, 19, 33, 64, 64);
  ok &= check_attention<bf16>(Op::kCrossAttention, b16, 1, 2, 18, 1, 16, 8);
  ok &= check_self_cross<float>(f32, 2, 3, 37, 37, 40, 77);
  ok &= check_self_cross<float>(f32, 1, 2, 70, 45, 128, 256);
  ok &= check_self_cross<float>(f32, 1, 1, 33, 300, 64, 5);
  ok &= check_self_cross<__half>(f16, 1, 2, 40, 50, 40, 130);
  ok &= check_self_cross<bf16>(b16, 2, 2, 41, 33, 96, 64);
  std::printf(ok ? "all emulated kernels match the float64 references\n" : "MISMATCH\n");
  return ok ? 0 : 1;
}
