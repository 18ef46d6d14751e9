"""Calls every CUDA forward of fasttrack._C at odd sizes, for scripts/sanitize.sh.

Sizes are chosen to leave partial tiles everywhere: N = 37 and 300 (not multiples of the 16-, 32-
and 64-row tiles), D = 40 (padded to 64), T = 77 (padded to 128), odd Dv, non-contiguous q and
cross. Inputs are made on the CPU and copied, and references are computed on the CPU in float64,
so the only kernels that touch device memory are fasttrack's (compute-sanitizer's kernel filter
then sees every write the checked kernels depend on). Exits 1 on a numerical mismatch, so the
script doubles as a GPU smoke test: `python scripts/sanitize_driver.py`.
"""
from __future__ import annotations

import math
import sys

import torch

from fasttrack.ops import cuda_backend as cb

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Max abs error allowed against float64, by dtype (values are O(1) softmax averages).
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}


def make(shape, dtype, dev, permute=None):
    """A device tensor of `shape`; with `permute`, a non-contiguous view of a permuted base."""
    if permute is None:
        return torch.randn(shape, dtype=torch.float64).to(dtype).to(dev)
    inv = [permute.index(i) for i in range(len(shape))]
    base = torch.randn([shape[p] for p in permute], dtype=torch.float64).to(dtype).to(dev)
    return base.permute(*inv)


def ref_scores(q, k, scale):
    z = torch.matmul(q.cpu().double(), k.cpu().double().transpose(-1, -2)) * scale
    return z, torch.logsumexp(z, dim=-1)


def check(name, got, want, dtype, failures):
    err = (got.cpu().double() - want).abs().max().item() if want.numel() else 0.0
    ok = math.isfinite(err) and err <= TOL[dtype] * max(1.0, want.abs().max().item())
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.2e}", flush=True)
    if not ok:
        failures.append(name)


def run(dev) -> list[str]:
    failures: list[str] = []
    torch.manual_seed(0)
    b, h, d = 2, 3, 40
    for dtype in DTYPES:
        tag = str(dtype).replace("torch.", "")
        scale = d ** -0.5
        for nq, nk in ((37, 300), (300, 37)):
            q = make((b, h, nq, d), dtype, dev, permute=(0, 2, 1, 3))  # (B, N, H, D) storage
            k = make((b, h, nk, d), dtype, dev)
            v = make((b, h, nk, 33), dtype, dev)
            z, lse_ref = ref_scores(q, k, scale)
            p = torch.softmax(z, dim=-1)

            lse = cb.lse_fwd(q, k, scale)
            torch.cuda.synchronize()
            check(f"lse_fwd {tag} Nq={nq} Nk={nk}", lse, lse_ref, torch.float32, failures)

            out, lse2 = cb.attention_fwd(q, k, v, scale)
            torch.cuda.synchronize()
            check(f"attention_fwd out {tag} Nq={nq} Nk={nk}", out, p @ v.cpu().double(), dtype, failures)
            check(f"attention_fwd lse {tag} Nq={nq} Nk={nk}", lse2, lse_ref, torch.float32, failures)

            out, probs, lse3 = cb.cross_attention_fwd(q, k, v, scale)
            torch.cuda.synchronize()
            check(f"cross_attention_fwd out {tag} Nq={nq} Nk={nk}", out, p @ v.cpu().double(), dtype, failures)
            check(f"cross_attention_fwd probs {tag} Nq={nq} Nk={nk}", probs, p.mean(1), dtype, failures)
            check(f"cross_attention_fwd lse {tag} Nq={nq} Nk={nk}", lse3, lse_ref, torch.float32, failures)

        for n in (37, 300):
            q = make((b, h, n, d), dtype, dev, permute=(0, 2, 1, 3))
            k = make((b, h, n, d), dtype, dev)
            cross = make((b, n, 77), dtype, dev, permute=(0, 2, 1))  # token-major storage
            z, lse_ref = ref_scores(q, k, scale)
            lse = lse_ref.float().to(dev)
            p = torch.exp(z - lse.cpu().double().unsqueeze(-1))
            want = p.mean(1).transpose(-1, -2) @ cross.cpu().double()
            got = cb.self_cross_fwd(q, k, cross, lse, scale)
            torch.cuda.synchronize()
            check(f"self_cross_fwd {tag} N={n} T=77", got, want, dtype, failures)
    return failures


def main() -> int:
    if not cb.HAS_CUDA_EXT:
        print(f"fasttrack._C unusable: {cb.CUDA_EXT_ERROR}", file=sys.stderr)
        return 2
    failures = run(torch.device("cuda"))
    if failures:
        print(f"{len(failures)} mismatches: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("all CUDA forwards match the float64 references")
    return 0


if __name__ == "__main__":
    sys.exit(main())
