"""The `fasttrack` command line: builds the parser; every subcommand lives in fasttrack/commands/.

    fasttrack bench [--quick] [--sections A,B] [--threads N] [--out DIR]   speed + memory report
    fasttrack info                                                         backends on this machine
    fasttrack track SOURCE --box x,y,w,h --tracker NAME [--weights PATH]   boxes + annotated video
    fasttrack eval DATASET --tracker NAME [--workers N | --distributed]    toolkit results, metrics
    fasttrack demo [--tracker NAME]                                        plain vs fused, agreement
    fasttrack dataset synth OUT --num N                                    synthetic GOT-10k folder

User errors (bad paths, files, options) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand (fasttrack.commands.COMMAND_MODULES)."""
    from .commands import register_all

    p = argparse.ArgumentParser(prog="fasttrack", description="fused attention-map kernels and diffusion trackers")
    sub = p.add_subparsers(dest="command", required=True)
    register_all(sub)
    return p


def main(argv=None) -> int:
    from .commands import run_command

    args = build_parser().parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
