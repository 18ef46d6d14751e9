"""`fasttrack info`: the build, the device, which backends can run attention and self_cross here
(with each refusal's reason) and what backend="auto" takes for each."""
from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def run(args) -> int:
    import torch

    from .. import CUDA_EXT_ERROR, HAS_CUDA_EXT
    from ..bench.facts import device_facts
    for k, v in device_facts().items():
        print(f"{k:16s} {v}")
    print(f"{'cuda extension':16s} {'yes' if HAS_CUDA_EXT else 'no: ' + str(CUDA_EXT_ERROR)}")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    q = torch.randn(1, 1, 8, 16, device=dev)
    from ..ops import available
    from ..ops.dispatch import select
    per_op = {"attention": available("attention", q, q, q),
              "self_cross": available("self_cross", q, q, torch.rand(1, 8, 4, device=dev))}
    for name in per_op["attention"]:
        said = [f"{op}: " + ("ok" if not why[name] else "; ".join(why[name])) for op, why in per_op.items()]
        print(f"backend {name:8s} " + " | ".join(said))
    for op, args in (("attention", (q, q, q)), ("self_cross", (q, q, torch.rand(1, 8, 4, device=dev)))):
        print(f"{'auto ' + op:16s} {select(op, 'auto', *args)}")
    return 0


def register(sub) -> argparse.ArgumentParser:
    """Add the `info` subcommand to the subparsers `sub`."""
    i = sub.add_parser("info", help="show the build, the device and which backends can run")
    i.set_defaults(func=run)
    return i
