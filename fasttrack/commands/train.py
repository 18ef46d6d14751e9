"""`fasttrack train {detrack,dmtrack}`: train a DeTrack (fasttrack.train.detrack) or a DMTrack
(fasttrack.train.dmtrack) on synthetic sequences generated on the fly (with descriptions) and /
or real data sets (GOT-10k train, LaSOT, TNL2K, OTB-Lang: the readers `fasttrack eval` uses),
with a progress bar, the held-out "val" AO every --eval-every steps, checkpoints in --out and
--resume. The best-val weights land in OUT/detrack.pt (OUT/dmtrack.pt), ready for
`--tracker detrack --weights OUT/detrack.pt`; score them on the held-out test split with
`fasttrack eval synthetic:test --tracker detrack --weights OUT/detrack.pt`.
"""
from __future__ import annotations

import argparse

from .common import default_device, run_label, set_threads

__all__ = ["register", "run"]

_DEFAULTS: dict = {}  # the parser's defaults, filled by register()

EXAMPLES = """examples:
  fasttrack train detrack --box-head center --seed 1 --steps 3500 --threads 1 \\
      --eval-every 500 --out runs/tiny                                 # the shipped weights' recipe
  fasttrack train detrack --box-head center --seed 1 --steps 3500 --threads 1 --out runs/tiny --resume
  fasttrack train detrack --steps 3500 --threads 1 --out runs/bins     # the paper's bin decoder
  fasttrack eval synthetic:val:48x60 --tracker detrack --weights runs/tiny/detrack.pt  # compare recipes
  fasttrack train dmtrack --seed 1 --steps 3000 --threads 1 --eval-every 500 --out runs/dmtrack  # DMTrack's shipped recipe
  fasttrack train dmtrack --mask-module none --seed 0 --steps 3000 --threads 1 --out runs/dmtrack-nodiff  # ablation
  fasttrack train detrack --config detrack256 --data data/GOT-10k/train --init-vit mae_pretrain_vit_base.pth \\
      --steps 100000 --batch 32 --lr 4e-4 --device cuda --out runs/detrack256
"""


def register(sub) -> argparse.ArgumentParser:
    """Add the `train` subcommand to the subparsers `sub`."""
    p = sub.add_parser("train", help="train a tracker (DeTrack, DMTrack) on synthetic or real sequences",
                       description=__doc__.strip(), epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["detrack", "dmtrack"], metavar="MODEL",
                   help="what to train: detrack or dmtrack")
    p.add_argument("--config", default="tiny", choices=["tiny", "detrack256", "detrack384", "dmtrack256"],
                   help="model size: tiny, or the paper's (detrack256 / detrack384 for detrack, "
                        "dmtrack256 for dmtrack) (default: %(default)s)")
    p.add_argument("--box-head", default="bins", choices=["bins", "center"],
                   help="box decoder: 'bins' (the paper's, one soft-argmax per coordinate) or "
                        "'center' (fasttrack's joint centre-map head, queried by the box tokens) "
                        "(default: %(default)s)")
    p.add_argument("--data", nargs="+", default=["synthetic"], metavar="SRC",
                   help="'synthetic' and / or data set folders (GOT-10k split, LaSOT root, OTB "
                        "root, a sequence folder) (default: synthetic)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for last.pt, <model>.pt, curve.json (default: <model>-train)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="training time (evaluations not counted); with --steps, whichever ends first")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="optimizer steps")
    p.add_argument("--batch", type=int, default=32, metavar="B", help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=100, metavar="N",
                   help="linear learning-rate warm-up (default: %(default)s)")
    p.add_argument("--t-min", type=int, default=None, metavar="T",
                   help="lowest noise step drawn in training (default: infer_t - 5%% of the "
                        "schedule, for the single-pass tracker; 1 for a multi-pass one)")
    p.add_argument("--fixed-noise", type=float, default=1.0, metavar="P",
                   help="fraction of training samples noised with the tracker's own fixed noise "
                        "sample instead of fresh noise (default: %(default)s; 0 is the plain "
                        "DDPM objective, which learns several times slower)")
    p.add_argument("--center-jitter", type=float, default=1.5, metavar="J",
                   help="search-crop centre error in training, uniform +-J/2 box sizes "
                        "(default: %(default)s)")
    p.add_argument("--small-jitter", type=float, default=0.5, metavar="J",
                   help="the smaller centre error drawn with --small-jitter-prob (default: %(default)s)")
    p.add_argument("--small-jitter-prob", type=float, default=0.0, metavar="P",
                   help="fraction of training samples cropped with --small-jitter instead "
                        "(default: %(default)s)")
    p.add_argument("--close-distractors", type=float, default=0.0, metavar="P",
                   help="fraction of synthetic training sequences with a look-alike that keeps "
                        "crossing the target (default: %(default)s)")
    p.add_argument("--denoise-weight", type=float, default=1.0, metavar="W",
                   help="weight of the layerwise denoising loss (default: %(default)s)")
    d = p.add_argument_group("dmtrack only")
    d.add_argument("--mask-module", default="diffusion", choices=["diffusion", "none"],
                   help="'diffusion' (the paper's) or 'none' (the w/o-diffusion ablation) (default: %(default)s)")
    d.add_argument("--single-sample", action="store_true",
                   help="train the diffusion module single-sample (the paper's ablation) instead of double-sample")
    d.add_argument("--text-drop", type=float, default=0.1, metavar="P",
                   help="fraction of training items without their description (default: %(default)s)")
    d.add_argument("--wrong-text", type=float, default=0.2, metavar="P",
                   help="fraction of synthetic descriptions with one wrong attribute (default: %(default)s)")
    d.add_argument("--ce-start", type=float, default=0.5, metavar="F",
                   help="fraction of the run after which ground-truth candidate elimination "
                        "trims the mask targets (default: %(default)s)")
    d.add_argument("--ce-keep", type=float, default=0.7, metavar="R",
                   help="keep ratio of the candidate elimination (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=250, metavar="N",
                   help="steps between held-out evaluations and checkpoints (default: %(default)s)")
    p.add_argument("--val-sequences", type=int, default=24, metavar="N",
                   help="held-out val sequences tracked at each evaluation (default: %(default)s)")
    p.add_argument("--val-frames", type=int, default=60, metavar="N",
                   help="frames per val sequence (default: %(default)s)")
    p.add_argument("--init-vit", default=None, metavar="PATH",
                   help="initialise the ViT from an MAE / ViT-B checkpoint (detrack256/384)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, data and noise (default: 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: half the CPUs, at most 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, catch_user_errors=True)
    _DEFAULTS.update({a.dest: a.default for a in p._actions})
    return p


_DETRACK_ONLY = ("box_head", "t_min", "fixed_noise", "small_jitter", "small_jitter_prob",
                 "close_distractors", "denoise_weight", "init_vit")
_DMTRACK_ONLY = ("mask_module", "single_sample", "text_drop", "wrong_text", "ce_start", "ce_keep")


def _check_model_options(args, parser_defaults: dict) -> None:
    """Options of the other model left at their defaults, or a ValueError naming them."""
    other = _DMTRACK_ONLY if args.model == "detrack" else _DETRACK_ONLY
    given = [n for n in other if getattr(args, n) != parser_defaults[n]]
    if given:
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in given)} do not apply "
                         f"to {args.model}")
    configs = {"detrack": ("tiny", "detrack256", "detrack384"), "dmtrack": ("tiny", "dmtrack256")}
    if args.config not in configs[args.model]:
        raise ValueError(f"--config {args.config} is not a {args.model} size; choose from "
                         f"{', '.join(configs[args.model])}")


