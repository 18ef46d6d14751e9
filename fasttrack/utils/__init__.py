"""Small shared utilities: memory and timing measurement."""
from .memory import PeakMemory, peak_memory_mb
from .timing import time_fn

__all__ = ["PeakMemory", "peak_memory_mb", "time_fn"]
