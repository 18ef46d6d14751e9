"""Cache Diff-Tracker's per-frame maps on a split (the maps do not depend on the boxes with
use_updater=False). Usage: [SD=<tiny-sd folder>] python cache_maps.py val 20 40 out.pt ["dict(...)"]
(the optional dict overrides tracker settings). `cache_maps` is also the caching loop of the
2026-12-06c folder's variants."""
import os
import sys
import time

import torch

from fasttrack.data.synthetic import synthetic_split


def cache_maps(tr, split: str, num: int, frames: int, out: str) -> None:
    """tr: a DiffTracker; saves {name: {maps (T-1, R, R), gt (T, 4), size (H, W)}} to out."""
    rec = []
    orig = tr._boxes_from_maps

    def hook(maps):
        rec[-1].append(maps[0].clone())
        return orig(maps)

    tr._boxes_from_maps = hook
    data, t0 = {}, time.time()
    for s in synthetic_split(split, num=num, num_frames=frames):
        rec.append([])
        tr.run(s, s.gt[0], progress=False)
        data[s.name] = dict(maps=torch.stack(rec[-1]), gt=torch.as_tensor(s.gt), size=s.frames[0].shape[:2])
        print(s.name, round(time.time() - t0), float(data[s.name]["maps"].amax()), flush=True)
    torch.save(data, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    from fasttrack.trackers.diff_tracker import DiffTracker
    from fasttrack.trackers.diffusion.tiny_sd import TRACKER_SETTINGS
    split, num, frames, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}
    P = os.environ.get("SD")
    tr = (DiffTracker.from_pretrained(P, **{**TRACKER_SETTINGS["DiffTracker"], **extra}) if P
          else DiffTracker.pretrained(**extra))
    cache_maps(tr, split, num, frames, out)
