"""First-frame (init) time vs per-frame (update) time of the shipped diffusion trackers, one
thread, on the first 3 test sequences x 30 frames: python init_vs_frame.py"""
import json, time, torch, numpy as np
torch.set_num_threads(1)
from fasttrack.data.synthetic import synthetic_split
from fasttrack.trackers import DINTR, DiffTracker
out = {}
for cls in (DiffTracker, DINTR):
    tr = cls.pretrained()
    inits, frames = [], []
    for s in synthetic_split("test", num=3, num_frames=30):
        _, times = tr.run(s, s.gt[0], progress=False)
        inits.append(times[0]); frames.extend(times[1:])
    out[cls.__name__] = {"init_s": round(float(np.mean(inits)), 2), "update_ms": round(1000 * float(np.mean(frames)), 1)}
    print(cls.__name__, out[cls.__name__], flush=True)
json.dump(out, open("init_vs_frame.json", "w"), indent=1)
