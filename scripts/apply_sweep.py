"""Turn the GPU lab's sweep.json into the proposed per-arch tile table: the best configs become the
committed per-arch defaults.

    python scripts/apply_sweep.py OUT/sweep.json [--arch 90] [--json proposal.json]

For every (kernel, dtype, variant) the sweep timed (scripts/gpu_lab.py, section sweep), the
proposal is the config that is correct at every shape measured and has the smallest summed
slowdown against each shape's fastest config (one config per variant, as the config functions
in kernels/_common.py return one per (dtype, kind, arch) and head dim). Printed as lines to paste
into the function that owns the kernel (attention_config, self_cross_config, probs_config,
cross_config), each with the default it replaces and the speedup per shape, plus JSON with --json.
Nothing is edited: a person moves the numbers, with the sweep committed under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import sys

# kernel -> (config function in kernels/_common.py, kind argument or None)
CONFIG_FUNCTIONS = {
    "_attention_fwd_kernel": ("attention_config", "fwd"),
    "_attention_bwd_preprocess_kernel": ("attention_config", "dq"),
    "_attention_bwd_dq_kernel": ("attention_config", "dq"),
    "_attention_bwd_dkdv_kernel": ("attention_config", "dkdv"),
    "_attention_bwd_kernel": ("attention_config", "bwd"),
    "_self_cross_fwd_kernel": ("self_cross_config", "fwd"),
    "_self_cross_bwd_preprocess_kernel": ("self_cross_config", "pre"),
    "_self_cross_bwd_dq_kernel": ("self_cross_config", "dq"),
    "_self_cross_bwd_dk_kernel": ("self_cross_config", "dk"),
    "_head_mean_probs_kernel": ("probs_config", None),
    "_cross_attention_fwd_kernel": ("cross_config", None),
}


def cfg_key(cfg: dict) -> tuple:
    return (cfg.get("BLOCK_M"), cfg.get("BLOCK_N"), cfg["num_warps"], cfg["num_stages"])


def propose(rows: list[dict]) -> list[dict]:
    """One proposal per (kernel, dtype, variant) from the sweep rows (see the module docstring);
    variants without a timed correct config at some shape are left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "kernel" in r and "config" in r:
            groups.setdefault((r["kernel"], r["dtype"], r["variant"]), []).append(r)
    out = []
    for (kernel, dtype, variant), rs in groups.items():
        shapes = sorted({r["shape"] for r in rs})
        fastest = {}
        for s in shapes:
            timed = [r["ms"] for r in rs if r["shape"] == s and r.get("correct") and r.get("ms")]
            if timed:
                fastest[s] = min(timed)
        if not fastest:
            continue
        by_cfg: dict[tuple, dict] = {}
        for r in rs:
            if r["shape"] in fastest and r.get("correct") and r.get("ms"):
                by_cfg.setdefault(cfg_key(r["config"]), {})[r["shape"]] = r
        complete = {k: v for k, v in by_cfg.items() if set(v) == set(fastest)}
        if not complete:
            continue
        best = min(complete, key=lambda k: sum(complete[k][s]["ms"] / fastest[s] for s in fastest))
        default = next((r["config"] for r in rs if r.get("default")), None)
        d_rows = complete.get(cfg_key(default)) if default else None
        speedup = {s: d_rows[s]["ms"] / complete[best][s]["ms"] for s in fastest} if d_rows else None
        func, kind = CONFIG_FUNCTIONS.get(kernel, ("?", None))
        out.append({"kernel": kernel, "dtype": dtype, "variant": variant, "function": func, "kind": kind,
                    "config": complete[best][next(iter(fastest))]["config"], "default": default,
                    "speedup_over_default": speedup})
    return out


def python_line(p: dict, arch: int) -> str:
    c = p["config"]
    kind = f', kind="{p["kind"]}"' if p["kind"] else ""
    sp = p["speedup_over_default"]
    was = (f"  # was Config({p['default']['BLOCK_M']}, {p['default']['BLOCK_N']}, {p['default']['num_warps']}, "
           f"{p['default']['num_stages']})") if p["default"] else ""
    gains = (", " + ", ".join(f"{s} x{v:.2f}" for s, v in sp.items())) if sp else ""
    return (f"{p['function']}(d_pad=64, dtype=torch.{p['dtype']}{kind}, arch={arch}) -> "
            f"Config({c['BLOCK_M']}, {c['BLOCK_N']}, {c['num_warps']}, {c['num_stages']})"
            f"{was}{gains}   [{p['kernel']} {p['variant']}]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/apply_sweep.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", help="sweep.json written by scripts/gpu_lab.py")
    ap.add_argument("--arch", type=int, default=90, help="compute capability the sweep ran on (default: 90)")
    ap.add_argument("--json", default=None, help="also write the proposals to this JSON file")
    args = ap.parse_args(argv)
    with open(args.sweep) as f:
        data = json.load(f)
    proposals = propose(data["rows"] if isinstance(data, dict) else data)
    if not proposals:
        print("apply_sweep.py: no timed, correct configs in the sweep (a --smoke run has no times)")
        return 1
    print(f"# proposed sm_{args.arch} tiles (head dim 64), from {args.sweep}:")
    for p in proposals:
        print(python_line(p, args.arch))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(proposals, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
