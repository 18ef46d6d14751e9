"""Whether fasttrack.kernels was imported under TRITON_INTERPRET=1, and a warning when that
happens in a process that has a GPU.

triton.jit picks the interpreter when a kernel is defined, i.e. when this package is imported,
so INTERPRETED records the environment of that moment (fasttrack.ops.triton_backend reads it to
refuse CUDA tensors: the interpreter runs numpy on the CPU and cannot run them). Imported first
by kernels/__init__.py, before any kernel module.
"""
from __future__ import annotations

import os
import warnings

import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if INTERPRETED and torch.cuda.is_available():
    warnings.warn("TRITON_INTERPRET=1 is set in a process with a CUDA GPU: fasttrack's Triton "
                  "kernels run on the CPU interpreter and the triton backend refuses CUDA "
                  "tensors; unset TRITON_INTERPRET on a GPU machine", RuntimeWarning, stacklevel=2)
