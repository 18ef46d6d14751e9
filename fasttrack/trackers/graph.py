"""CUDA-graph capture of the DeTrack tracker step (GPU only; on CPU the same step runs eagerly).

The step reads its inputs from, and writes its results into, tensors that never move (the frame
buffer, the tracker state, the result row), so after one capture a frame costs one
`graph.replay()` instead of hundreds of kernel launches. The first call warms the step up on a
side stream (cuBLAS handles, Triton JIT compilation and autotuning must not happen inside the
capture), restores the state the warm-up advanced, captures, and replays once.

Not run on a GPU in this repository's CI (no GPU there); the CPU path is the one tested.
"""
from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch

__all__ = ["StepGraph"]


class StepGraph:
    """Run `step()` eagerly (CPU, or use_graph=False) or as a captured CUDA graph.

    Args:
        step: callable without arguments reading and writing only fixed tensors.
        state: every tensor `step` mutates; snapshotted around the warm-up.
        key: identifies what was captured (modules, sizes, dtype); the owner recaptures when its
            key changes (e.g. after `fasttrack.patch` swapped modules).
        use_graph: capture on CUDA devices (default True).
        warmup: eager warm-up iterations before the capture.
    """

    def __init__(self, step: Callable[[], None], state: Sequence[torch.Tensor], key: Hashable,
                 use_graph: bool = True, warmup: int = 2):
        self.step = step
        self.state = list(state)
        self.key = key
        self.warmup = warmup
        self.graph: "torch.cuda.CUDAGraph | None" = None
        device = self.state[0].device if self.state else torch.device("cpu")
        self.use_graph = bool(use_graph and device.type == "cuda")

    def __call__(self) -> None:
        if not self.use_graph:
            self.step()
            return
        if self.graph is None:
            self._capture()
        self.graph.replay()

    def _capture(self) -> None:
        snapshot = [t.clone() for t in self.state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        for t, saved in zip(self.state, snapshot):
            t.copy_(saved)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step()
        self.graph = graph
