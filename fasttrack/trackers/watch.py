"""`FrameWatch`: what one tracker frame asks of the host -- aten ops and host <-> device transfers.

A real-time tracker frame is one upload of the frame, device work, and one read of the boxes at
the end. Every other transfer is a host sync: the host waits for the device (a read) or the
device waits for a blocking copy (a write from host data), and neither can be captured in a
CUDA graph. On a CPU there is no device to wait for, yet the same calls are visible, so the
watch tells on any machine what a frame would cost a GPU:

  reads   `aten._local_scalar_dense` (`.item()`, `float(t)`, `int(t)`, `bool(t)`, `if t.any()`),
          a copy from a non-CPU device to the CPU, and -- invisible to the dispatcher when the
          tensor already lives on the CPU -- `Tensor.cpu`, `Tensor.tolist`, `Tensor.numpy` /
          `np.asarray(tensor)`. Reads with only view ops between them (`host = t.cpu()` then
          `host[:, :4].numpy()`) are one sync, counted once. Blind spot: `t.to("cpu")` of a CPU
          tensor dispatches nothing and cannot be told from `t.to(tracker.device)`;
  writes  `aten.lift_fresh` / `lift_fresh_copy` (`torch.tensor(data)`, `torch.as_tensor(array)`,
          `torch.from_numpy`, `t.new_tensor(data)`), and a copy from the CPU to another device;
          a lift and its copies with nothing else between them (`torch.from_numpy(a).to(dev)`,
          then `buf.copy_(...)`) are one upload, counted once.

Counts come from a TorchDispatchMode (every aten op the frame dispatches, `ops`), plus, while the
watch is active, thin wrappers on the Tensor methods above (restored on exit). `strict=True`
raises `HostSyncError` at the first transfer beyond `allowed_writes` / `allowed_reads`, naming
the op and the line of fasttrack code that made it.

    with FrameWatch() as w:
        tracker.update(frame)
    w.ops, w.reads, w.writes            # ints; w.events: [(kind, what, where, op index)]

`frame_profile(tracker, frames)` runs frames through `update_batch` under the watch and returns
ops, reads, writes and host milliseconds per frame (the bench's trackers section reports them).
"""
from __future__ import annotations

import os
import time
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["FrameWatch", "HostSyncError", "frame_profile"]

_READ_OPS = {"aten._local_scalar_dense.default"}
_WRITE_OPS = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default"}
_COPY_OPS = {"aten._to_copy.default", "aten.copy_.default"}
# Tensor methods whose host read the dispatcher does not see for CPU tensors.
_HOST_METHODS = ("cpu", "tolist", "numpy", "__array__")
# Ops that only re-index what a read brought over (`host[:, :4].numpy()` after `.cpu()`): reads
# with nothing but these between them are one sync.
_VIEW_OPS = {"aten.slice.Tensor", "aten.select.int", "aten.view.default", "aten.detach.default",
             "aten.alias.default", "aten.t.default", "aten.transpose.int", "aten.unsqueeze.default",
             "aten.squeeze.dim", "aten.as_strided.default", "aten._unsafe_view.default"}


class HostSyncError(RuntimeError):
    """A host <-> device transfer inside a tracker frame beyond the allowed ones."""


_SKIP = (os.path.dirname(torch.__file__), os.path.abspath(__file__))


def _where() -> str:
    """The innermost caller outside torch and this module (file:line, the path shortened to
    what follows 'fasttrack/' when it has it)."""
    for fr in reversed(traceback.extract_stack()[:-2]):
        if not fr.filename.startswith(_SKIP):
            name = fr.filename.split("fasttrack/", 1)[-1] if "fasttrack/" in fr.filename else fr.filename
            return f"{name}:{fr.lineno}"
    return "?"


