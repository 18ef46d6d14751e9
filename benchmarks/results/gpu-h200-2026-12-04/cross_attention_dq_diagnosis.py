"""The diagnosis behind run2-cross-attention-dq-diagnosis.txt: dQ/dK/dV row errors of the Triton
cross-attention backward against float64 with the delta row term taken (a) as the launcher does,
(b) from the flash forward, (c) from float64 out/lse, (d) exactly in float64. Run from the
repository root: python benchmarks/results/gpu-h200-2026-12-04/cross_attention_dq_diagnosis.py
(EXACT=0 forces the FA2 rowsum(dO * O) form; on CPU it runs small fp16 cases under the interpreter)."""
import os, sys, time
import torch
import triton
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from fasttrack.ops import reference as R
from _oracle import row_err
from fasttrack.kernels import cross_attention as CA, attention as A
EXACT = os.environ.get('EXACT', '1') == '1'
from fasttrack.kernels._common import attention_config, pad, device_arch, dot_precision, launch, check_grid

DEV = "cuda" if torch.cuda.is_available() else "cpu"
F16, BF16 = torch.float16, torch.bfloat16

def inputs(shape, dtype, seed):
    B, H, Nq, Nk, D, Dv = shape
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = (torch.randn(B, H, Nq, D, device=DEV, generator=g) * 1.5).to(dtype)
    k = torch.randn(B, H, Nk, D, device=DEV, generator=g).to(dtype)
    v = torch.randn(B, H, Nk, Dv, device=DEV, generator=g).to(dtype)
    return q, k, v

def cot(shape, dtype, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    return torch.randn(shape, device=DEV, generator=g).to(dtype)

def bwd(q, k, v, out, lse, dout, extra, scale, delta=None):
    """attention_bwd with an optional injected delta (B,H,Nq) float32."""
    B, H, Nq, D = q.shape; Nk, Dv = k.shape[2], v.shape[3]
    flags = dict(HAS_DO=True, HAS_EXTRA=True, PREC=dot_precision(q.dtype))
    sizes = (float(scale), H, Nq, Nk, D, Dv)
    def tiles(kind):
        cfg = attention_config(pad(D), pad(Dv), q.dtype, kind, device_arch(q.device))
        return cfg, dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(D), BLOCK_DV=pad(Dv),
                         num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    lse = lse.float().contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    cfg, kw = tiles("dq")
    grid = (triton.cdiv(Nq, cfg.block_m), B * H)
    if delta is None:
        delta = torch.empty((B, H, Nq), device=q.device, dtype=torch.float32)
        launch(A._attention_bwd_preprocess_kernel)[grid](q, k, v, out, dout, lse, lse, extra, delta, *sizes,
                                                        HAS_DLSE=False, EXACT=EXACT, **flags, **kw)
    launch(A._attention_bwd_dq_kernel)[grid](q, k, v, dout, lse, delta, extra, dq, *sizes, **flags, **kw)
    cfg, kw = tiles("dkdv")
    launch(A._attention_bwd_dkdv_kernel)[(triton.cdiv(Nk, cfg.block_n), B * H)](
        q, k, v, dout, lse, delta, extra, dk, dv, *sizes, **flags, **kw)
    return dq, dk, dv, delta

def plain(q, k, v):
    p = torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, -1)
    return p @ v, p.mean(1)

def main(cases, dtypes, seeds):
    for shape in cases:
        B, H, Nq, Nk, D, Dv = shape
        scale = D ** -0.5
        for dtype in dtypes:
            for seed in seeds:
                q, k, v = inputs(shape, dtype, seed)
                out, probs, lse = CA.cross_attention_fwd(q, k, v, scale)
                out2, lse2 = A._forward(q, k, v, scale)
                l64 = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
                z = (l64[0] @ l64[1].transpose(-1, -2)) * scale
                lse64 = torch.logsumexp(z, -1)
                ro, rp = R.cross_attention(*l64)
                do = cot(out.shape, dtype, seed + 1); dp = cot(probs.shape, dtype, seed + 2)
                want = torch.autograd.grad((ro, rp), l64, (do.double(), dp.double()))
                lp = [t.detach().requires_grad_(True) for t in (q, k, v)]
                po, pp = plain(*lp)
                yard = torch.autograd.grad((po, pp), lp, (do, dp))
                P = torch.softmax(z, -1).detach()
                E = dp.float() / H
                dP = do.double() @ v.double().transpose(-1, -2) + E.double()[:, None]
                delta64 = (P * dP).sum(-1)
                print(f"\n== shape {shape} {dtype} seed {seed}")
                print(f"  lse abs err fused {float((lse.double()-lse64).abs().max()):.2e}  flash {float((lse2.double()-lse64).abs().max()):.2e}")
                print(f"  out row err fused {row_err(out, ro):.3e} flash {row_err(out2, ro):.3e} plain {row_err(po, ro):.3e}")
                print(f"  probs row err fused {row_err(probs, rp):.3e} plain {row_err(pp, rp):.3e}")
                variants = {
                    "current(fused fwd)": (out, lse, None),
                    "flash fwd": (out2, lse2, None),
                    "lse64,out64->lowp": (ro.detach().to(dtype), lse64.float(), None),
                    "exact delta64": (out, lse, delta64.float()),
                    "exact delta, lse64": (out, lse64.float(), delta64.float()),
                }
                ystr = " ".join(f"{n}={row_err(y, w):.3e}" for n, y, w in zip("qkv", yard, want))
                print(f"  plain yardstick: {ystr}")
                for name, (o_, l_, d_) in variants.items():
                    dq, dk, dv, delta = bwd(q, k, v, o_.contiguous(), l_, do.contiguous(), E.contiguous(), scale, d_)
                    derr = float((delta.double() - delta64).abs().max())
                    s = " ".join(f"{n}={row_err(g, w):.3e}" for n, g, w in zip("qkv", (dq, dk, dv), want))
                    print(f"  {name:22s} {s}  delta abs err {derr:.2e}")
                # where is the worst dq row for the current variant
                dq, *_ = bwd(q, k, v, out, lse, do.contiguous(), E.contiguous(), scale)
                w = want[0].double()
                err = (dq.double() - w).abs().amax(-1) / w.abs().amax(-1).clamp_min(1e-6)
                idx = torch.nonzero(err == err.max())[0].tolist()
                b, h, i = idx
                print(f"  worst dq row {idx}: err {float(err.max()):.3e}, ref max {float(w[b,h,i].abs().max()):.3e}, "
                      f"median row ref max {float(w.abs().amax(-1).median()):.3e}, rows err>0.1: {int((err>0.1).sum())}")
                print(f"   P row max {float(P[b,h,i].max()):.3f}  delta64 {float(delta64[b,h,i]):.4f} delta {float(bwd(q,k,v,out,lse,do.contiguous(),E.contiguous(),scale)[3][b,h,i]):.4f}")
                # determinism
                a1 = CA.cross_attention_fwd(q, k, v, scale); a2 = CA.cross_attention_fwd(q, k, v, scale)
                print(f"  fwd deterministic: {all(torch.equal(x, y) for x, y in zip(a1, a2))}")

if __name__ == "__main__":
    if DEV == "cuda":
        main([(2, 5, 1031, 29, 40, 40)], [F16], [1830174484, 1])
        main([(1, 8, 1031, 32, 64, 48)], [BF16], [539604729, 1])
    else:
        main([(1, 3, 97, 29, 40, 40)], [F16], [3])
