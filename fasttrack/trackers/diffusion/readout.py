"""The box readout of the diffusion trackers: from a target's attention map to its box.

Both papers take "the smallest box around the activated region" of the map. Over the whole
frame that is fragile (DESIGN 1.7): a same-looking distractor, or a blur of weak activation,
joins the region and the box grows to cover them. `read_boxes` adds the locality prior every
tracker has, and reads the region that holds the target:

1. search window: the previous box scaled by `search` about its centre (at least one map cell
   each way), clipped to the frame; cells whose centre lies outside are ignored;
2. renormalize: min-max over the window, m' = (m - min_W) / (max_W - min_W), so the threshold
   is relative to the target's neighbourhood, not to the strongest response anywhere;
3. the peak: the window's largest m' cell;
4. the connected region (4-neighbourhood) of cells with m' >= `threshold` holding the peak,
   grown from the peak by alternating row and column run fills (`grow_region`: a fixed number
   of ops whatever the grid, without host syncs; exact for any region whose cells join the
   peak by paths of at most 5 turns, which the blobs of thresholded maps are);
5. the box, at image resolution: the bilinearly upsampled m' (align_corners=False, DESIGN 3) at
   or above `threshold`, restricted to the region grown by one cell, plus the peak cell's own
   pixels (the interpolated map peaks below the cell value, so a threshold near 1 could leave
   nothing); its smallest enclosing box. Sub-cell edges come from the interpolation; the
   one-cell margin only stops a neighbouring blob from joining;
6. the size prior: width and height change by at most a factor `scale_step` per frame about
   the region box's centre. Attention maps are peaky or blurred by turns; without the bound a
   peaky frame shrinks the box, the smaller box shrinks the next window, and the track
   collapses to a point (measured on the shipped tiny-sd: AO 0.02 on "val" without a learned
   prompt). Trackers bound their per-frame scale change for the same reason (SiamFC's scale
   steps). `scale_step=inf` turns it off.
The score is the peak's raw value min-max normalized over the whole map: 1 when the target
holds the frame's strongest response, lower when something else outshines it. A window with
nothing to read (a constant map) keeps the previous box, its centre as the point and an empty
mask, with score 0 and `found` False.

`BoxReader` is the readout of one tracked sequence, what the trackers call: `read_boxes` near
its previous boxes, then a size model. The region's extent is a biased measure of the target's:
how much of the target a token's map covers, and how far it bleeds, depends on the target (on
tiny-sd's "val" split, region size / true size, open loop, ranged 0.1 to 1.7 between sequences
with a spread of 0.05-0.3 within one). So the first read calibrates: ratio = init size / that
read's region size, per target and axis, and the box keeps the init size on that frame; later
reads measure size = ratio x region size, bounded to a factor `scale_step` of the previous size
and smoothed geometrically, size = prev^(1 - size_lr) x measured^size_lr. The centre is the
region box's. (Measured on the shipped tiny-sd, Diff-Tracker, 20 "val" sequences x 40 frames,
closed loop: region boxes bounded by 1.1, AO 0.44; the init size kept, 0.53; calibrated and
smoothed with size_lr 0.5, 0.55.)

Motion (`motion` a > 0): a constant-velocity model of each centre, v <- (1 - a) v + a (c_t - c_{t-1})
(an exponential average of the per-frame steps, 0 at the init box), and the next read's window
is centred on the prediction c_t + v (kept inside the image) instead of c_t: the `predicted`
box, on which DINTR also centres its crop. A fast target stays inside the window, and when a
same-looking copy crosses it the window leads the target rather than trailing it between the
two. Only the window moves: a cosine-window weight on the peak (SiamFC's) lost (below).
(Measured on the shipped tiny-sd, DINTR on crops, 20 "val" sequences x 40 frames, closed loop:
no motion 0.618, a = 0.3 0.643 (shipped for DINTR), 0.5 0.640; the cosine-window weight
lost on the sequences with copies or fast targets. On Diff-Tracker's whole-frame maps a
constant-velocity window was neutral, 0.546-0.553 vs 0.552: it ships without.)

Everything is batched over K targets and stays on the device.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .boxes import _first_last
from .crops import from_window, to_window, window_side

__all__ = ["read_boxes", "search_window", "grow_region", "Readout", "BoxReader", "check_readout"]


def check_readout(threshold, search, scale_step, size_lr=1.0, motion=0.0) -> None:
    """ValueError naming the readout setting out of range: threshold in (0, 1], search > 0,
    scale_step >= 1, size_lr in (0, 1], motion in [0, 1] (the trackers check their settings
    with it at construction)."""
    if isinstance(motion, bool) or not isinstance(motion, (int, float)) or not 0.0 <= motion <= 1.0:
        raise ValueError(f"motion must be a number in [0, 1], got {motion!r}")
    if not 0.0 < float(size_lr) <= 1.0:
        raise ValueError(f"size_lr must be in (0, 1], got {size_lr!r}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not float(search) > 0:
        raise ValueError(f"search must be > 0, got {search!r}")
    if not float(scale_step) >= 1:
        raise ValueError(f"scale_step must be >= 1, got {scale_step!r}")


class Readout(NamedTuple):
    """What `read_boxes` reads, all device tensors: boxes (K, 4) float32 [x, y, w, h] pixels;
    scores (K,) float32 in [0, 1]; points (K, 2) float32 [x, y], the peak cell's centre;
    masks (K, H, W) bool, the region's activated pixels (the box is their bounding box up to
    the scale_step bound); found (K,) bool, False where the window was constant."""

    boxes: torch.Tensor
    scores: torch.Tensor
    points: torch.Tensor
    masks: torch.Tensor
    found: torch.Tensor


def search_window(prev_boxes: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int],
                  search: float) -> torch.Tensor:
    """Cells of an (h, w) map grid over an (H, W) image whose centre lies in the previous box
    scaled by `search` about its centre, each side at least one cell. prev_boxes (K, 4) [x, y, w, h]
    -> (K, h, w) bool."""
    H, W = image_size
    h, w = grid
    b = prev_boxes.to(torch.float32)
    cx, cy = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    half_w = (b[:, 2] * search / 2).clamp_min(W / w)
    half_h = (b[:, 3] * search / 2).clamp_min(H / h)
    # cell centres j + 1/2 (exact in float32), in pixels
    xs = torch.arange(0.5, w, 1.0, device=b.device, dtype=torch.float32) * (W / w)
    ys = torch.arange(0.5, h, 1.0, device=b.device, dtype=torch.float32) * (H / h)
    in_x = (xs - cx[:, None]).abs() <= half_w[:, None]
    in_y = (ys - cy[:, None]).abs() <= half_h[:, None]
    return in_y[:, :, None] & in_x[:, None, :]


# Alternating row and column run fills of `grow_region`: a cell is reached when a path from the
# seed to it, inside the active cells, turns at most 2 * REGION_ROUNDS - 1 times.
REGION_ROUNDS = 6


def _runs(active: torch.Tensor, dim: int) -> torch.Tensor:
    """Run numbers of (K, h, w) bool cells along `dim` (2: rows, 1: columns): 1, 2, ... for the
    maximal runs of active cells of each line, by a cumulative sum of their first cells; 0 off
    the runs."""
    a = active.to(torch.int64)
    before = F.pad(a.narrow(dim, 0, a.shape[dim] - 1), (1, 0) if dim == 2 else (0, 0, 1, 0))
    return (a - a * before).cumsum(dim) * a


def grow_region(seed: torch.Tensor, active: torch.Tensor, rounds: int = REGION_ROUNDS) -> torch.Tensor:
    """The cells of `active` (K, h, w) bool connected to the `seed` cells (K, h, w) bool in the
    4-neighbourhood, within a bound: `rounds` alternating row and column run fills (each run
    of active cells that holds a reached cell is reached whole: the reached flag's maximum per
    run number, scattered and gathered back) reach every cell joined to the seed by a path of
    at most 2 * rounds - 1 turns -- any convex region, and the blobs a thresholded attention
    map makes; a spiral or a long one-cell-wide staircase may be cut short. A fixed 6 ops per
    round whatever the grid, no host syncs (a geodesic dilation takes one 3-op step per cell of
    path length, h + w steps to cross the grid). Seed cells outside `active` are dropped."""
    runs = [_runs(active, 2), _runs(active, 1)]
    region = (seed & active).to(torch.int64)
    for _ in range(rounds):
        for dim, run in ((2, runs[0]), (1, runs[1])):
            shape = list(run.shape)
            shape[dim] += 1
            # index 0 collects the cells off the runs, all unreached: region stays inside active
            region = run.new_zeros(shape).scatter_reduce(dim, run, region, "amax").gather(dim, run)
    return region.to(torch.bool)


def read_boxes(maps: torch.Tensor, prev_boxes: torch.Tensor, image_size: tuple[int, int], *,
               threshold: float = 0.5, search: float = 3.0, scale_step: float = float("inf")) -> Readout:
    """Boxes of K targets from their maps (module docstring).

    Args:
        maps: (K, h, w) maps on a grid over the whole image (any real values).
        prev_boxes: (K, 4) [x, y, w, h] the targets' boxes in the previous frame, image pixels.
        image_size: (H, W) of the image.
        threshold: level in (0, 1] of the window-normalized map that is "activated".
        search: window size as a multiple of the previous box (> 0; inf: the whole frame).
        scale_step: largest per-frame factor of width or height change (>= 1; inf: none).
    Returns:
        a `Readout` (boxes, scores, points, masks); a target whose window is constant keeps
        its previous box with score 0.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (K, h, w), got shape {tuple(maps.shape)}")
    K, h, w = maps.shape
    if prev_boxes.shape != (K, 4):
        raise ValueError(f"prev_boxes must be ({K}, 4), got {tuple(prev_boxes.shape)}")
    check_readout(threshold, search, scale_step)
    H, W = int(image_size[0]), int(image_size[1])
    m = maps.to(torch.float32)
    prev = prev_boxes.to(device=m.device, dtype=torch.float32)
    window = search_window(prev, (H, W), (h, w), float(search))
    # python scalars, not tensors built from host data: nothing is uploaded inside a frame
    lo = torch.where(window, m, float("inf")).amin((1, 2), keepdim=True)
    below = torch.where(window, m, float("-inf"))
    hi = below.amax((1, 2), keepdim=True)
    norm = ((m - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    norm = torch.where(window, norm, 0.0)
    peak = below.flatten(1).argmax(1)
    start = torch.zeros(K, h * w, device=m.device, dtype=torch.bool)
    start.scatter_(1, peak[:, None], True)
    region = grow_region(start.view(K, h, w), norm >= threshold)[:, None].to(torch.float32)
    near = F.max_pool2d(region, 3, stride=1, padding=1)   # the region grown by one cell
    up = F.interpolate(norm[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    # nearest-exact: the cell holding each pixel's centre (DESIGN 3's pixel squares)
    allowed = F.interpolate(near, size=(H, W), mode="nearest-exact")[:, 0] > 0
    peak_pix = F.interpolate(start.view(K, 1, h, w).to(torch.float32), size=(H, W),
                             mode="nearest-exact")[:, 0] > 0
    constant = hi <= lo                                   # (K, 1, 1)
    pix = ((up >= threshold) & allowed | peak_pix) & ~constant
    rows, cols = pix.any(2), pix.any(1)
    y0, y1 = _first_last(rows)
    x0, x1 = _first_last(cols)
    boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1).to(torch.float32)
    found = rows.any(1)
    if float(scale_step) != float("inf"):
        centre = boxes[:, :2] + boxes[:, 2:] / 2
        wh = torch.minimum(torch.maximum(boxes[:, 2:], prev[:, 2:] / scale_step), prev[:, 2:] * scale_step)
        boxes = torch.cat([centre - wh / 2, wh], 1)
    boxes = torch.where(found[:, None], boxes, prev)
    flat = m.flatten(1)
    top, bottom = flat.amax(1), flat.amin(1)
    peak_val = flat.gather(1, peak[:, None])[:, 0]
    scores = ((peak_val - bottom) / (top - bottom).clamp_min(1e-12)).clamp(0, 1)
    points = torch.stack([(peak % w).to(torch.float32).add(0.5) * (W / w),
                          (peak // w).to(torch.float32).add(0.5) * (H / h)], 1)
    points = torch.where(found[:, None], points, prev[:, :2] + prev[:, 2:] / 2)
    return Readout(boxes, torch.where(found, scores, 0.0), points, pix, found)


class BoxReader:
    """The readout of one tracked sequence (module docstring): `read_boxes` near the previous
    boxes, then the size model (calibrated on the first read, bounded, smoothed).

    Args:
        threshold, search, scale_step: as `read_boxes` (scale_step bounds the size model's step).
        size_lr: weight in (0, 1] of the new size measurement (1: no smoothing).
        calibrate: learn the region-to-target size ratio on the first read (False: ratio 1).
        motion: momentum a in [0, 1] of the constant-velocity model (module docstring; 0: none,
            the search is centred on the previous box).
    Use: `start(boxes)` with the init boxes (K, 4), then `read(maps, image_size)` per frame;
    `boxes` holds the last boxes (K, 4) float32 on the maps' device, `velocity` (K, 2) the
    centres' estimated motion in pixels per frame, `predicted` (K, 4) where the next frame's
    search is centred (`boxes` moved by `velocity`). The state tensors are allocated by `start`
    and updated in place by `read` (a CUDA graph of the frame keeps their addresses): clone
    `boxes` to keep a frame's value.
    """

    def __init__(self, threshold: float = 0.5, search: float = 3.0, scale_step: float = 1.1,
                 size_lr: float = 1.0, calibrate: bool = False, motion: float = 0.0):
        check_readout(threshold, search, scale_step, size_lr, motion)
        self.threshold, self.search, self.scale_step = float(threshold), float(search), float(scale_step)
        self.size_lr, self.calibrate, self.motion = float(size_lr), bool(calibrate), float(motion)
        self.boxes = self.velocity = None

    def start(self, boxes: torch.Tensor) -> None:
        """Begin a sequence at the init boxes (K, 4) [x, y, w, h]."""
        self.boxes = boxes.detach().to(torch.float32).clone()
        self._ratio = torch.ones_like(self.boxes[:, 2:])
        self._calibrated = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
        self.velocity = torch.zeros_like(self.boxes[:, :2])

    @property
    def predicted(self) -> torch.Tensor:
        """(K, 4) [x, y, w, h]: the last boxes moved by the estimated velocity, the box the next
        read's search window (and DINTR's crop) is centred on; `boxes` itself when motion is 0."""
        if self.boxes is None:
            raise RuntimeError("BoxReader.predicted before start(boxes)")
        if not self.motion:
            return self.boxes          # the velocity stays zero
        return torch.cat([self.boxes[:, :2] + self.velocity.to(self.boxes), self.boxes[:, 2:]], 1)

    def read(self, maps: torch.Tensor, image_size: tuple[int, int], windows: torch.Tensor | None = None) -> Readout:
        """maps (K, h, w) -> the frame's `Readout`, its boxes from the size model; updates
        `boxes`. A target with nothing to read keeps its box (and stays uncalibrated).
        windows: None when the maps cover the whole (H, W) image; else (K, 3) [x0, y0, L], the
        square each target's map covers (diffusion.crops): the region is read in the window's
        frame, a virtual image of 8 pixels per map cell, and its box and point come back in
        image pixels (its mask stays in the window's frame)."""
        if self.boxes is None:
            raise RuntimeError("BoxReader.read before start(boxes)")
        last = self.boxes.to(maps.device)
        prev = self.predicted.to(maps.device)
        if windows is None:
            r = read_boxes(maps, prev, image_size, threshold=self.threshold, search=self.search)
        else:
            side = window_side(maps.shape[-2:])
            win = windows.to(device=maps.device, dtype=torch.float32)
            r = read_boxes(maps, to_window(prev, win, side), (side, side), threshold=self.threshold,
                           search=self.search)
            r = r._replace(boxes=from_window(r.boxes, win, side), points=from_window(r.points, win, side))
        read_wh, prev_wh = r.boxes[:, 2:], prev[:, 2:]
        region = read_wh.clamp_min(1.0)
        centre = r.boxes[:, :2] + read_wh / 2
        measured = region * self._ratio
        bounded = torch.minimum(torch.maximum(measured, prev_wh / self.scale_step),
                                prev_wh * self.scale_step)
        # geometric smoothing: equal steps up and down in log size
        wh = prev_wh.pow(1 - self.size_lr) * bounded.pow(self.size_lr)
        if self.calibrate:
            first = (r.found & ~self._calibrated)[:, None]
            self._ratio.copy_(torch.where(first, prev_wh / region, self._ratio))
            wh = torch.where(first, prev_wh, wh)
            self._calibrated.copy_(self._calibrated | r.found)
        boxes = torch.where(r.found[:, None], torch.cat([centre - wh / 2, wh], 1), prev)
        if self.motion:
            # v <- (1 - a) v + a (c_t - c_{t-1}); a target with nothing read coasts (its box is
            # the prediction, so the step equals v); the predicted centre stays in the image
            step = (boxes[:, :2] + boxes[:, 2:] / 2) - (last[:, :2] + last[:, 2:] / 2)
            v = (1 - self.motion) * self.velocity.to(step) + self.motion * step
            centre = boxes[:, :2] + boxes[:, 2:] / 2
            ahead = centre + v
            inside = torch.stack([ahead[:, 0].clamp(0.0, float(image_size[1])),
                                  ahead[:, 1].clamp(0.0, float(image_size[0]))], 1)
            self.velocity.copy_(inside - centre)
        self.boxes.copy_(boxes)
        return r._replace(boxes=boxes)