class FrameWatch(TorchDispatchMode):
    """Count aten ops and host transfers in a block (module docstring).

    Args:
        strict: raise HostSyncError at the first transfer beyond the allowed ones.
        allowed_writes, allowed_reads: transfers strict mode lets through (a frame: its upload,
            then the one read of its results).
    Attributes: ops (aten ops dispatched), reads, writes (counts), events (kind, what, where,
    op index) in order.
    """

    def __init__(self, *, strict: bool = False, allowed_writes: int = 1, allowed_reads: int = 1):
        super().__init__()
        self.strict, self.allowed_writes, self.allowed_reads = strict, allowed_writes, allowed_reads
        self.ops = self.reads = self.writes = 0
        self.events: list[tuple[str, str, str, int]] = []
        self._saved: dict = {}
        self._inside = 0      # >0 inside a wrapped method: its own dispatches are not re-counted
        self._work_since_read = True   # a non-view op ran since the last read
        self._work_since_write = True  # ... since the last write

    # -- recording ------------------------------------------------------------------------
    def _record(self, kind: str, what: str) -> None:
        if kind == "read":
            if not self._work_since_read:
                return              # the same sync: only views of what was read since
            self._work_since_read = False
            self.reads += 1
            over = self.reads > self.allowed_reads
        else:
            if not self._work_since_write:
                return              # one upload: from_numpy then its copy to the device
            self._work_since_write = False
            self.writes += 1
            over = self.writes > self.allowed_writes
        where = _where()
        self.events.append((kind, what, where, self.ops))
        if self.strict and over:
            raise HostSyncError(f"host {kind} inside a tracker frame: {what} at {where} "
                                f"(allowed: {self.allowed_writes} write, {self.allowed_reads} read)")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        name = str(func)
        if name not in _VIEW_OPS and name not in _READ_OPS:
            self._work_since_read = True
        if name not in _VIEW_OPS and name not in _WRITE_OPS and name not in _COPY_OPS:
            self._work_since_write = True
        if not self._inside:
            if name in _READ_OPS:
                self._record("read", name)
            elif name in _WRITE_OPS:
                self._record("write", name)
            elif name in _COPY_OPS:
                src = args[1] if name == "aten.copy_.default" else args[0]
                dst_dev = (args[0].device if name == "aten.copy_.default"
                           else kwargs.get("device") or src.device)
                src_dev = src.device if isinstance(src, torch.Tensor) else dst_dev
                dst_dev = torch.device(dst_dev)
                if src_dev.type != "cpu" and dst_dev.type == "cpu":
                    self._record("read", name)
                elif src_dev.type == "cpu" and dst_dev.type != "cpu":
                    self._record("write", name)
        return func(*args, **kwargs)

    # -- the Tensor methods the dispatcher cannot see on CPU tensors ------------------------
    def _wrap(self, name: str):
        orig = self._saved[name]
        watch = self

        def wrapper(t, *args, **kwargs):
            if watch._inside:
                return orig(t, *args, **kwargs)
            # a non-CPU tensor's .cpu() is counted by the dispatch of its copy
            counted = t.device.type == "cpu"
            if counted:
                watch._record("read", f"Tensor.{name}")
            watch._inside += counted
            try:
                return orig(t, *args, **kwargs)
            finally:
                watch._inside -= counted

        return wrapper

    def __enter__(self):
        for name in _HOST_METHODS:
            self._saved[name] = getattr(torch.Tensor, name)
        for name in _HOST_METHODS:
            setattr(torch.Tensor, name, self._wrap(name))
        try:
            return super().__enter__()
        except BaseException:
            self._restore()
            raise

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._restore()

    def _restore(self) -> None:
        for name, fn in self._saved.items():
            setattr(torch.Tensor, name, fn)
        self._saved = {}

    def summary(self) -> str:
        """One line per transfer: kind, what, where."""
        return "\n".join(f"{k:5s} {what} at {where} (after {i} ops)" for k, what, where, i in self.events)


def frame_profile(tracker, frames) -> dict:
    """Run `tracker.update_batch` on each of `frames` (after init) under a FrameWatch.

    Returns per-frame means: ops (aten ops dispatched), reads and writes (host transfers, the
    frame's upload and its result read included), host_ms (wall time of the update on this
    machine under the watch: on a CPU device it includes the device work)."""
    frames = list(frames)
    if not frames:
        raise ValueError("frames must hold at least one image")
    ops = reads = writes = 0
    ms = 0.0
    for frame in frames:
        with FrameWatch() as w:
            t0 = time.perf_counter()
            tracker.update_batch(frame)
            ms += (time.perf_counter() - t0) * 1e3
        ops, reads, writes = ops + w.ops, reads + w.reads, writes + w.writes
    n = len(frames)
    return {"ops_per_frame": ops / n, "reads_per_frame": reads / n, "writes_per_frame": writes / n,
            "host_ms_per_frame": ms / n}
