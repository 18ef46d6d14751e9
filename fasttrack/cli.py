"""The `fasttrack` command line: builds the parser; every subcommand lives in fasttrack/commands/.

    fasttrack bench [--full] [--sections A,B] [--threads N] [--out DIR]   speed + memory report
    fasttrack info                                                         backends on this machine
    fasttrack track SOURCE --box x,y,w,h --tracker NAME [--weights PATH]   boxes + annotated video
    fasttrack eval DATASET --tracker NAME [--workers N | --distributed]    toolkit results, metrics
    fasttrack demo [--tracker NAME]                                        plain vs fused, agreement
    fasttrack dataset synth OUT --num N                                    synthetic GOT-10k folder

User errors (bad paths, files, options) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import re
import sys

__all__ = ["Parser", "build_parser", "main"]

# A leading "-" followed by a digit (or ".digit") and then only number characters: "-10",
# "-.5", "-1e3", "-10,-10,30,30". No option of fasttrack looks like this.
NEGATIVE_NUMBERS = re.compile(r"^-\.?\d[\d.eE+\-, ]*$")


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser that takes negative number lists as option values.

    argparse decides whether an argument starting with "-" is an option name or a value with
    its negative-number pattern, which accepts only single numbers ("-10", "-.5"): it would read
    ``--box -10,-10,30,30`` as --box without a value followed by an unknown option. Here any
    "-" followed by a digit and number characters is a value (the pattern is an attribute of
    each parser; subparsers are built with this class too, so every subcommand gets it).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBERS


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand (fasttrack.commands.COMMAND_MODULES)."""
    from .commands import register_all

    p = Parser(prog="fasttrack", description="fused attention-map kernels and diffusion trackers")
    sub = p.add_subparsers(dest="command", required=True)
    register_all(sub)
    return p


def main(argv=None) -> int:
    from .commands import run_command

    args = build_parser().parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
