"""DMTrack's ablation (the paper's table 2 on OTB-Lang: with / without the diffusion module,
one / five samplings at test time, double / single-sample training), in miniature on fasttrack's
synthetic splits:

    fasttrack train dmtrack --seed 0 --steps 3000 --threads 1 --out runs/dm            # diffusion
    fasttrack train dmtrack --mask-module none --seed 0 --steps 3000 --threads 1 --out runs/dm-none
    fasttrack train dmtrack --single-sample --seed 0 --steps 3000 --threads 1 --out runs/dm-single
    python scripts/dmtrack_ablation.py runs/dm/dmtrack.pt runs/dm-none/dmtrack.pt runs/dm-single/dmtrack.pt \\
        --out benchmarks/results/dmtrack-tiny-ablation-cpu

Each checkpoint is tracked closed loop on the held-out test split (12 x 60) and on 48 val
sequences of 60 frames, with K = 1 and K = 5 samplings when it has the diffusion module, with
the sequences' descriptions (20 % of them wrong on purpose) and, for K = 1, without any (vision
only). Also measured: how far the K = 5 samplings of a frame's mask spread (mean over cells and
frames of their standard deviation), and ms per frame (one thread). Writes ablation.json and
ablation.md (the README's table) into --out.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fasttrack.data.synthetic import synthetic_split
from fasttrack.trackers import DMTrack
from fasttrack.train import heldout_ao


def _no_text(seqs):
    class Blind:  # the same frames and boxes, no description
        def __init__(self, s):
            self.s, self.name, self.gt, self.text = s, s.name, s.gt, None

        def __len__(self):
            return len(self.s)

        def __iter__(self):
            return iter(self.s)

        def __getitem__(self, i):
            return self.s[i]
    return [Blind(s) for s in seqs]


def _mask_spread(path, seqs, k: int = 5) -> float:
    """Mean over cells and frames (first 20 of 4 test sequences) of the standard deviation of the
    K samplings of a frame's mask, at the boxes the K = 1 tracker follows."""
    from fasttrack.trackers.detrack.crop import crop_and_resize, frame_to_tensor

    tr = DMTrack.from_checkpoint(path, samples=1).eval()
    net, cfg, spreads = tr.net, tr.config, []
    for seq in seqs[:4]:
        tr.init(seq[0], seq.gt[0], text=seq.text)
        for f in list(seq)[1:20]:
            st = tr._st
            with torch.no_grad():
                x, *_ = crop_and_resize(frame_to_tensor(torch.as_tensor(f)), st["box"],
                                        cfg.search_factor, cfg.search_size)
                _, hx, _ = net.features(st["z"], net.embed_search(x))
                masks = net.mask.sample(net.cross(hx, st["text"], st["has_text"]), k,
                                        cfg.mask_steps, mean=False)
            spreads.append(float(masks.std(1).mean()))
            tr.update(f)
    return float(np.mean(spreads))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="dmtrack.pt files of `fasttrack train dmtrack` runs")
    p.add_argument("--out", required=True, help="folder for ablation.json and ablation.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    splits = {"test": synthetic_split("test"), "val48": synthetic_split("val", num=48, num_frames=60)}
    rows = []
    for path in args.checkpoints:
        meta = torch.load(path, weights_only=True).get("meta", {})
        recipe = meta.get("recipe", {})
        cfg = DMTrack.from_checkpoint(path).config
        label = ("w/o diffusion" if cfg.mask_module == "none" else
                 "diffusion, " + ("double" if recipe.get("double_sample", True) else "single") + "-sample")
        for k in ((1, 5) if cfg.mask_module == "diffusion" else (1,)):
            for text in (True, False) if k == 1 else (True,):
                tr = DMTrack.from_checkpoint(path, samples=k).eval()
                row = {"checkpoint": str(path), "model": label, "seed": recipe.get("seed"),
                       "K": k if cfg.mask_module == "diffusion" else None, "text": text}
                for name, seqs in splits.items():
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res = heldout_ao(tr, seqs if text else _no_text(seqs))
                    row[f"{name}_ao"] = round(res["ao"], 4)
                    if name == "test":
                        row["ms_per_frame"] = round(1000 * (time.perf_counter() - start)
                                                    / sum(len(s) for s in seqs), 2)
                        row["test_per_sequence"] = {s: round(v, 3) for s, v in res["per_sequence"].items()}
                print(json.dumps({k2: v for k2, v in row.items() if k2 != "test_per_sequence"}), flush=True)
                rows.append(row)
        if cfg.mask_module == "diffusion":
            spread = _mask_spread(path, splits["test"])
            for r in rows:
                if r["checkpoint"] == str(path):
                    r["mask_spread_k5"] = round(spread, 5)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(rows, indent=1))
    lines = ["| model | seed | K | text | test AO | val-48 AO | ms/frame |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seed']} | {r['K'] or '-'} | {'yes' if r['text'] else 'none'} | "
                     f"{r['test_ao']:.3f} | {r['val48_ao']:.3f} | {r['ms_per_frame']} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
