"""Benchmarks run on CUDA when present, else on the CPU at small shapes. Under
--benchmark-disable each case runs once: a smoke test of the benchmark code itself."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
