"""Cache Diff-Tracker maps with a term added to the first-frame prompt loss: MODE=bce (BCE of map vs box) or MODE=log (-log mean map in the box), weight PW."""
import sys, os, time, torch
torch.set_num_threads(1)
from fasttrack.trackers.diff_tracker import DiffTracker
from fasttrack.trackers.diffusion.prompt_learning import initial_prompt, normalized_mse, learn_prompt as adam_prompt
from fasttrack.trackers.diffusion.sd import diffusion_target
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "diffusion-trackers-tiny-sd-cpu-2026-12-06b"))
from cache_maps import cache_maps
split, num, frames, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}
PW = float(os.environ.get("PW", "0")); MODE = os.environ.get("MODE", "bce")
def learn_prompt(self, z, gt, steps):
    t = self.timestep
    def loss_fn(p, step):
        maps, pred, noise = self._forward(z, p)
        target = diffusion_target(z, noise, t, self.sd.alphas_cumprod, self.sd.prediction_type)
        l_dm = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
        m = maps.float()
        if MODE == "bce":
            pix = torch.nn.functional.binary_cross_entropy(m.clamp(1e-6, 1 - 1e-6), gt.float(), reduction="none").flatten(1).mean(1)
        else:  # log mass inside the box
            pix = -torch.log((m * gt).flatten(1).sum(1) / gt.flatten(1).sum(1) + 1e-12)
        return normalized_mse(maps, gt) + self.dm_weight * l_dm + PW * pix
    p0 = initial_prompt(self.sd.null_context, gt.shape[0], self.num_tokens, self.sd.prompt_init)
    return adam_prompt(p0, loss_fn, steps, self.lr)
DiffTracker.learn_prompt = learn_prompt
tr = DiffTracker.pretrained(**extra)
cache_maps(tr, split, num, frames, out)
