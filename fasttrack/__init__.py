"""fasttrack: fused attention-map kernels and reference diffusion-based trackers.

    import fasttrack
    out, lse = fasttrack.ops.attention(q, k, v)          # flash attention + row log-sum-exp
    m = fasttrack.ops.harmonize(q, k, cross, lse=lse)     # alpha C + (1 - alpha) S^T C, no N x N
    fasttrack.patch(unet)                                 # fused processors, same outputs

`HAS_CUDA_EXT` says whether the native extension fasttrack._C is usable and `CUDA_EXT_ERROR`
why not (None when it is).
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._ext import CUDA_EXT_ERROR, HAS_CUDA_EXT
from . import ops
from .patch import patch, unpatch, is_patched


def __getattr__(name):
    # Heavier parts load on first use so that `import fasttrack` stays fast and needs neither
    # diffusers nor the trackers' dependencies.
    if name == "AttentionRecorder":
        from .recorder import AttentionRecorder
        return AttentionRecorder
    if name in ("trackers", "eval", "data", "cli"):
        import importlib
        return importlib.import_module(f"fasttrack.{name}")
    raise AttributeError(f"module 'fasttrack' has no attribute {name!r}")


__all__ = ["ops", "patch", "unpatch", "is_patched", "AttentionRecorder", "HAS_CUDA_EXT",
           "CUDA_EXT_ERROR", "__version__"]
