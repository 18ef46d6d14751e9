"""Soft import of the native extension fasttrack._C (FlagGems style).

`import fasttrack` never fails because of the extension. After this module runs:

    HAS_CUDA_EXT    True when fasttrack._C imported and its CUDA runtime sees a device
    CUDA_EXT_ERROR  None when HAS_CUDA_EXT, else why not: "not built (...)", the ImportError
                    text, or "built but no CUDA device/driver (...)" with the runtime's error
    CUDA_EXT        the imported module, or None when it could not be imported

The extension carries its own static CUDA runtime (no libtorch), so it can be built yet
unusable: no GPU, or a driver older than the toolkit that built it. Probing it calls
cudaGetDeviceCount, as torch.cuda.is_available() does.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Optional

NOT_BUILT = "not built (FASTTRACK_BUILD_CUDA=0 or no nvcc at install)"


def _probe() -> tuple[Optional[ModuleType], bool, Optional[str]]:
    try:
        spec = importlib.util.find_spec("fasttrack._C")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None, False, NOT_BUILT
    try:
        module = importlib.import_module("fasttrack._C")
    except ImportError as e:
        return None, False, f"fasttrack._C failed to import: {e}"
    try:
        count, error = module.cuda_status()
    except Exception as e:  # a broken runtime must not break `import fasttrack`
        return module, False, f"built but no CUDA device/driver ({type(e).__name__}: {e})"
    if count <= 0:
        return module, False, f"built but no CUDA device/driver ({error or 'no device'})"
    return module, True, None


CUDA_EXT, HAS_CUDA_EXT, CUDA_EXT_ERROR = _probe()

__all__ = ["HAS_CUDA_EXT", "CUDA_EXT_ERROR", "CUDA_EXT", "NOT_BUILT"]
