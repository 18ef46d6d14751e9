"""Cache Diff-Tracker maps; tracking frames average NDRAW noise draws (0: the clean latent)."""
import sys, os, time, torch
torch.set_num_threads(1)
from fasttrack.trackers.diff_tracker import DiffTracker
from fasttrack.trackers.diffusion.prompt_learning import insert_prompt
from fasttrack.trackers.diffusion.sd import add_noise
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "diffusion-trackers-tiny-sd-cpu-2026-12-06b"))
from cache_maps import cache_maps
split, num, frames, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}
ND = int(os.environ.get("NDRAW", "1"))
TL = [int(x) for x in os.environ.get("TLIST", "100").split(",")]
_fwd = DiffTracker._forward
def fwd(self, z, prompt):
    if torch.is_grad_enabled() or ND == 1:
        return _fwd(self, z, prompt)
    K = prompt.shape[0]
    ctx = insert_prompt(self.sd.null_context, prompt.to(self.dtype))
    if ND == 0:
        zt = z.expand(K, -1, -1, -1)
        with self.reader.start():
            for t in TL:
                pred = self.sd.unet(zt, torch.tensor(t), encoder_hidden_states=ctx).sample
        return self.reader.harmonized(self.alpha, self.normalize), pred, None
    noise = torch.randn((ND,) + tuple(z.shape[1:]), generator=self._gen)
    zt = add_noise(z, noise, self.timestep, self.sd.alphas_cumprod)   # (ND, 4, h, w)
    pred = self.reader.run(zt, self._t, ctx.expand(ND, -1, -1))
    return self.reader.harmonized(self.alpha, self.normalize).mean(0, keepdim=True), pred, noise
DiffTracker._forward = fwd
tr = DiffTracker.pretrained(**extra)
cache_maps(tr, split, num, frames, out)
