"""Bench section "detrack": the DeTrack tracker step and its box branch block.

`cases(device, quick)`:
  "<model> eager" | "<model> compile" | "<model> patched(<backend>)", for K = 1, 8, 64 targets:
      unit "frame", one `update_batch` of K targets (ends with the host copy of the boxes, which
      also synchronizes the device); K = 1 rows give frames/s, K > 1 rows target-frames/s.
      FLOPs: one step of K targets counted by torch.utils.flop_counter on the meta device
      (2 per MAC; search embedding, denoising ViT, refiner, mapping, template embedding).
      ops_per_frame, host_reads, host_writes, host_ms: one more, untimed `update_batch` after
      the measured ones under FrameWatch (harness.watch_frame).
      The reference is eager; torch.compile of the reference network is "other". torch.compile
      on the CPU takes minutes on small machines: with quick=True (the default run) it is
      skipped there; `fasttrack bench --full` runs it.
  "box branch block C=<C>", impl reference / torch / triton (GPU), K = 1 and 64 targets:
      unit "call", one block of the box branch (BoxBranch vs FusedBoxBranch).
  "detrack256 flops": an untimed row, the FLOP count of a DeTrack256 step next to the paper's
      53.0 G (GMACs too).
CPU: the `tiny` model on 120 x 160 frames; GPU: detrack256 (and detrack384 when quick=False)
on 480 x 640 frames.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

from .harness import Case, watch_frame

__all__ = ["cases", "count_step_flops", "PAPER_GFLOPS"]

PAPER_GFLOPS = {"detrack256": 53.0, "detrack384": 117.1}
TARGETS = (1, 8, 64)


def count_step_flops(name: str = "detrack256", targets: int = 1) -> int:
    """FLOPs of one tracker step (search embedding, denoising ViT, refiner, mapping, template
    embedding for the memory) of DeTrack.<name>() for `targets` targets, counted on the meta
    device."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..trackers.detrack.tracker import DeTrack

    tracker = getattr(DeTrack, name)(device="meta")
    cfg, net = tracker.config, tracker.net
    meta = torch.device("meta")
    z = torch.empty(targets, cfg.n_templates, cfg.template_tokens, cfg.dim, device=meta)
    x_img = torch.empty(targets, 3, cfg.search_size, cfg.search_size, device=meta)
    z_img = torch.empty(targets, 3, cfg.template_size, cfg.template_size, device=meta)
    prior = torch.empty(targets, 4, device=meta)
    traj = torch.empty(targets, cfg.traj_len, 4, device=meta)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.predict(z, net.embed_search(x_img), prior, traj)
        net.embed_template(z_img)
    return int(counter.get_total_flops())


def _frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _boxes(k: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.1, 0.25, k) * width
    h = rng.uniform(0.1, 0.25, k) * height
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return np.stack([x, y, w, h], 1)


def _variants(device: torch.device, quick: bool):
    """(label, role, make(tracker) turning the eager tracker into the variant, skip reason)."""
    from ..patch import patch

    # CPU: the torch backend by name; "auto" could pick Triton's interpreter (TRITON_INTERPRET=1)
    backend = "triton" if device.type == "cuda" else "torch"

    def compiled(tracker):
        tracker.net.predict = torch.compile(tracker.net.predict)

    def patched(tracker):
        patch(tracker, backend="auto" if device.type == "cuda" else "torch")

    skip_compile = ("skipped: torch.compile of the tiny model takes minutes on a small CPU (runs with --full)"
                    if device.type == "cpu" and quick else None)
    return [("eager", "reference", lambda tracker: None, None),
            ("compile", "other", compiled, skip_compile),
            (f"patched({backend})", "fasttrack", patched, None)]


def _step_cases(device: torch.device, quick: bool) -> list[Case]:
    from ..trackers.detrack.tracker import DeTrack

    models = ["tiny"] if device.type == "cpu" else (["detrack256"] if quick else ["detrack256", "detrack384"])
    height, width = (120, 160) if device.type == "cpu" else (480, 640)
    frames = [_frame(height, width, s) for s in range(4)]
    current = {}  # the running case's tracker and frame source, for its frame watch
    out = []

    def watch(row, out):
        """One more frame of the case's tracker, untimed, under the watch."""
        return watch_frame(current.pop("tracker"), current.pop("next_frame")())

    for model in models:
        for label, role, make, skip in _variants(device, quick):
            @functools.cache
            def tracker(model=model, make=make):  # one tracker per variant, shared by its K cases
                tr = getattr(DeTrack, model)(seed=0).to(device).eval()
                make(tr)
                return tr

            def setup(k, tracker=tracker):
                tr = current["tracker"] = tracker()
                tr.init_batch(frames[0], _boxes(k, height, width, k))
                i = itertools.count()
                current["next_frame"] = lambda: frames[1 + next(i) % (len(frames) - 1)]
                return lambda: tr.update_batch(current["next_frame"]())

            for k in TARGETS if skip is None else TARGETS[:1]:  # a skipped variant: one row
                out.append(Case(
                    "detrack", {"name": f"{model} {label}"}, unit="frame", targets=k, role=role,
                    setup=functools.partial(setup, k), skip=skip, group=(model, k),
                    flops=functools.partial(count_step_flops, model, k), check=watch,
                    # full runs: 5 warm-up frames (CUDA graph capture), 64 targets: half the runs
                    warmup=None if quick else 5, repeat=None if quick else (15 if k > 8 else 30)))
    return out


def _box_branch_cases(device: torch.device) -> list[Case]:
    from ..trackers.detrack.box_branch import BoxBranch
    from ..trackers.detrack.fused import FusedBoxBranch

    C, H, ns = (768, 12, 256) if device.type == "cuda" else (64, 4, 64)

    def setup(backend, k):
        torch.manual_seed(0)
        ref = BoxBranch(C, H).to(device).eval()
        block = ref if backend == "reference" else FusedBoxBranch.from_reference(ref, backend)
        b = torch.randn(k, 4, C, device=device)
        key = torch.randn(k, H, ns, C // H, device=device)
        val = torch.randn_like(key)
        return torch.no_grad()(lambda: block(b, key, val))

    out = []
    for k in (1, 64):
        for backend in ("reference", "torch", "triton"):
            skip = ("skipped: the Triton interpreter is a correctness tool, not a benchmark"
                    if backend == "triton" and device.type != "cuda" else None)
            out.append(Case("detrack", {"name": f"box branch block C={C} Ns={ns}", "impl": backend},
                            targets=k, setup=functools.partial(setup, backend, k), skip=skip,
                            role="reference" if backend == "reference" else "fasttrack",
                            group=("box branch", k)))
    return out


def _paper_flops(row, out) -> dict:
    gf = count_step_flops("detrack256") / 1e9
    return {"gflops": gf, "gmacs": gf / 2, "paper_gflops": PAPER_GFLOPS["detrack256"]}


def cases(device, quick: bool = False) -> list[Case]:
    """The section's cases (module docstring)."""
    device = torch.device(device)
    return (_step_cases(device, quick) + _box_branch_cases(device)
            + [Case("detrack", {"name": "detrack256 flops (meta device)"}, unit=None, role="other",
                    check=_paper_flops)])
