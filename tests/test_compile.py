"""The ops are torch.library custom ops: a function calling them compiles with fullgraph=True
(one opaque node per op, shapes from the fake kernels) and gives the eager results, forward and
backward."""
import functools

import pytest
import torch

from fasttrack import ops
from _oracle import make_inputs, rel_err


def _tracker_like(q, k, v, cross, backend="torch"):
    out, lse = ops.attention(q, k, v, backend=backend)
    m = ops.harmonize(q, k, cross, lse=lse, backend=backend)
    sc = ops.self_cross(q, k, cross, backend=backend)
    o2, probs = ops.cross_attention(q, k, v, backend=backend)
    loss = out.square().mean() + m.sum(-1).mean() + sc.square().sum() + o2.mean() + probs.square().sum()
    return loss * 1.0, m


@pytest.mark.parametrize("dynamic,backend", [(False, "torch"), (True, "torch"), (False, "auto"),
                                             (False, "triton")])
def test_fullgraph_compile_matches_eager(dynamic, backend, rng):
    """Every op under torch.compile(fullgraph=True) (the custom ops) gives what the eager call
    (which skips the custom ops) gives, forward and backward: on the torch backend, "auto"
    (attention on the aten backend on the CPU) and the Triton kernels (interpreter)."""
    if backend == "triton":
        pytest.importorskip("triton")
        if torch.cuda.is_available():
            pytest.skip("the CPU interpreter case; GPU runs compile the kernels in test_ops_gpu")
    torch._dynamo.reset()
    q, k, v, cross = make_inputs(1, 2, 37, 37, 40, 40, 7, torch.float32, rng)
    fn = functools.partial(_tracker_like, backend=backend)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    loss_c, m_c = compiled(q, k, v, cross)
    gc = torch.autograd.grad(loss_c, (q, k, v, cross))
    loss_e, m_e = fn(q, k, v, cross)
    ge = torch.autograd.grad(loss_e, (q, k, v, cross))
    assert rel_err(m_c, m_e) < 1e-6 and rel_err(loss_c, loss_e) < 1e-6
    for a, b in zip(gc, ge):
        assert rel_err(a, b) < 1e-6


def test_fake_tensor_shapes():
    """The fake kernels give the real shapes and dtypes (what torch.compile plans with)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(2, 3, 11, 8, dtype=torch.float16)
        k = torch.empty(2, 3, 13, 8, dtype=torch.float16)
        v = torch.empty(2, 3, 13, 5, dtype=torch.float16)
        c = torch.empty(2, 11, 4, dtype=torch.float16)
        out, lse = torch.ops.fasttrack.attention(q, k, v, 0.5, "torch")
        sc, _ = torch.ops.fasttrack.self_cross(q, k, c, None, 0.5, "torch")
        co, probs, _ = torch.ops.fasttrack.cross_attention(q, k, v, 0.5, "torch")
    assert out.shape == (2, 3, 11, 5) and lse.shape == (2, 3, 11) and lse.dtype == torch.float32
    assert sc.shape == (2, 13, 4) and sc.dtype == torch.float16
    assert probs.shape == (2, 11, 13) and probs.dtype == torch.float16


def test_inductor_compile_smoke(rng):
    """The default inductor backend on CPU also accepts the graph (custom ops stay opaque)."""
    torch._dynamo.reset()
    q, k, v, cross = make_inputs(1, 1, 9, 9, 8, 8, 3, torch.float32, rng, requires_grad=False)
    f = torch.compile(lambda a, b, c: ops.self_cross(a, b, c, backend="torch") * 2, fullgraph=True)
    assert rel_err(f(q, k, cross), 2 * ops.self_cross(q, k, cross, backend="torch")) < 1e-6


def test_eager_calls_skip_the_custom_ops_only_when_nothing_traces(monkeypatch, rng):
    """Eager calls run the backend functions directly (the custom op's dispatcher costs ~30 us
    a call); under a dispatch mode (FakeTensorMode here) or a functorch transform (vmap) the
    custom op must run, or the mode or transform would meet kernels it cannot handle."""
    from fasttrack.ops import _library

    used = []
    real = _library.attention_op
    monkeypatch.setattr(_library, "attention_op", lambda *a: used.append(1) or real(*a))
    q, k, v, _ = make_inputs(1, 2, 9, 9, 8, 8, 3, torch.float32, rng)
    out, lse = ops.attention(q, k, v, backend="torch")
    (out.sum() + lse.sum()).backward()
    assert used == [] and q.grad is not None
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        fq = torch.empty(1, 2, 9, 8)
        ops.attention(fq, fq, fq, backend="torch")
    assert used == [1]
    qq = torch.stack([q.detach(), 2 * q.detach()])
    got = torch.vmap(lambda a: ops.attention(a, a, a, backend="torch")[0])(qq)
    assert used == [1, 1]  # under vmap the custom op (and its batching fallback) ran
    for i in range(2):
        assert rel_err(got[i], ops.attention(qq[i], qq[i], qq[i], backend="torch")[0]) < 1e-6
