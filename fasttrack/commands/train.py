"""`fasttrack train {detrack,dmtrack,tiny-sd,diff-tracker-updater}`.

detrack / dmtrack: train a DeTrack (fasttrack.train.detrack) or a DMTrack
(fasttrack.train.dmtrack) on synthetic sequences generated on the fly (with descriptions) and /
or real data sets (GOT-10k train, LaSOT, TNL2K, OTB-Lang: the readers `fasttrack eval` uses),
with a progress bar, the held-out "val" AO every --eval-every steps, checkpoints in --out and
--resume. The best-val weights land in OUT/detrack.pt (OUT/dmtrack.pt), ready for
`--tracker detrack --weights OUT/detrack.pt`; score them on the held-out test split with
`fasttrack eval synthetic:test --tracker detrack --weights OUT/detrack.pt`.

tiny-sd: the small text-conditioned latent diffusion model the diffusion trackers ship with
(fasttrack.train.tiny_sd; a diffusers-layout folder in --out, within --minutes).
diff-tracker-updater: Diff-Tracker's online prompt updater on a frozen diffusion model
(fasttrack.train.diff_tracker; --data labeled, --unlabeled pseudo-labeled by motion).
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
  fasttrack train tiny-sd --minutes 27 --threads 1 --out runs/tiny-sd       # the shipped tiny-sd's recipe
  fasttrack train diff-tracker-updater --sd runs/tiny-sd --unlabeled synthetic --minutes 8 \
      --threads 1 --out runs/updater                                   # its updater (labeled + pseudo-labeled)
  fasttrack train detrack --config detrack256 --data data/GOT-10k/train --init-vit mae_pretrain_vit_base.pth \\
      --steps 100000 --batch 32 --lr 4e-4 --device cuda --out runs/detrack256
"""


