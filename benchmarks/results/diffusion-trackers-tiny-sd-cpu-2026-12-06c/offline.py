"""Offline closed-loop readout on cached maps."""
import math, sys, itertools, torch, numpy as np
import torch.nn.functional as F
torch.set_num_threads(1)
from fasttrack.trackers.diffusion import readout as R
from fasttrack.eval.metrics import metrics  # noqa

def variant(maps, prev, size, threshold=0.3, search=3.0, scale_step=1.1, influence=0.0, vel=None, sharp=1.0):
    """read_boxes with a cosine-window prior on the peak choice; vel: predicted centre shift."""
    K, h, w = maps.shape
    H, W = size
    ctr_box = prev.clone()
    if vel is not None:
        ctr_box[:, :2] += vel
    if influence == 0:
        return R.read_boxes(maps, ctr_box if vel is not None else prev, size, threshold=threshold, search=search, scale_step=scale_step)
    # cosine window over the search window, centred on ctr_box
    b = ctr_box
    cx, cy = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    half_w = (b[:, 2] * search / 2).clamp_min(W / w)
    half_h = (b[:, 3] * search / 2).clamp_min(H / h)
    xs = (torch.arange(w) + 0.5) * (W / w)
    ys = (torch.arange(h) + 0.5) * (H / h)
    dx = ((xs[None] - cx[:, None]).abs() / half_w[:, None]).clamp(max=1)
    dy = ((ys[None] - cy[:, None]).abs() / half_h[:, None]).clamp(max=1)
    hann = (torch.cos(dy * math.pi / 2) ** 2)[:, :, None] * (torch.cos(dx * math.pi / 2) ** 2)[:, None, :]
    window = R.search_window(b, size, (h, w), search)
    inf = float("inf")
    lo = torch.where(window, maps, inf).flatten(1).amin(1).view(K, 1, 1)
    hi = torch.where(window, maps, -inf).flatten(1).amax(1).view(K, 1, 1)
    norm = ((maps - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    score = (1 - influence) * norm + influence * hann
    score = torch.where(window, score, torch.full_like(score, -1.0))
    # shift maps so that read_boxes' peak is the prior's choice: give it the prior-weighted map
    # but threshold on norm: emulate by calling read_boxes on a map whose argmax is the chosen cell
    peak = score.flatten(1).argmax(1)
    m2 = norm.clone().flatten(1)
    m2.scatter_(1, peak[:, None], 1.0 + 1e-3)
    m2 = m2.view(K, h, w)
    return R.read_boxes(m2, ctr_box, size, threshold=threshold, search=search, scale_step=scale_step)

def iou(a, b):
    x0 = np.maximum(a[:, 0], b[:, 0]); y0 = np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]); y1 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)

def run_seq(d, open_loop=False, momentum=0.0, size_lr=1.0, **kw):
    maps, gt, size = d["maps"], d["gt"].float(), d["size"]
    prev = gt[0:1].clone()
    v = torch.zeros(1, 2)
    out = []
    for t in range(maps.shape[0]):
        if open_loop:
            prev = gt[t:t + 1].clone()
        r = variant(maps[t:t + 1], prev, size, vel=(v if momentum else None), **kw)
        nb = r.boxes
        if size_lr < 1:
            c = nb[:, :2] + nb[:, 2:] / 2
            wh = prev[:, 2:] ** (1 - size_lr) * nb[:, 2:] ** size_lr
            nb = torch.cat([c - wh / 2, wh], 1)
        if momentum:
            c_new = nb[:, :2] + nb[:, 2:] / 2; c_old = prev[:, :2] + prev[:, 2:] / 2
            v = momentum * (c_new - c_old)
        prev = nb
        out.append(nb[0].numpy())
    return float(iou(np.array(out), gt[1:].numpy()).mean())

def evaluate(data, **kw):
    per = {k: run_seq(d, **kw) for k, d in data.items()}
    return float(np.mean(list(per.values()))), per

def run_calib(d, calib_frames=1, size_lr=0.5, scale_step=1.1, open_loop=False, **kw):
    """Size: first measurement(s) calibrate measured -> true size ratio per dimension."""
    maps, gt, size = d["maps"], d["gt"].float(), d["size"]
    prev = gt[0:1].clone(); wh0 = gt[0:1, 2:].clone()
    meas = []
    out = []
    for t in range(maps.shape[0]):
        if open_loop:
            prev = gt[t:t + 1].clone()
        r = variant(maps[t:t + 1], prev, size, scale_step=float("inf"), **kw)
        nb = r.boxes
        c_new = nb[:, :2] + nb[:, 2:] / 2
        if t < calib_frames:
            meas.append(nb[:, 2:])
            wh = prev[:, 2:]
            if t == calib_frames - 1:
                cal = wh0 / torch.stack(meas).mean(0)   # measured -> true
        else:
            m = nb[:, 2:] * cal
            m = torch.minimum(torch.maximum(m, prev[:, 2:] / scale_step), prev[:, 2:] * scale_step)
            wh = prev[:, 2:] ** (1 - size_lr) * m ** size_lr
        nb = torch.cat([c_new - wh / 2, wh], 1)
        prev = nb
        out.append(nb[0].numpy())
    return float(iou(np.array(out), gt[1:].numpy()).mean())

