"""Fused DeTrack box branch (kernels/box_branch.py, csrc/box_branch.cu, fused.py) against the
reference BoxBranch module. On CPU the Triton kernel runs under TRITON_INTERPRET=1 (set here,
before the kernel module is imported); CUDA-only checks are skipped without a GPU."""
from __future__ import annotations

import copy
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fasttrack.trackers.detrack.box_branch import BoxBranch  # noqa: E402
from fasttrack.trackers.detrack.fused import FusedBoxBranch, box_branch_torch  # noqa: E402

from fasttrack.kernels import box_branch as kb  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _module(dim, heads, mlp_ratio, noise_hidden, dtype, gen):
    """Reference module with weights large enough that every stage moves the output."""
    m = BoxBranch(dim, heads, mlp_ratio, noise_hidden)
    with torch.no_grad():
        for name, p in m.named_parameters():
            scale = 1.0 / p.shape[-1] ** 0.5 if p.dim() == 2 else 0.2
            offset = 1.0 if name.endswith("norm1.weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * scale + offset)
    return m.to(DEV, dtype).eval()


def _inputs(B, nq, ns, dim, heads, dtype, gen):
    """b (B, nq, C) with a large mean (LayerNorm cancellation), k, v as strided views of a
    qkv-like (B, Ns, 3, H, D) tensor, as the visual block hands them over."""
    b = (torch.randn(B, nq, dim, generator=gen) * 2 + 5).to(DEV, dtype)
    qkv = torch.randn(B, ns, 3, heads, dim // heads, generator=gen).to(DEV, dtype).permute(2, 0, 3, 1, 4)
    return b, qkv[1], qkv[2]


def _weights(m):
    params = dict(m.named_parameters())
    return [params[n] for n in kb.WEIGHT_NAMES]


def _rel_err(out, ref):
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.mark.parametrize("B,nq,ns,dim,heads,mlp,nph,blocks", [
    (3, 4, 37, 48, 3, 2.5, 40, (16, 32, 16)),   # odd Ns, hidden 120: masked tiles everywhere
    (2, 3, 37, 36, 3, 2.0, 24, (16, 16, 16)),   # Nq = 3 (padded row), head dim 12 (not 2^k)
    (1, 4, 5, 40, 5, 1.5, 16, (None, None, None)),  # default tiles, 5 keys, head dim 8
])
def test_triton_matches_reference_float64(B, nq, ns, dim, heads, mlp, nph, blocks, rng):
    if DEV == "cpu" and not kb._kernel_is_interpreted():
        pytest.skip("kernel module imported without TRITON_INTERPRET=1")
    m = _module(dim, heads, mlp, nph, torch.float64, rng)
    b, k, v = _inputs(B, nq, ns, dim, heads, torch.float64, rng)
    ref = m(b, k, v)
    out = kb.box_branch_fwd(b, k, v, _weights(m), eps=(m.norm1.eps, m.norm2.eps),
                            block_n=blocks[0], block_k=blocks[1], block_s=blocks[2])
    assert out.shape == ref.shape and out.dtype == torch.float64
    assert _rel_err(out, ref) < 1e-12


@pytest.mark.parametrize("B,nq,ns,dim,heads,mlp,nph,blocks", [
    # B * Nq = 20 and 21 rows: the last 16-row block is ragged; C = 80 and 48 are not multiples
    # of the 32-wide column / reduction tiles; hidden 120 not a multiple of 16 (unaligned path).
    (5, 4, 37, 80, 5, 1.5, 24, (None, None, None, None)),
    (7, 3, 37, 48, 3, 2.5, 40, (16, 16, 16, 16)),
    (3, 4, 1, 80, 5, 2.0, 80, (32, 16, 32, 32)),  # one key; block_m 32 > rows of a tile
])
def test_triton_ragged_sizes_float64(B, nq, ns, dim, heads, mlp, nph, blocks, rng):
    if DEV == "cpu" and not kb._kernel_is_interpreted():
        pytest.skip("kernel module imported without TRITON_INTERPRET=1")
    m = _module(dim, heads, mlp, nph, torch.float64, rng)
    b, k, v = _inputs(B, nq, ns, dim, heads, torch.float64, rng)
    ref = m(b, k, v)
    bn, bk, bs, bm = blocks
    out = kb.box_branch_fwd(b, k, v, _weights(m), eps=(m.norm1.eps, m.norm2.eps),
                            block_n=bn, block_k=bk, block_s=bs, block_m=bm)
    assert _rel_err(out, ref) < 1e-12


@pytest.mark.parametrize("dim,heads", [(48, 3), (36, 3)])
def test_triton_strided_views_float64(dim, heads, rng):
    """b and out as row-strided views (stride(1) != C), k / v without a unit head-dim stride.
    C = 48: the launcher copies b (row strides not multiples of 16) and writes the (aligned)
    out view in place; C = 36: the kernels read and write both views in place through the
    two-level row addressing, on the unaligned variants."""
    if DEV == "cpu" and not kb._kernel_is_interpreted():
        pytest.skip("kernel module imported without TRITON_INTERPRET=1")
    m = _module(dim, heads, 2.5, 40, torch.float64, rng)
    b0, k0, v0 = _inputs(3, 4, 37, dim, heads, torch.float64, rng)
    ref = m(b0, k0, v0)
    big = torch.zeros(3, 5, dim + 3, dtype=torch.float64, device=DEV)
    big[:, 1:, 1:dim + 1] = b0
    b = big[:, 1:, 1:dim + 1]                                # row strides (5 (C+3), C+3)
    k = k0.transpose(-1, -2).contiguous().transpose(-1, -2)  # head-dim stride Ns
    v = v0.transpose(-1, -2).contiguous().transpose(-1, -2)
    out_buf = torch.full((3, 4, 2, dim), float("nan"), dtype=torch.float64, device=DEV)
    out = out_buf[:, :, 1]                                   # row strides (8 C, 2 C)
    assert kb.box_branch_fwd(b, k, v, _weights(m), eps=(m.norm1.eps, m.norm2.eps), out=out) is out
    assert _rel_err(out, ref) < 1e-12
    assert torch.isnan(out_buf[:, :, 0]).all()  # nothing written outside the view


def test_config_and_aot_specs_agree():
    """aot_specs lists the linear kernel per epilogue and row block with the tiles the launcher's
    config function picks, at ViT-B widths, for every GPU arch the report compiles."""
    for rows, bm in ((4, 16), (16, 16), (20, 32), (64, 64), (4096, 64)):
        assert kb.box_branch_config(rows, 4, 64, torch.float16, interpret=False).block_m == bm
    for arch in (80, 89, 90):
        specs = kb.aot_specs(arch)
        assert {s.dtype for s in specs} == {torch.float16, torch.bfloat16, torch.float32}
        for s in specs:
            cfg = kb.box_branch_config(s.constexprs.get("BLOCK_M", 16), 4, 64, s.dtype,
                                       interpret=False)
            assert s.constexprs.get("BLOCK_N", cfg.block_n) == cfg.block_n
            assert s.constexprs.get("BLOCK_K", cfg.block_k) == cfg.block_k
            assert s.constexprs.get("BLOCK_S", cfg.block_s) == cfg.block_s
            names = set(s.kernel.arg_names)
            assert set(s.signature) | set(s.constexprs) == names, s.label
            assert all(t in ("*fp16", "*bf16", "*fp32", "i32", "i64", "fp32")
                       for t in s.signature.values())
        linear = [s for s in specs if s.kernel is kb._box_branch_linear_kernel]
        assert {s.constexprs["BLOCK_M"] for s in linear} == {16, 32, 64}
        assert {(s.constexprs["ACT"], s.constexprs["RES"]) for s in linear} == {
            (kb.ACT_NONE, kb.RES_NONE), (kb.ACT_NONE, kb.RES_ADD), (kb.ACT_GELU, kb.RES_NONE),
            (kb.ACT_RELU, kb.RES_NONE), (kb.ACT_NONE, kb.RES_SUB)}


def test_triton_float32_against_float64_reference(rng):
    if DEV == "cpu" and not kb._kernel_is_interpreted():
        pytest.skip("kernel module imported without TRITON_INTERPRET=1")
    m64 = _module(48, 3, 2.5, 40, torch.float64, rng)
    b, k, v = _inputs(3, 4, 37, 48, 3, torch.float64, rng)
    ref = m64(b, k, v)
    m32 = copy.deepcopy(m64).float()
    out = kb.box_branch_fwd(b.float(), k.float(), v.float(), _weights(m32), block_n=16,
                            block_k=32, block_s=16)
    torch_err = _rel_err(m32(b.float(), k.float(), v.float()), ref)
    assert _rel_err(out, ref) < max(2 * torch_err, 1e-6)
    assert _rel_err(out, ref) < 1e-5


def test_triton_float32_ragged_against_float64_reference(rng):
    """float32 IEEE dots at B * Nq = 20 rows, C = 80, Ns = 37, default interpreter tiles."""
    if DEV == "cpu" and not kb._kernel_is_interpreted():
        pytest.skip("kernel module imported without TRITON_INTERPRET=1")
    m64 = _module(80, 5, 1.5, 24, torch.float64, rng)
    b, k, v = _inputs(5, 4, 37, 80, 5, torch.float64, rng)
    ref = m64(b, k, v)
    m32 = copy.deepcopy(m64).float()
    out = kb.box_branch_fwd(b.float(), k.float(), v.float(), _weights(m32))
    torch_err = _rel_err(m32(b.float(), k.float(), v.float()), ref)
    assert _rel_err(out, ref) < max(2 * torch_err, 1e-6)
    assert _rel_err(out, ref) < 1e-5


def test_torch_backend_matches_reference(rng):
    m = _module(48, 3, 2.5, 40, torch.float64, rng)
    b, k, v = _inputs(3, 4, 37, 48, 3, torch.float64, rng)
    with torch.no_grad():
        assert _rel_err(box_branch_torch(m, b, k, v), m(b, k, v)) < 1e-12


@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
def test_fused_module_matches_reference(backend, rng):
    if backend == "triton" and DEV == "cpu" and not kb._kernel_is_interpreted():
        pytest.skip("kernel module imported without TRITON_INTERPRET=1")
    m = _module(48, 3, 2.5, 40, torch.float32, rng)
    fused = FusedBoxBranch.from_reference(m, backend)
    assert fused.q is m.q and fused.noise2 is m.noise2  # shared, not copied
    assert list(fused.state_dict()) == list(m.state_dict())
    b, k, v = _inputs(3, 4, 37, 48, 3, torch.float32, rng)
    with torch.no_grad():
        assert _rel_err(fused(b, k, v), m(b, k, v)) < 1e-5


def test_fused_falls_back_to_reference_under_autograd(rng):
    m = _module(48, 3, 2.5, 40, torch.float64, rng)
    fused = FusedBoxBranch.from_reference(m, "torch")
    b, k, v = _inputs(2, 4, 37, 48, 3, torch.float64, rng)
    b.requires_grad_(True)
    out = fused(b, k, v)
    assert out.requires_grad
    out.square().sum().backward()
    g_fused, gq = b.grad.clone(), m.q.weight.grad.clone()
    b.grad = None
    m.zero_grad()
    m(b, k, v).square().sum().backward()
    assert torch.equal(g_fused, b.grad) and torch.equal(gq, m.q.weight.grad)


def test_empty_batch_and_bad_inputs(rng):
    m = _module(48, 3, 2.5, 40, torch.float32, rng)
    w = _weights(m)
    b, k, v = _inputs(2, 4, 37, 48, 3, torch.float32, rng)
    if DEV == "cuda" or kb._kernel_is_interpreted():
        assert kb.box_branch_fwd(b[:0], k[:0], v[:0], w).shape == (0, 4, 48)
    with pytest.raises(ValueError, match="weights"):
        kb.box_branch_fwd(b, k, v, w[:-1])
    with pytest.raises(ValueError, match="weights\\[fc1.weight\\]"):
        kb.box_branch_fwd(b, k, v, w[:8] + [w[8][:, :-1]] + w[9:])
    with pytest.raises(ValueError, match="k must be"):
        kb.box_branch_fwd(b, k[:1], v[:1], w)
    with pytest.raises(ValueError, match="^b must have shape"):
        m(b[0], k, v)
    with pytest.raises(ValueError, match="^k must have shape"):
        m(b, k[:, :2], v)
    with pytest.raises(TypeError, match="dtype"):
        m(b, k.double(), v.double())
    with pytest.raises(TypeError, match="^v must be a torch.Tensor"):
        m(b, k, None)
    with pytest.raises(ValueError, match="backend"):
        FusedBoxBranch.from_reference(m, "nope")


def test_patch_swaps_box_branches_and_unpatch_restores(rng):
    from fasttrack.patch import is_patched, patch, patched_modules, unpatch

    holder = torch.nn.ModuleDict({"a": _module(48, 3, 2.5, 40, torch.float32, rng),
                                  "b": torch.nn.Sequential(_module(48, 3, 2.5, 40, torch.float32, rng))})
    originals = (holder["a"], holder["b"][0])
    keys = list(holder.state_dict())
    patch(holder, backend="torch")
    assert is_patched(holder)
    assert type(holder["a"]) is FusedBoxBranch and type(holder["b"][0]) is FusedBoxBranch
    assert list(holder.state_dict()) == keys
    patch(holder, backend="torch")  # idempotent
    assert patched_modules(holder) == [("a", "DeTrack BoxBranch"), ("b.0", "DeTrack BoxBranch")]
    unpatch(holder)
    assert (holder["a"], holder["b"][0]) == originals


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_on_gpu_dtypes(dtype, rng):
    m64 = _module(768, 12, 4.0, 768, torch.float64, rng)
    b, k, v = _inputs(5, 4, 256, 768, 12, torch.float64, rng)
    ref = m64(b, k, v)
    m = copy.deepcopy(m64).to(dtype)
    out = kb.box_branch_fwd(b.to(dtype), k.to(dtype), v.to(dtype), _weights(m))
    torch_err = _rel_err(m(b.to(dtype), k.to(dtype), v.to(dtype)), ref)
    assert _rel_err(out, ref) < 2 * torch_err + 1e-6


@pytest.mark.gpu
@needs_cuda
def test_cuda_extension_matches_reference(rng):
    try:
        from fasttrack import _C
    except ImportError:
        pytest.skip("fasttrack._C not built")
    if not hasattr(_C, "box_branch_fwd"):
        pytest.skip("fasttrack._C has no box_branch_fwd")
    m = _module(96, 4, 4.0, 64, torch.float32, rng)
    b, k, v = _inputs(3, 4, 37, 96, 4, torch.float32, rng)
    fused = FusedBoxBranch.from_reference(m, "cuda")
    with torch.no_grad():
        assert _rel_err(fused(b, k, v), m(b, k, v)) < 1e-5
