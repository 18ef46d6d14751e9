"""Cache Diff-Tracker maps; tracking frames average NDRAW noise draws (0: the clean latent)."""
import sys, os, time, torch
torch.set_num_threads(1)
from fasttrack.trackers.diff_tracker import DiffTracker
from fasttrack.trackers.diffusion.prompt_learning import insert_prompt
from fasttrack.trackers.diffusion.sd import add_noise
from fasttrack.data.synthetic import synthetic_split
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
rec = []
orig = tr._boxes_from_maps
def hook(maps):
    rec[-1].append(maps[0].clone()); return orig(maps)
tr._boxes_from_maps = hook
data = {}; t0 = time.time()
for s in synthetic_split(split, num=num, num_frames=frames):
    rec.append([])
    tr.run(s, s.gt[0], progress=False)
    data[s.name] = dict(maps=torch.stack(rec[-1]), gt=torch.as_tensor(s.gt), size=s.frames[0].shape[:2])
    print(s.name, round(time.time() - t0), float(data[s.name]["maps"].amax()), flush=True)
torch.save(data, out)
