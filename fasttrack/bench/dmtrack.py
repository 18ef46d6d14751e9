"""Bench section "dmtrack": the DMTrack per-frame step against K, the number of mask samplings.

`cases(device, quick)`:
  "<model> K=<K>" x "unpatched" | "patched(<backend>)" for K = 1, 5, 10 samplings (the paper's
      headline runs K = 1, its ablation K = 5): unit "frame", one `update` of one target (ends
      with the host copy of the box, which synchronizes the device), `samples` = K in the row.
      The K samplings run as one batched denoiser pass per DDIM step (B*K rows), the condition
      encoded once, so time grows with K only through the small U-net. Patched: the gated
      cross-attention through fasttrack.ops.attention. Peak memory is the harness's.
      FLOPs: one step counted by torch.utils.flop_counter on the meta device.
      ops_per_frame, host_reads, host_writes, host_ms: one more, untimed `update_batch` after
      the measured ones under FrameWatch (harness.watch_frame).
  "<model> w/o diffusion": the same step without the diffusion module and filter (the
      ablation's model), role "other": what the module costs.
  "dmtrack256 flops (meta device)": an untimed row, the GFLOPs of a DMTrack-256 step at K = 1
      and K = 5 and the share of the diffusion module (the paper reports about 40 FPS on an RTX
      3080 and no FLOP count; DESIGN.md 1.6 estimates 29 GMAC for the ViT).
CPU: the `tiny` model on 120 x 160 frames; GPU: dmtrack256 on 480 x 640 frames.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

from .harness import Case, watch_frame

__all__ = ["cases", "count_step_flops", "SAMPLES"]

SAMPLES = (1, 5, 10)


def count_step_flops(model: str = "dmtrack256", samples: int = 1, **cfg) -> int:
    """FLOPs of one DMTrack step (search embedding, ViT over template + search, cross-attention,
    K mask samplings, filter, head) of DMTrack.<model>(), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..trackers.dmtrack import DMTrack

    tr = getattr(DMTrack, model)(device="meta", samples=samples, **cfg)
    c, net = tr.config, tr.net
    meta = torch.device("meta")
    z = torch.empty(1, c.template_tokens, c.dim, device=meta)
    x_img = torch.empty(1, 3, c.search_size, c.search_size, device=meta)
    text = torch.empty(1, c.text_len, c.dim, device=meta)
    has = torch.empty(1, device=meta)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.predict(z, net.embed_search(x_img), text, has)
    return int(counter.get_total_flops())


def _sequence(height: int, width: int):
    from ..data.synthetic import synthetic_sequence

    seq = synthetic_sequence(6, (height, width), (height // 5, width // 5), seed=0)
    return [seq[i] for i in range(len(seq))], seq.gt[0], seq.text


def cases(device, quick: bool = False) -> list[Case]:
    """The section's cases (module docstring)."""
    from ..patch import patch
    from ..trackers.dmtrack import DMTrack

    device = torch.device(device)
    model = "tiny" if device.type == "cpu" else "dmtrack256"
    height, width = (120, 160) if device.type == "cpu" else (480, 640)
    frames, box, text = _sequence(height, width)
    # CPU: the torch backend by name; "auto" could pick Triton's interpreter (TRITON_INTERPRET=1)
    backend = "auto" if device.type == "cuda" else "torch"

    @functools.cache
    def tracker(patched: bool, diffusion: bool = True):
        tr = getattr(DMTrack, model)(seed=0, mask_module="diffusion" if diffusion else "none")
        tr = tr.to(device).eval()
        with torch.no_grad():
            tr.net.cross.gate.fill_(0.5)     # an open gate: random init leaves it shut
        if patched:
            patch(tr, backend=backend)
        return tr

    current = {}  # the running case's tracker and frame source, for its frame watch

    def setup(patched, k, diffusion=True):
        tr = current["tracker"] = tracker(patched, diffusion)
        if diffusion:
            tr.set_run_options(samples=k)
        tr.init(frames[0], box, text=text)
        i = itertools.count()
        current["next_frame"] = lambda: frames[1 + next(i) % (len(frames) - 1)]
        return lambda: tr.update(current["next_frame"]())

    def watch(row, out):
        """One more frame of the case's tracker, untimed, under the watch."""
        return watch_frame(current.pop("tracker"), current.pop("next_frame")())

    out = []
    for k in SAMPLES:
        for patched in (False, True):
            impl = f"patched({backend})" if patched else "unpatched"
            out.append(Case("dmtrack", {"name": f"{model} K={k}", "impl": impl}, unit="frame", targets=1,
                            info={"samples": k}, role="fasttrack" if patched else "reference",
                            setup=functools.partial(setup, patched, k), group=(model, k),
                            flops=functools.partial(count_step_flops, model, k), check=watch,
                            warmup=None if quick else 5, repeat=None if quick else 30))
    out.append(Case("dmtrack", {"name": f"{model} w/o diffusion", "impl": "unpatched"}, unit="frame", targets=1,
                    info={"samples": 0}, role="other",
                    setup=functools.partial(setup, False, 1, False), group=(model, 1),
                    flops=functools.partial(count_step_flops, model, 1, mask_module="none"),
                    check=watch))
    out.append(Case("dmtrack", {"name": "dmtrack256 flops (meta device)"}, unit=None, role="other",
                    check=_paper_flops))
    return out


def _paper_flops(row, out) -> dict:
    k1, k5 = count_step_flops("dmtrack256", 1), count_step_flops("dmtrack256", 5)
    none = count_step_flops("dmtrack256", 1, mask_module="none")
    return {"gflops": k1 / 1e9, "gflops_k5": k5 / 1e9, "diffusion_share_k1": (k1 - none) / k1,
            "diffusion_share_k5": (k5 - none) / k5}
