"""AO of BoxReader settings on cached Diff-Tracker maps (closed loop)."""
import sys, torch, numpy as np, itertools
torch.set_num_threads(1)
from fasttrack.trackers.diffusion.readout import BoxReader
from fasttrack.eval.metrics import iou
def run(data, **kw):
    per = {}
    for name, d in data.items():
        r = BoxReader(**kw); gt = d["gt"].float(); r.start(gt[:1])
        out = [gt[0].numpy()]
        for k in range(d["maps"].shape[0]):
            out.append(r.read(d["maps"][k][None], tuple(d["size"])).boxes[0].numpy())
        per[name] = float(iou(np.array(out[1:]), gt[1:len(out)].numpy()).mean())
    return np.mean(list(per.values())), per
if __name__ == "__main__":
    data = torch.load(sys.argv[1])
    mx = {n: float(d["maps"].amax()) for n, d in data.items()}
    print("map max per seq:", {n[-3:]: f"{v:.1e}" for n, v in mx.items()})
    for th, lr, cal in itertools.product([0.2, 0.3, 0.4, 0.5], [0.5, 1.0], [False, True]):
        ao, per = run(data, threshold=th, size_lr=lr, calibrate=cal)
        print(f"th {th} lr {lr} cal {cal}: AO {ao:.3f}", flush=True)
    ao, per = run(data, threshold=0.3, size_lr=0.5, calibrate=True)
    print({n[-3:]: round(v, 2) for n, v in per.items()})
