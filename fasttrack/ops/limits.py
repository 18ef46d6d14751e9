"""What each backend can take, declared once (xformers AttentionOpBase style).

One frozen `BackendLimits` per backend: TORCH, TRITON, CUDA. The backend modules'
`reasons(op, *tensors)` call `limits.reasons(...)` for the checks every backend shares
(device, dtype, head dim, token count, CUDA grid) and add only their own (Triton interpreter,
CUDA extension missing, ...); kernels/_common.py and kernels/box_branch.py read their constants
from here. Dependency-free: imports only torch, so the kernels package and the backends can
both import it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

__all__ = ["BackendLimits", "TORCH", "ATEN", "TRITON", "CUDA", "BACKEND_LIMITS", "BOX_BRANCH_WEIGHTS",
           "SUPPORTED_DTYPES", "MAX_HEAD_DIM", "MAX_TOKENS", "MAX_GRID_YZ"]

_HALF_AND_FLOAT = (torch.float16, torch.bfloat16, torch.float32)
_ALL_FLOATS = _HALF_AND_FLOAT + (torch.float64,)

MAX_GRID_YZ = 65535  # CUDA grid dimensions y and z


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


@dataclass(frozen=True)
class BackendLimits:
    """The limits of one backend.

    dtypes: input dtypes of the attention-map ops; op_dtypes: per op family overrides (e.g. the
    Triton box branch also takes float64). max_head_dim: D and Dv; max_tokens: T of self_cross's
    cross map; max_grid_yz: sizes that index CUDA grid axes y / z; max_seq_len: Nq, Nk (exclusive);
    None means no limit. devices: device types the kernels run on (the Triton backend adds "cpu"
    under TRITON_INTERPRET=1, see `reasons(devices=...)`)."""
    name: str
    display: str
    dtypes: tuple
    devices: tuple
    max_head_dim: int | None = None
    max_tokens: int | None = None
    max_grid_yz: int | None = None
    max_seq_len: int | None = None
    op_dtypes: Mapping[str, tuple] = field(default_factory=dict)

    def dtypes_for(self, op: str) -> tuple:
        return self.op_dtypes.get(op, self.dtypes)

    def reasons(self, op: str, tensors: Iterable, *, head_dims: Mapping[str, int] | None = None,
                tokens: int | None = None, grid_yz: Mapping[str, int] | None = None,
                seq_len: int | None = None, devices: tuple | None = None,
                device_hint: str = "", others: Iterable = ()) -> list[str]:
        """The shared reasons why this backend cannot take `op` on these inputs.

        tensors: the op's main inputs (dtype and device are checked on them); others: further
        tensor arguments (lse, out, gradients) checked for their device only; head_dims: e.g.
        {"head dim D": 64, "value head dim Dv": 64}; tokens: T of a cross map; grid_yz: sizes
        the backend puts on CUDA grid axes y / z, e.g. {"B": 2, "H": 8}; seq_len: the longest of
        Nq, Nk; devices: device types accepted here and now (default self.devices);
        device_hint: appended to the device reason (how to run anyway)."""
        ts = [t for t in tensors if isinstance(t, torch.Tensor)]
        every = ts + [t for t in others if isinstance(t, torch.Tensor)]
        out: list[str] = []
        allowed = self.devices if devices is None else devices
        types = sorted({t.device.type for t in every})
        bad_dev = [d for d in types if d not in allowed]
        if bad_dev:
            need = " or ".join(d.upper() if d == "cuda" else d for d in allowed)
            out.append(f"tensors on {', '.join(bad_dev)}: the {self.display} kernels need {need} "
                       f"tensors{device_hint}")
        elif len({t.device for t in every}) > 1:
            out.append(f"tensors on several devices: {sorted({str(t.device) for t in every})}")
        ok = self.dtypes_for(op)
        bad = sorted({str(t.dtype) for t in ts if t.dtype not in ok})
        if bad:
            out.append(f"dtype {', '.join(bad)} is not supported ({_dtype_names(ok)})")
        elif len({t.dtype for t in ts}) > 1:
            out.append(f"mixed dtypes {sorted(str(t.dtype) for t in ts)}: the kernels take one dtype")
        if self.max_head_dim is not None:
            for what, d in (head_dims or {}).items():
                if d > self.max_head_dim:
                    out.append(f"{what}={d} > {self.max_head_dim}")
        if self.max_tokens is not None and tokens is not None and tokens > self.max_tokens:
            out.append(f"cross has T={tokens} tokens > {self.max_tokens}")
        if self.max_grid_yz is not None and grid_yz:
            if any(n > self.max_grid_yz for n in grid_yz.values()):
                sizes = " or ".join(f"{k}={n}" for k, n in grid_yz.items())
                out.append(f"{sizes} > {self.max_grid_yz} (CUDA grid limit)")
        if self.max_seq_len is not None and seq_len is not None and seq_len >= self.max_seq_len:
            out.append(f"sequence length {seq_len} >= 2^{self.max_seq_len.bit_length() - 1}")
        return out


# PyTorch ops: every float dtype, every device, no size limits.
TORCH = BackendLimits("torch", "PyTorch", _ALL_FLOATS, ("cpu", "cuda", "mps", "xpu", "meta"))

# Triton kernels (kernels/): one padded (block, 128) tile per head-dim operand; self_cross's
# backward keeps whole 256-token rows in one tile. The box branch also runs float64 (only
# under the interpreter in practice: the exactness tests).
TRITON = BackendLimits("triton", "Triton", _HALF_AND_FLOAT, ("cuda",), max_head_dim=128,
                       max_tokens=256, max_grid_yz=MAX_GRID_YZ,
                       op_dtypes={"box_branch": _ALL_FLOATS})

# CUDA extension (csrc/): shared-memory tiles padded to 32 / 64 / 128 head dims, a (keys, T)
# register accumulator for self_cross, B and H on grid axes y / z, 32-bit token indices.
CUDA = BackendLimits("cuda", "CUDA", (torch.float32, torch.float16, torch.bfloat16), ("cuda",),
                     max_head_dim=128, max_tokens=256, max_grid_yz=MAX_GRID_YZ,
                     max_seq_len=1 << 30)

# PyTorch's fused attention kernels (fasttrack.ops.aten_backend): attention and lse only. The
# CUDA kernels take 16/32-bit floats and head dims <= 256; aten_backend.reasons adds those two.
ATEN = BackendLimits("aten", "PyTorch fused attention", _ALL_FLOATS, ("cpu", "cuda", "meta"))

BACKEND_LIMITS = {lim.name: lim for lim in (TORCH, ATEN, TRITON, CUDA)}

# Constants of the Triton kernels (kernels/_common.py imports these names).
SUPPORTED_DTYPES = TRITON.dtypes
MAX_HEAD_DIM = TRITON.max_head_dim
MAX_TOKENS = TRITON.max_tokens

# Argument order of the box_branch op's weights, shared by every backend's box_branch_fwd
# (names of the reference fasttrack.trackers.detrack.box_branch.BoxBranch parameters).
BOX_BRANCH_WEIGHTS = ("norm1.weight", "norm1.bias", "q.weight", "q.bias", "proj.weight",
                      "proj.bias", "norm2.weight", "norm2.bias", "fc1.weight", "fc1.bias",
                      "fc2.weight", "fc2.bias", "noise1.weight", "noise1.bias", "noise2.weight",
                      "noise2.bias")
