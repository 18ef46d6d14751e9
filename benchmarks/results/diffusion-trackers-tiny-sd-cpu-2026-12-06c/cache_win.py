"""Cache Diff-Tracker maps with the first-frame prompt loss restricted to a window around the box."""
import sys, os, time, torch
torch.set_num_threads(1)
from fasttrack.trackers.diff_tracker import DiffTracker
import fasttrack.trackers.diff_tracker.tracker as T
from fasttrack.trackers.diffusion.prompt_learning import initial_prompt, learn_prompt as adam_prompt
from fasttrack.trackers.diffusion.readout import search_window
from fasttrack.trackers.diffusion.sd import diffusion_target
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "diffusion-trackers-tiny-sd-cpu-2026-12-06b"))
from cache_maps import cache_maps
split, num, frames, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}
WS = float(os.environ.get("WS", "3"))
def win_mse(maps, gt, win):
    m = maps.float(); inf = torch.tensor(float("inf"))
    lo = torch.where(win, m, inf).flatten(1).amin(1).view(-1, 1, 1)
    hi = torch.where(win, m, -inf).flatten(1).amax(1).view(-1, 1, 1)
    n = (m - lo) / (hi - lo).clamp_min(1e-12)
    d = ((n - gt.float()) ** 2) * win
    return d.flatten(1).sum(1) / win.flatten(1).sum(1)
_start = DiffTracker._start
def _start2(self, image, boxes):
    b = torch.as_tensor(boxes, dtype=torch.float32)
    self._win = search_window(b, image.shape[:2], (self.resolution,) * 2, WS)
    return _start(self, image, boxes)
def learn_prompt(self, z, gt, steps):
    t = self.timestep; win = self._win
    def loss_fn(p, step):
        maps, pred, noise = self._forward(z, p)
        target = diffusion_target(z, noise, t, self.sd.alphas_cumprod, self.sd.prediction_type)
        l_dm = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
        return win_mse(maps, gt, win) + self.dm_weight * l_dm
    p0 = initial_prompt(self.sd.null_context, gt.shape[0], self.num_tokens, self.sd.prompt_init)
    return adam_prompt(p0, loss_fn, steps, self.lr)
DiffTracker._start = _start2
DiffTracker.learn_prompt = learn_prompt
tr = DiffTracker.pretrained(**extra)
cache_maps(tr, split, num, frames, out)
