"""Per sequence: how often the map peak (window centred on the true box) lies inside the true box, and the map maxima."""
import sys, torch, numpy as np
from fasttrack.trackers.diffusion.readout import search_window
data = torch.load(sys.argv[1])
tot=[]
for n, d in data.items():
    maps, gt, (H, W) = d["maps"], d["gt"].float(), d["size"]
    h, w = maps.shape[1:]
    hits = []; gmax=[]
    for t in range(maps.shape[0]):
        g = gt[t+1]
        win = search_window(g[None], (H, W), (h, w), 3.0)[0]
        m = torch.where(win, maps[t], torch.tensor(-float('inf')))
        p = int(m.flatten().argmax()); py, px = p // w, p % w
        cx, cy = (px + .5) * W / w, (py + .5) * H / h
        hits.append(g[0] <= cx <= g[0]+g[2] and g[1] <= cy <= g[1]+g[3])
        gmax.append(float(maps[t].amax()))
    tot.append(np.mean(hits))
    print(n, "peak-in-gt (gt-centred window)", round(np.mean(hits),2), "max %.1e" % np.median(gmax), "gt wh", gt[0,2:].tolist())
print("mean", np.mean(tot))
