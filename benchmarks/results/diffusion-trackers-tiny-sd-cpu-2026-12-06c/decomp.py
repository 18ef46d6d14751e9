"""Open-loop ceilings: region centre or peak with the true size, true previous box: python decomp.py maps.pt [threshold]."""
import sys, torch, numpy as np
torch.set_num_threads(1)
from fasttrack.trackers.diffusion.readout import read_boxes
from fasttrack.eval.metrics import iou
data = torch.load(sys.argv[1]); th = float(sys.argv[2]) if len(sys.argv) > 2 else 0.3
rows = []
for n, d in data.items():
    maps, gt, size = d["maps"], d["gt"].float(), tuple(d["size"])
    T = maps.shape[0]
    r = read_boxes(maps, gt[:T], size, threshold=th, search=3.0)
    b = r.boxes; g = gt[1:T+1]
    c = b[:, :2] + b[:, 2:] / 2
    cen = torch.cat([c - g[:, 2:] / 2, g[:, 2:]], 1)                    # region centre, true size
    pk = torch.cat([r.points - g[:, 2:] / 2, g[:, 2:]], 1)               # peak point, true size
    gc = g[:, :2] + g[:, 2:] / 2
    # centre of mass of the window-normalized map within a true-size box around the peak
    rows.append([float(iou(cen.numpy(), g.numpy()).mean()), float(iou(pk.numpy(), g.numpy()).mean())])
    print(n[-3:], np.round(rows[-1], 2))
print("mean centre-only IoU (region centre, true size) %.3f, peak point %.3f" % tuple(np.mean(rows, 0)))
