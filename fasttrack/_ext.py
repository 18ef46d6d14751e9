"""Soft import of the native extension (placeholder until the build lands)."""
try:
    from fasttrack import _C  # noqa: F401
    HAS_CUDA_EXT, CUDA_EXT_ERROR = True, None
except ImportError as e:
    HAS_CUDA_EXT, CUDA_EXT_ERROR = False, f"fasttrack._C not importable: {e}"
