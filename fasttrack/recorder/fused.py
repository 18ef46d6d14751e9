"""`fasttrack.AttentionRecorder`: attention maps of a diffusers model at fused-attention cost.

    unet = pipe.unet
    with fasttrack.AttentionRecorder(unet, resolution=64, self_layers=(64,), batch=[1]) as rec:
        pipe(prompt, num_inference_steps=20)          # every UNet call is recorded
    cross = rec.cross()                                 # (B, T, 64, 64) mean cross-attention
    m = rec.harmonized(alpha=0.5)                       # alpha C + (1 - alpha) S^T C

What is kept (DESIGN 1.2), per recorded layer call:
- cross layers: the head-mean probabilities (B, N, T), restricted to `batch` and `tokens`,
  bilinearly resized to the output grid and summed into one running (B, T, Rh, Rw) tensor;
- self layers: (q, k, lse) restricted to `batch`: N (2D + 1) numbers per head (lse is None on the
  CPU path, see fasttrack.integrations.diffusers_attention). They are kept per call because
  S^T C needs the mean cross map of the whole recording, known only when results are asked for;
  averaging over layers and calls is linear, so self_cross() sums one fused product per entry.
Averages weight every (layer, call) pair equally. Nothing of size N x N is ever allocated.

With grad enabled during the forward, the kept tensors stay in the autograd graph: results are
differentiable to the UNet inputs and encoder_hidden_states (prompt learning, DESIGN 1.3).
Recording is skipped during backward (activation checkpointing recomputes forwards there).
"""
from __future__ import annotations

import torch

from ..patch import is_patched, patch, unpatch
from ..integrations.diffusers_attention import FasttrackAttnProcessor
from .resize import resize_cross, self_cross_entry
from .base import Recorder
from .layers import format_hw

__all__ = ["AttentionRecorder"]

_ACTIVE_ATTR = "_fasttrack_recorder"
# -1 outside autograd's backward; inside it (activation checkpointing re-running a forward) the
# id of the running graph task. Torch builds without it never recompute inside backward here.
_GRAPH_TASK_ID = getattr(torch._C, "_current_graph_task_id", lambda: -1)


def _take(x: torch.Tensor, dim: int, sel, size: int, arg: str, what: str) -> torch.Tensor:
    """x restricted to the selected indices along `dim`; ValueError when one is >= size."""
    if sel is None:
        return x
    if isinstance(sel, slice):
        sel = list(range(size)[sel])
        if not sel:
            raise ValueError(f"{arg}: the slice selects none of the {size} {what}")
    sel = [int(i) for i in sel]
    bad = [i for i in sel if i >= size or i < 0]
    if bad:
        raise ValueError(f"{arg} {bad} out of range: this call has {size} {what} "
                         f"(valid indices 0..{size - 1})")
    if sel == list(range(sel[0], sel[0] + len(sel))):
        return x.narrow(dim, sel[0], len(sel))  # a view: no index tensor, no host-device copy
    key = (tuple(sel), x.device)
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        # Built once per (selection, device): a fresh torch.tensor(list, device=cuda) on every
        # layer call would be a host-to-device copy inside the frame.
        idx = _INDEX_CACHE[key] = torch.tensor(sel, device=x.device)
    return x.index_select(dim, idx)


_INDEX_CACHE: dict = {}


class _LayerHook:
    """Set on a FasttrackAttnProcessor while recording: decides, per call, whether its layer
    records, and hands the processor an object receiving the layer's tensors."""

    __slots__ = ("rec", "layer")

    def __init__(self, rec, layer):
        self.rec, self.layer = rec, layer

    def plan(self, *, is_self, n_queries, hw, batch_size, masked):
        return self.rec._plan(self.layer, is_self, n_queries, hw, batch_size, masked)


class _Call:
    __slots__ = ("rec", "layer", "kind", "hw", "batch_size", "store")

    def __init__(self, rec, layer, kind, hw, batch_size, store):
        self.rec, self.layer, self.kind, self.hw = rec, layer, kind, hw
        self.batch_size, self.store = batch_size, store

    def add_self(self, q, k, lse, scale, backend):
        if self.store:
            self.rec._add_self(self, q, k, lse, scale, backend)

    def add_cross(self, probs):
        if self.store:
            self.rec._add_cross(self, probs)


