"""Open-loop ceiling of a true-size box filter on the window-normalized map."""
import sys, torch, numpy as np
import torch.nn.functional as F
torch.set_num_threads(1)
from fasttrack.trackers.diffusion.readout import search_window
from fasttrack.eval.metrics import iou
def boxfilter_centre(m, prev, size, search=3.0, wh=None, power=1.0, sub=0.0):
    """argmax over centres of the mean of the window-normalized map inside a box of size wh."""
    H, W = size; h, w = m.shape[-2:]
    win = search_window(prev[None], size, (h, w), search)[0]
    lo, hi = m[win].min(), m[win].max()
    n = ((m - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1) * win
    n = n ** power - sub
    up = F.interpolate(n[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    bw, bh = int(round(float(wh[0]))), int(round(float(wh[1])))
    bw, bh = max(bw, 1), max(bh, 1)
    ii = F.pad(up, (1, 0, 1, 0)).cumsum(0).cumsum(1)
    s = ii[bh:, bw:] - ii[:-bh, bw:] - ii[bh:, :-bw] + ii[:-bh, :-bw]   # (H-bh+1, W-bw+1) sums of boxes with top-left (y,x)
    # restrict centres to the search window
    cx = torch.arange(s.shape[1]) + bw / 2; cy = torch.arange(s.shape[0]) + bh / 2
    pcx, pcy = prev[0] + prev[2] / 2, prev[1] + prev[3] / 2
    ok = ((cx[None] - pcx).abs() <= prev[2] * search / 2) & ((cy[:, None] - pcy).abs() <= prev[3] * search / 2)
    s = torch.where(ok, s, torch.tensor(-float("inf")))
    k = int(s.flatten().argmax()); y, x = k // s.shape[1], k % s.shape[1]
    return torch.tensor([x, y, bw, bh], dtype=torch.float32)
if __name__ == "__main__":
    data = torch.load(sys.argv[1])
    for power, sub in [(1, 0), (2, 0), (1, 0.3), (1, 0.5)]:
        res = []
        for n, d in data.items():
            maps, gt, size = d["maps"], d["gt"].float(), tuple(d["size"])
            bs = [boxfilter_centre(maps[t], gt[t], size, wh=gt[t + 1, 2:], power=power, sub=sub) for t in range(maps.shape[0])]
            res.append(float(iou(torch.stack(bs).numpy(), gt[1:].numpy()).mean()))
        print(power, sub, "open-loop true-size box-filter centre IoU %.3f" % np.mean(res), np.round(res, 2))