def register(sub) -> argparse.ArgumentParser:
    """Add the `train` subcommand to the subparsers `sub`."""
    p = sub.add_parser("train", help="train a tracker (DeTrack, DMTrack), the tiny diffusion model "
                       "or Diff-Tracker's updater",
                       description=__doc__.strip(), epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=list(_MODELS), metavar="MODEL",
                   help="what to train: " + ", ".join(_MODELS))
    p.add_argument("--config", default="tiny", choices=["tiny", "detrack256", "detrack384", "dmtrack256"],
                   help="model size: tiny, or the paper's (detrack256 / detrack384 for detrack, "
                        "dmtrack256 for dmtrack) (default: %(default)s)")
    p.add_argument("--box-head", default="bins", choices=["bins", "center"],
                   help="box decoder: 'bins' (the paper's, one soft-argmax per coordinate) or "
                        "'center' (fasttrack's joint centre-map head, queried by the box tokens) "
                        "(default: %(default)s)")
    p.add_argument("--data", nargs="+", default=["synthetic"], metavar="SRC",
                   help="'synthetic', 'photos' (real photographs: `fasttrack dataset photos` "
                        "first) and / or data set folders (GOT-10k split, LaSOT root, OTB "
                        "root, a sequence folder) (default: synthetic; diff-tracker-updater: "
                        "'none' trains on --unlabeled pseudo-labels alone)")
    p.add_argument("--augment", type=float, default=0.0, metavar="P",
                   help="detrack / dmtrack: probability that a training item gets colour "
                        "jitter, greyscale (a fifth of those) and blur (default: 0)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for last.pt, <model>.pt, curve.json (default: <model>-train)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="training time (evaluations not counted); with --steps, whichever ends first")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="optimizer steps")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="batch size (default: 32; tiny-sd 16)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 3e-3; tiny-sd 1e-3; diff-tracker-updater 5e-4)")
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
    u = p.add_argument_group("diff-tracker-updater only")
    u.add_argument("--sd", default=None, metavar="DIR",
                   help="the frozen diffusion model, a local diffusers SD folder (default: the "
                        "shipped tiny-sd)")
    u.add_argument("--unlabeled", nargs="+", default=[], metavar="SRC",
                   help="unlabeled video to pseudo-label by motion: 'synthetic' (train-split "
                        "sequences, boxes dropped), video files or frame folders")
    u.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="passes over the sequences (default: until --minutes)")
    u.add_argument("--sequences", type=int, default=24, metavar="N",
                   help="sequences per source (default: %(default)s)")
    u.add_argument("--frames", type=int, default=20, metavar="N",
                   help="frames per sequence (default: %(default)s)")
    u.add_argument("--prompt-steps", type=int, default=None, metavar="N",
                   help="first-frame prompt-learning steps per sequence, in training and val "
                        "(default: the tracker settings of the --sd folder)")
    p.add_argument("--eval-every", type=int, default=250, metavar="N",
                   help="steps between held-out evaluations and checkpoints (default: %(default)s)")
    p.add_argument("--val-sequences", type=int, default=None, metavar="N",
                   help="held-out val sequences tracked at each evaluation (default: 24; "
                        "diff-tracker-updater 6)")
    p.add_argument("--val-frames", type=int, default=None, metavar="N",
                   help="frames per val sequence (default: 60; diff-tracker-updater 30)")
    p.add_argument("--init-vit", default=None, metavar="PATH",
                   help="initialise the ViT (patch and position embeddings, blocks) from an MAE / "
                        "timm ViT-B or an OSTrack checkpoint, layout detected from its keys "
                        "(detrack256/384, dmtrack256; fasttrack.train.vit_init)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, data and noise (default: 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: half the CPUs, at most 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, catch_user_errors=True)
    _DEFAULTS.update({a.dest: a.default for a in p._actions})
    return p


_MODELS = ("detrack", "dmtrack", "tiny-sd", "diff-tracker-updater")
_UPDATER_ONLY = ("sd", "unlabeled", "epochs", "sequences", "frames", "prompt_steps")
_DETRACK_ONLY = ("box_head", "t_min", "fixed_noise", "small_jitter", "small_jitter_prob",
                 "close_distractors", "denoise_weight")
_DMTRACK_ONLY = ("mask_module", "single_sample", "text_drop", "wrong_text", "ce_start", "ce_keep")
_TRACKERS_ONLY = ("init_vit",)  # detrack and dmtrack


def _check_model_options(args, parser_defaults: dict) -> None:
    """Options of the other model left at their defaults, or a ValueError naming them."""
    loop = ("config", "weight_decay", "warmup_steps", "center_jitter", "augment", "eval_every",
            "val_sequences", "val_frames", "resume", "steps")
    other = {"detrack": _DMTRACK_ONLY + _UPDATER_ONLY, "dmtrack": _DETRACK_ONLY + _UPDATER_ONLY,
             "tiny-sd": _DETRACK_ONLY + _DMTRACK_ONLY + _TRACKERS_ONLY + _UPDATER_ONLY + loop,
             "diff-tracker-updater": _DETRACK_ONLY + _DMTRACK_ONLY + _TRACKERS_ONLY + ("batch",)
             + tuple(n for n in loop if not n.startswith("val_"))}[args.model]
    given = [n for n in other if getattr(args, n) != parser_defaults[n]]
    if given:
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in given)} do not apply "
                         f"to {args.model}")
    configs = {"detrack": ("tiny", "detrack256", "detrack384"), "dmtrack": ("tiny", "dmtrack256")}
    if args.model in configs and args.config not in configs[args.model]:
        raise ValueError(f"--config {args.config} is not a {args.model} size; choose from "
                         f"{', '.join(configs[args.model])}")


# Per-model defaults of the options left unset (None) on the command line.
_MODEL_DEFAULTS = {
    "detrack": dict(batch=32, lr=3e-3, val_sequences=24, val_frames=60),
    "dmtrack": dict(batch=32, lr=3e-3, val_sequences=24, val_frames=60),
    "tiny-sd": dict(batch=16, lr=1e-3),
    "diff-tracker-updater": dict(lr=5e-4, val_sequences=6, val_frames=30),
}