class AttentionRecorder(Recorder):
    """Records averaged attention maps of a model containing diffusers Attention layers, through
    fasttrack's fused kernels. The model is patched on entry when needed (and unpatched on exit
    if this recorder patched it). Arguments: see `fasttrack.recorder.base.Recorder`.
    Results: cross(), self_cross(), harmonized(alpha) -> (B', T', Rh, Rw) float32 (float64 for
    float64 models); num_calls; reset().
    """

    def _init_state(self) -> None:
        self._handles = []
        self._patched_here = False

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "AttentionRecorder":
        if getattr(self.model, _ACTIVE_ATTR, None) is not None:
            raise ValueError("another AttentionRecorder is already recording this model")
        self._patched_here = not is_patched(self.model)
        patch(self.model)
        try:
            self._install()
        except Exception:
            self._uninstall()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._uninstall()

    def _install(self) -> None:
        for layer in self._layers:
            if self._sel[layer.kind].empty:
                continue
            proc = getattr(layer.module, "processor", None)
            if not isinstance(proc, FasttrackAttnProcessor):
                if self._sel[layer.kind].matches(layer.name, None):
                    raise ValueError(f"layer {layer.name} uses {type(proc).__name__}, which fasttrack.patch "
                                     f"does not replace (it would change the model); exclude it")
                continue
            if proc.hook is not None:
                raise ValueError(f"layer {layer.name} is already being recorded by another "
                                 f"AttentionRecorder (one recorder per layer at a time)")
            proc.hook = _LayerHook(self, layer)
        self._spatial.install([l for l in self._layers if not self._sel[l.kind].empty])
        self._handles.append(self.model.register_forward_hook(lambda *a: self._check_resolutions()))
        object.__setattr__(self.model, _ACTIVE_ATTR, self)

    def _uninstall(self) -> None:
        for layer in self._layers:
            proc = getattr(layer.module, "processor", None)
            if isinstance(proc, FasttrackAttnProcessor) and isinstance(proc.hook, _LayerHook) \
                    and proc.hook.rec is self:
                proc.hook = None
        self._spatial.remove()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if getattr(self.model, _ACTIVE_ATTR, None) is self:
            object.__delattr__(self.model, _ACTIVE_ATTR)
        if self._patched_here:
            unpatch(self.model)
            self._patched_here = False

    # ------------------------------------------------------------------ recording
    def reset(self) -> None:
        """Forget everything recorded so far (selection and settings are kept)."""
        self._cross_sum = None
        self._cross_count = 0
        self._self_entries = []
        self._calls: dict[str, int] = {}
        self._seen: dict[str, tuple] = {}  # layer name -> (kind, hw) of layers that ran

    def _plan(self, layer, is_self, n, hw_hint, batch_size, masked):
        kind = "self" if is_self else "cross"
        sel = self._sel[kind]
        if kind != layer.kind or not (sel.resolutions or sel.matches(layer.name, None)):
            return None
        hw = self._spatial.hw(layer, n, hw_hint)
        self._seen[layer.name] = (kind, hw)
        if not sel.matches(layer.name, hw):
            return None
        if hw[0] > self.grid[0] or hw[1] > self.grid[1]:
            raise ValueError(f"resolution {format_hw(self.grid)} is smaller than recorded layer {layer.name} "
                             f"({format_hw(hw)}); use a resolution of at least {format_hw(hw)} or exclude "
                             f"that layer")
        if masked and kind == "self":
            raise ValueError(f"self-attention layer {layer.name} got an attention mask: recording masked "
                             f"self-attention is not supported; drop the mask or exclude the layer")
        # Activation checkpointing re-runs forwards inside backward: same path, nothing stored.
        store = _GRAPH_TASK_ID() == -1
        if store:
            self._calls[layer.name] = self._calls.get(layer.name, 0) + 1
        return _Call(self, layer, kind, hw, batch_size, store)

    def _add_cross(self, call, probs):
        # probs (B, N, T) head mean -> (B', T', Rh, Rw), accumulated in float32 (float64 stays).
        acc = torch.promote_types(probs.dtype, torch.float32)
        p = _take(probs, 0, self.batch, call.batch_size, "batch", "batch entries")
        p = _take(p, 2, self.tokens, probs.shape[2], "tokens", "tokens")
        m = resize_cross(p.to(acc), call.hw, self.grid)
        if self._cross_sum is not None and self._cross_sum.shape != m.shape:
            raise ValueError(f"layer {call.layer.name} gives a cross map of shape {tuple(m.shape)} "
                             f"but earlier ones were {tuple(self._cross_sum.shape)}: batch size or "
                             f"token count changed during the recording (call reset() between)")
        self._cross_sum = m if self._cross_sum is None else self._cross_sum + m
        self._cross_count += 1

    def _add_self(self, call, q, k, lse, scale, backend):
        q, k = (_take(x, 0, self.batch, call.batch_size, "batch", "batch entries") for x in (q, k))
        if lse is not None:
            lse = _take(lse, 0, self.batch, call.batch_size, "batch", "batch entries")
        self._self_entries.append((q, k, lse, scale, call.hw, backend))

    def _check_resolutions(self) -> None:
        """ValueError when an int selector names a resolution no layer of its kind ran at."""
        for kind, sel in self._sel.items():
            seen = {hw for name, (k, hw) in self._seen.items() if k == kind}
            if not sel.resolutions or not seen:
                continue
            have = {max(hw) for hw in seen}
            missing = [r for r in sel.resolutions if r not in have]
            if missing:
                avail = ", ".join(f"{max(hw)} ({format_hw(hw)})" for hw in sorted(seen, reverse=True))
                raise ValueError(f"{kind}_layers: the model has no {kind}-attention layer at resolution "
                                 f"{missing}; available resolutions: {avail}")

    # ------------------------------------------------------------------ results
    def _cbar(self) -> torch.Tensor:
        self._check_resolutions()
        if self._sel["cross"].empty:
            raise ValueError("no cross-attention layers are recorded (cross_layers=None); choose "
                             f"'all', resolutions or names from: {self._names('cross')}")
        if self._cross_count == 0:
            raise ValueError("nothing recorded yet: run the model inside `with recorder:` first "
                             f"(recording cross layers: {self._names('cross')})")
        return self._cross_sum / self._cross_count

    def _names(self, kind: str) -> str:
        return ", ".join(l.name for l in self._layers if l.kind == kind) or "(none)"

    def cross(self) -> torch.Tensor:
        """(B', T', Rh, Rw): head-mean cross-attention, resized, averaged over layers and calls."""
        return self._cbar()

    def _self_apply(self, cbar: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """S_bar^T cbar, one fused product per recorded self call: (B' / groups, T', Rh, Rw) ->
        same; with groups > 1 each call's product runs on cbar repeated for every group and is
        averaged over the groups (S_bar^T is linear: the mean of the groups' maps applied)."""
        self._check_resolutions()
        if self._sel["self"].empty:
            raise ValueError("no self-attention layers are recorded (self_layers=None); choose "
                             f"'all', resolutions or names from: {self._names('self')}")
        if not self._self_entries:
            raise ValueError("no self-attention layer has been recorded yet; recorded layers run "
                             "inside `with recorder:`")
        b, t = cbar.shape[0], cbar.shape[1]
        flat = cbar.reshape(b, t, -1).transpose(1, 2)  # (B' / groups, M, T')
        if groups > 1:
            flat = flat.repeat(groups, 1, 1)           # group-major, as the recorded batch
        total = None
        for q, k, lse, scale, hw, backend in self._self_entries:
            y = self_cross_entry(q, k, lse, scale, flat, hw, self.grid, self.renormalize, backend)
            total = y if total is None else total + y
        return self._group_mean(total / len(self._self_entries), groups)
