"""BoxReader with a Hann-window prior on the peak and a constant-velocity window (offline.variant), replayed on cached maps: python prior_eval.py maps.pt."""
import sys, math, torch, numpy as np, itertools
torch.set_num_threads(1)
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from offline import variant
from fasttrack.trackers.diffusion.readout import BoxReader
from fasttrack.eval.metrics import iou

class PriorReader(BoxReader):
    def __init__(self, influence=0.0, momentum=0.0, search=3.0, **kw):
        super().__init__(search=search, **kw); self.influence = influence; self.momentum = momentum
    def start(self, boxes):
        super().start(boxes); self.v = torch.zeros(boxes.shape[0], 2)
    def read(self, maps, size):
        prev = self.boxes
        r = variant(maps, prev, size, threshold=self.threshold, search=self.search, scale_step=float('inf'),
                    influence=self.influence, vel=(self.v if self.momentum else None))
        region = r.boxes[:, 2:].clamp_min(1.0); centre = r.boxes[:, :2] + r.boxes[:, 2:] / 2
        measured = region * self._ratio
        bounded = torch.minimum(torch.maximum(measured, prev[:, 2:] / self.scale_step), prev[:, 2:] * self.scale_step)
        wh = prev[:, 2:].pow(1 - self.size_lr) * bounded.pow(self.size_lr)
        first = (r.found & ~self._calibrated)[:, None]
        self._ratio = torch.where(first, prev[:, 2:] / region, self._ratio)
        wh = torch.where(first, prev[:, 2:], wh); self._calibrated |= r.found
        boxes = torch.where(r.found[:, None], torch.cat([centre - wh / 2, wh], 1), prev)
        if self.momentum:
            self.v = self.momentum * ((boxes[:, :2] + boxes[:, 2:] / 2) - (prev[:, :2] + prev[:, 2:] / 2))
        self.boxes = boxes
        return r._replace(boxes=boxes)

def run(data, **kw):
    per = {}
    for name, d in data.items():
        r = PriorReader(**kw); gt = d["gt"].float(); r.start(gt[:1])
        out = []
        for k in range(d["maps"].shape[0]):
            out.append(r.read(d["maps"][k][None], tuple(d["size"])).boxes[0].numpy())
        per[name] = float(iou(np.array(out), gt[1:len(out)+1].numpy()).mean())
    return np.mean(list(per.values())), per
if __name__ == "__main__":
    data = torch.load(sys.argv[1])
    base = dict(threshold=0.3, size_lr=0.5, calibrate=True)
    ao, per = run(data, **base); print("base", round(ao, 3), {n[-3:]: round(v, 2) for n, v in per.items()}, flush=True)
    for inf_, mom, s in itertools.product([0.0, 0.2, 0.4], [0.0, 0.5, 1.0], [2.0, 3.0]):
        ao, per = run(data, influence=inf_, momentum=mom, search=s, **base)
        print(f"inf {inf_} mom {mom} search {s}: {ao:.3f}", flush=True)