def run(args) -> int:
    """Run `fasttrack train`; returns the exit status."""
    device = default_device(args.device)
    _check_model_options(args, _DEFAULTS)
    for name, value in _MODEL_DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.out = args.out or f"{args.model}-train"
    if args.model in ("tiny-sd", "diff-tracker-updater"):
        return _run_diffusion(args, device)
    if args.model == "dmtrack":
        from ..train.dmtrack import DMTrackTrainOptions, train_dmtrack

        opts = DMTrackTrainOptions(
            config=args.config, mask_module=args.mask_module, double_sample=not args.single_sample,
            data=tuple(args.data), out=args.out, minutes=args.minutes, steps=args.steps,
            batch_size=args.batch, lr=args.lr, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, center_jitter=args.center_jitter,
            augment=args.augment, text_drop=args.text_drop, wrong_text=args.wrong_text, ce_start=args.ce_start,
            ce_keep=args.ce_keep, init_vit=args.init_vit, seed=args.seed, eval_every=args.eval_every,
            val_sequences=args.val_sequences, val_frames=args.val_frames, device=device,
            resume=args.resume, progress=not args.no_progress)
        train = train_dmtrack
    else:
        from ..train import TrainOptions, train_detrack

        opts = TrainOptions(config=args.config, box_head=args.box_head, data=tuple(args.data), out=args.out,
                            minutes=args.minutes, steps=args.steps, batch_size=args.batch,
                            lr=args.lr, weight_decay=args.weight_decay,
                            warmup_steps=args.warmup_steps, t_min=args.t_min,
                            center_jitter=args.center_jitter, augment=args.augment,
                            small_jitter=args.small_jitter,
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


def _run_diffusion(args, device: str) -> int:
    """`fasttrack train tiny-sd` and `fasttrack train diff-tracker-updater`."""
    if args.model == "tiny-sd":
        from ..train.tiny_sd import TinySDOptions, train_tiny_sd

        opts = TinySDOptions(out=args.out, minutes=27.0 if args.minutes is None else args.minutes,
                             data=tuple(args.data),
                             batch_size=args.batch, lr=args.lr, seed=args.seed,
                             device=device, progress=not args.no_progress)
        opts.check()
        threads = set_threads(args.threads)
        print(f"fasttrack train tiny-sd, {run_label(device, threads)}, {opts.minutes:g} min", flush=True)
        log = train_tiny_sd(opts)
        print(f"tiny-sd: VAE {log['vae']['steps']} steps (L1 {log['vae']['val_l1']:.3f}), UNet "
              f"{log['unet']['steps']} steps (loss {log['unet']['loss_last200']:.4f}), "
              f"{log['minutes']:.1f} min -> {args.out}")
        return 0
    from ..train.diff_tracker import UpdaterTrainOptions, train_updater

    opts = UpdaterTrainOptions(sd=args.sd, data=tuple(args.data) if args.data != ["none"] else (),
                               unlabeled=tuple(args.unlabeled), sequences=args.sequences,
                               frames=args.frames, epochs=args.epochs,
                               minutes=10.0 if args.minutes is None and args.epochs is None else args.minutes,
                               lr=args.lr, out=args.out, val_sequences=args.val_sequences,
                               val_frames=args.val_frames,
                               seed=args.seed, device=device, progress=not args.no_progress,
                               settings={} if args.prompt_steps is None else {"prompt_steps": args.prompt_steps})
    opts.check()
    threads = set_threads(args.threads)
    print(f"fasttrack train diff-tracker-updater, {run_label(device, threads)}", flush=True)
    log = train_updater(opts)
    print(f"updater: best val AO {log['best_val_ao']:.3f} (without updater "
          f"{log['val_ao_without_updater']:.3f}), {log['minutes']:.1f} min -> {args.out}")
    return 0