def run(args) -> int:
    """Run `fasttrack train`; returns the exit status."""
    device = default_device(args.device)
    _check_model_options(args, _DEFAULTS)
    args.out = args.out or f"{args.model}-train"
    if args.model == "dmtrack":
        from ..train.dmtrack import DMTrackTrainOptions, train_dmtrack

        opts = DMTrackTrainOptions(
            config=args.config, mask_module=args.mask_module, double_sample=not args.single_sample,
            data=tuple(args.data), out=args.out, minutes=args.minutes, steps=args.steps,
            batch_size=args.batch, lr=args.lr, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, center_jitter=args.center_jitter,
            text_drop=args.text_drop, wrong_text=args.wrong_text, ce_start=args.ce_start,
            ce_keep=args.ce_keep, seed=args.seed, eval_every=args.eval_every,
            val_sequences=args.val_sequences, val_frames=args.val_frames, device=device,
            resume=args.resume, progress=not args.no_progress)
        train = train_dmtrack
    else:
        from ..train import TrainOptions, train_detrack

        opts = TrainOptions(config=args.config, box_head=args.box_head, data=tuple(args.data), out=args.out,
                            minutes=args.minutes, steps=args.steps, batch_size=args.batch,
                            lr=args.lr, weight_decay=args.weight_decay,
                            warmup_steps=args.warmup_steps, t_min=args.t_min,
                            center_jitter=args.center_jitter, small_jitter=args.small_jitter,
                            small_jitter_prob=args.small_jitter_prob,
                            fixed_noise=args.fixed_noise, close_distractors=args.close_distractors,
                            denoise_weight=args.denoise_weight,
                            seed=args.seed,
                            eval_every=args.eval_every, val_sequences=args.val_sequences,
                            val_frames=args.val_frames,
                            init_vit=args.init_vit, device=device, resume=args.resume,
                            progress=not args.no_progress)
        train = train_detrack
    opts.check()
    threads = set_threads(args.threads)
    print(f"fasttrack train {args.model} ({args.config}), {run_label(device, threads)}", flush=True)
    result = train(opts)
    print("curve (minutes, val AO): " + ", ".join(f"{c['minutes']:.1f}: {c['val_ao']:.3f}"
                                                   for c in result["curve"]))
    return 0
