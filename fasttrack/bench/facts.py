"""Facts about the machine a measurement was taken on, stored beside every benchmark result."""
from __future__ import annotations

import os
import platform
import time

import torch


def device_facts(device=None) -> dict:
    """Device name, library versions and build facts: what makes a timing comparable."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    from .. import CUDA_EXT_ERROR, HAS_CUDA_EXT, __version__
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    facts = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fasttrack": __version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "has_cuda_ext": HAS_CUDA_EXT,
        "cuda_ext_error": CUDA_EXT_ERROR,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts.update(device_name=p.name, sm_count=p.multi_processor_count,
                     capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda,
                     gpu_memory_gb=round(p.total_memory / 2**30, 1))
    else:
        facts["device_name"] = _cpu_name()
    return facts


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
