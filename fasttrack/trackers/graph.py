"""One CUDA graph per tracker frame: the runner every tracker's step goes through.

A tracker frame is hundreds of kernel launches (thousands for the diffusion trackers), each
paying host time. When the frame's device work reads its inputs from, and writes its results
into, tensors that never move (the frame buffer, the tracker state, the result row), it can be
captured once and then replayed: one `graph.replay()` per frame. The owner copies each frame's
inputs into the fixed buffers, calls the runner, and reads the result row back (the frame's one
host read; fasttrack.trackers.watch checks there is no other).

The first call warms the step up on a side stream (cuBLAS handles, Triton JIT compilation and
autotuning must not happen inside the capture), restores the state the warm-up advanced,
captures, and replays once. On the CPU, or with use_graph=False, the same step runs eagerly: the
CPU path is the one CI tests; the capture has run on a GPU for DeTrack only (see each tracker's
docstring for what is verified).

Rules for a step (what capture needs): no host reads or writes (no `.item()`, no tensors built
from host data, no Python branches on tensor values), fixed shapes, fixed input and state
tensors updated in place (`copy_`), random numbers only from the generators passed as
`generators` (their state is registered with the graph so every replay draws new numbers).
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
        key: identifies what was captured (modules, sizes, dtype, precision); the owner
            recaptures when its key changes (e.g. after `fasttrack.patch` swapped modules).
        use_graph: capture on CUDA devices (default True).
        warmup: eager warm-up iterations before the capture.
        generators: CUDA generators the step draws from (registered with the graph, and their
            state restored after the warm-up like `state`).
    """

    def __init__(self, step: Callable[[], None], state: Sequence[torch.Tensor], key: Hashable,
                 use_graph: bool = True, warmup: int = 2,
                 generators: Sequence[torch.Generator] = ()):
        self.step = step
        self.state = list(state)
        self.key = key
        self.warmup = warmup
        self.generators = list(generators)
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
        rng = [g.get_state() for g in self.generators]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        for t, saved in zip(self.state, snapshot):
            t.copy_(saved)
        for g, s in zip(self.generators, rng):
            g.set_state(s)
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            graph.register_generator_state(g)
        with torch.cuda.graph(graph):
            self.step()
        self.graph = graph   # captured, not run: __call__ replays it for this frame
