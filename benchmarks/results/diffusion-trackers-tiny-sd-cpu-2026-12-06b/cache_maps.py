"""Cache Diff-Tracker's per-frame maps on a split (the maps do not depend on the boxes with
use_updater=False). Usage: [SD=<tiny-sd folder>] python cache_maps.py val 20 40 out.pt"""
import sys, time, torch, numpy as np
torch.set_num_threads(1)
from fasttrack.trackers.diff_tracker import DiffTracker
from fasttrack.data.synthetic import synthetic_split
split, num, frames, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}
import os
from fasttrack.trackers.diffusion.tiny_sd import TRACKER_SETTINGS
P = os.environ.get("SD")
tr = DiffTracker.from_pretrained(P, **{**TRACKER_SETTINGS["DiffTracker"], **extra}) if P else DiffTracker.pretrained(**extra)
rec = []
orig = tr._boxes_from_maps
def hook(maps):
    rec[-1].append(maps[0].clone())
    return orig(maps)
tr._boxes_from_maps = hook
data = {}
t0 = time.time()
for s in synthetic_split(split, num=num, num_frames=frames):
    rec.append([])
    tr.run(s, s.gt[0], progress=False)
    data[s.name] = dict(maps=torch.stack(rec[-1]), gt=torch.as_tensor(s.gt), size=s.frames[0].shape[:2])
    print(s.name, time.time() - t0, flush=True)
torch.save(data, out)
