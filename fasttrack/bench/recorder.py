"""The recorder benchmark behind `fasttrack bench` (section "recorder") and
benchmarks/bench_recorder.py: one UNet step with attention-map recording.

The step: a classifier-free-guidance batch (B = 2, T = 77 tokens) through a diffusers UNet with
random weights, recording every cross-attention layer and every self-attention layer at the
top latent resolution, then the harmonized map at that resolution (DESIGN 1.1-1.2). Rows:

  unrecorded  the patched UNet without a recorder: the floor;
  fasttrack   fasttrack.AttentionRecorder, forward + harmonized();
  eager       Prompt-to-Prompt style (fasttrack.recorder.EagerRecorder): diffusers' unfused
              AttnProcessor math, every (B, H, N, Nk) map materialized, explicit resizing,
              dense S_bar^T C_bar. On CUDA at 64 x 64 it holds
              2 x 5 x 4096^2 fp16 per top self layer (335 MB each) and may run out of memory:
              that is a result (ms = NaN, error column).

Models: CUDA: the SD 2.1 UNet shape (SD21_CONFIG, 865 M parameters, fp16) at 64 x 64 latents.
CPU: SD 2.1's two top levels (SD21_TOP_CONFIG: 320/640 channels, 5/10 heads of 64, cross dim
1024, linear projections), float32, at 24 x 24 latents (--quick) or 48 x 48, so that the
section runs in seconds on a small CPU.

peak_mb: the peak of live tensor memory above the start of the step, from the allocator's own
records (`allocated_peak_mb`): torch.cuda's peak counter on CUDA; on CPU, where PyTorch keeps no
allocator statistics, the alloc/free events of torch.profiler(profile_memory=True) summed in time
order (the RSS is useless here: glibc keeps freed blocks mapped, so every row reads the same).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time

import torch

from ..recorder import AttentionRecorder, EagerRecorder
from .harness import time_fn

SD21_CONFIG = dict(
    in_channels=4, out_channels=4, layers_per_block=2, sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)
SD21_TOP_CONFIG = dict(
    in_channels=4, out_channels=4, layers_per_block=1, sample_size=32,
    block_out_channels=(320, 640),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10), cross_attention_dim=1024, use_linear_projection=True,
)


def allocated_peak_mb(fn, device) -> tuple[object, float]:
    """(fn(), peak MiB of tensor memory allocated above the start while fn ran)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with _stdout_to_devnull(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:  # frees of tensors made before fn count negative: peak >= 0
        live += nbytes
        peak = max(peak, live)
    return out, peak / 2**20


@contextlib.contextmanager
def _stdout_to_devnull():
    """Kineto writes a "USDT: ... profiler_start/stop" line from C++ at every profiler start and
    stop; silence file descriptors 1 and 2 around the profiled step so that `fasttrack bench`
    tables stay readable. An exception raised inside still propagates (and prints) after."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def _setup(device, quick):
    from diffusers import UNet2DConditionModel

    from ..patch import patch

    cuda = device.type == "cuda"
    cfg, latent = (SD21_CONFIG, 64) if cuda else (SD21_TOP_CONFIG, 24 if quick else 48)
    dtype = torch.float16 if cuda else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg).eval()
    torch.nn.Module.to(unet, device=device, dtype=dtype)
    # On CPU "auto" means the torch backend, except under TRITON_INTERPRET=1 (the test and
    # benchmark suites set it), where it would pick the Triton interpreter: not a speed.
    patch(unet, backend="auto" if cuda else "torch")
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, latent, latent, generator=g).to(device, dtype)
    ctx = torch.randn(2, 77, cfg["cross_attention_dim"], generator=g).to(device, dtype)
    t = torch.tensor([500.0, 500.0], device=device, dtype=dtype)
    return unet, latent, (sample, t, ctx), f"{'SD2.1' if cuda else 'SD2.1-top'} {latent}x{latent}"


def make_steps(device, quick: bool = True):
    """(shape label, {impl: step}) for the rows of the module docstring; each step runs one
    recorded UNet call (no grad) and returns its output or harmonized map."""
    unet, latent, (sample, t, ctx), shape = _setup(device, quick)
    grid = (latent, latent)

    @torch.no_grad()
    def unrecorded():
        return unet(sample, t, encoder_hidden_states=ctx).sample

    @torch.no_grad()
    def fasttrack_step():
        with AttentionRecorder(unet, resolution=grid, self_layers=(latent,)) as rec:
            unet(sample, t, encoder_hidden_states=ctx)
        return rec.harmonized()

    @torch.no_grad()
    def eager_step():
        with EagerRecorder(unet, resolution=grid, self_layers=(latent,)) as rec:
            unet(sample, t, encoder_hidden_states=ctx)
        return rec.harmonized()

    return shape, {"unrecorded": unrecorded, "fasttrack": fasttrack_step, "eager": eager_step}


def run(device=None, quick: bool = True, repeat: int | None = None) -> list[dict]:
    """Rows: section, shape, impl (unrecorded / fasttrack / eager), ms, peak_mb, and rel_err of
    fasttrack's harmonized map against the eager one.

    CUDA: a warm-up run measures peak memory, then `repeat` (5) timed runs. CPU: after one
    unrecorded warm-up call, each step runs once, both timed and memory-profiled (the
    profiler's per-op cost is a few ms against seconds of convolutions), unless `repeat` asks
    for separate timed runs."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape, steps = make_steps(device, quick)
    cuda = device.type == "cuda"
    repeat = repeat or (5 if cuda else 0)
    rows, maps = [], {}
    if not cuda:
        steps["unrecorded"]()  # first-call costs (oneDNN primitive creation) off the rows
    for impl, fn in steps.items():
        row = dict(section="recorder", shape=shape, impl=impl, dtype="float16" if cuda else "float32",
                   device=str(device))
        try:
            t0 = time.perf_counter()
            maps[impl], peak = allocated_peak_mb(fn, device)
            ms = (time.perf_counter() - t0) * 1e3
            if repeat:
                ms = time_fn(fn, device, warmup=0, repeat=repeat)
            row.update(ms=ms, peak_mb=peak)
        except (RuntimeError, MemoryError) as e:  # the eager baseline running out of memory is a result
            row.update(ms=math.nan, peak_mb=math.nan, error=str(e).splitlines()[0][:200])
        rows.append(row)
    if "fasttrack" in maps and "eager" in maps:
        a, b = maps["fasttrack"].double(), maps["eager"].double()
        err = float((a - b).norm() / b.norm())
        for r in rows[1:]:
            r["rel_err"] = err
    return rows