def evaluate_calib(data, **kw):
    per = {k: run_calib(d, **kw) for k, d in data.items()}
    return float(np.mean(list(per.values()))), per

from scipy import ndimage
def pick(maps, prev, size, threshold=0.3, search=3.0, crit="peak", sigma=0.5, pred=None):
    """Component choice. Returns the readout of read_boxes forced onto the chosen component."""
    K, h, w = maps.shape; H, W = size
    b = prev if pred is None else pred
    window = R.search_window(b, size, (h, w), search)
    m = maps[0]; win = window[0]
    lo = m[win].min(); hi = m[win].max()
    norm = ((m - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1) * win
    act = (norm >= threshold).numpy()
    lab, n = ndimage.label(act)
    if n <= 1 or crit == "peak":
        return R.read_boxes(maps, b, size, threshold=threshold, search=search)
    xs = (np.arange(w) + 0.5) * (W / w); ys = (np.arange(h) + 0.5) * (H / h)
    bb = b[0].numpy(); cx, cy = bb[0] + bb[2] / 2, bb[1] + bb[3] / 2
    d2 = ((xs[None] - cx) / bb[2]) ** 2 + ((ys[:, None] - cy) / bb[3]) ** 2
    g = np.exp(-d2 / (2 * sigma ** 2))
    inbox = ((np.abs(xs[None] - cx) <= bb[2] / 2) & (np.abs(ys[:, None] - cy) <= bb[3] / 2)).astype(float)
    nn = norm.numpy()
    best, bs = None, -1
    for i in range(1, n + 1):
        c = lab == i
        if crit == "mass_gauss":
            s = (nn * g)[c].sum()
        elif crit == "peak_gauss":
            s = (nn * g)[c].max()
        elif crit == "overlap":
            s = (nn * inbox)[c].sum() + 1e-3 * nn[c].max()
        elif crit == "mass":
            s = nn[c].sum()
        if s > bs: bs, best = s, i
    c = lab == best
    idx = np.argmax(np.where(c, nn, -1))
    m2 = norm.clone().flatten()
    m2[idx] = 1.0 + 1e-3
    return R.read_boxes(m2.view(1, h, w), b, size, threshold=threshold, search=search)

def run_pick(d, calib_frames=1, size_lr=0.5, scale_step=1.1, open_loop=False, momentum=0.0, **kw):
    maps, gt, size = d["maps"], d["gt"].float(), d["size"]
    prev = gt[0:1].clone(); wh0 = gt[0:1, 2:].clone(); v = torch.zeros(1, 2)
    meas, out = [], []
    for t in range(maps.shape[0]):
        if open_loop:
            prev = gt[t:t + 1].clone()
        pred = prev.clone(); pred[:, :2] += v
        r = pick(maps[t:t + 1], prev, size, pred=pred, **kw)
        nb = r.boxes
        c_new = nb[:, :2] + nb[:, 2:] / 2
        if t < calib_frames:
            meas.append(nb[:, 2:]); wh = prev[:, 2:]
            if t == calib_frames - 1:
                cal = wh0 / torch.stack(meas).mean(0)
        else:
            m = nb[:, 2:] * cal
            m = torch.minimum(torch.maximum(m, prev[:, 2:] / scale_step), prev[:, 2:] * scale_step)
            wh = prev[:, 2:] ** (1 - size_lr) * m ** size_lr
        if momentum:
            v = momentum * (c_new - (prev[:, :2] + prev[:, 2:] / 2))
        nb = torch.cat([c_new - wh / 2, wh], 1)
        prev = nb
        out.append(nb[0].numpy())
    return float(iou(np.array(out), gt[1:].numpy()).mean())

def evaluate_pick(data, **kw):
    per = {k: run_pick(d, **kw) for k, d in data.items()}
    return float(np.mean(list(per.values()))), per

def trace(d, seq, **kw):
    import io
    maps, gt, size = d["maps"], d["gt"].float(), d["size"]
    prev = gt[0:1].clone(); wh0 = gt[0:1, 2:].clone()
    for t in range(maps.shape[0]):
        r = pick(maps[t:t + 1], prev, size)
        nb = r.boxes; c_new = nb[:, :2] + nb[:, 2:] / 2
        if t == 0:
            cal = wh0 / nb[:, 2:]; wh = prev[:, 2:]
        else:
            m = nb[:, 2:] * cal
            m = torch.minimum(torch.maximum(m, prev[:, 2:] / 1.1), prev[:, 2:] * 1.1)
            wh = prev[:, 2:] ** 0.5 * m ** 0.5
        nb2 = torch.cat([c_new - wh / 2, wh], 1)
        g = gt[t + 1].numpy(); b = nb2[0].numpy()
        dis = seq.meta["distractors"][:, t + 1]
        occ = seq.meta["occluder"][t + 1] if seq.meta["occluder"] is not None else None
        print(t + 1, "raw", nb[0].numpy().round(0), "box", b.round(0), "gt", g, "iou %.2f" % iou(b[None], g[None])[0],
              "dis", [d_.tolist() for d_ in dis], "occ", None if occ is None else occ.tolist())
        prev = nb2
