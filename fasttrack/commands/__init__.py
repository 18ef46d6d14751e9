"""The subcommands of the `fasttrack` command line, one module each (fasttrack/cli.py only builds
the parser).

Each module here exposes ``register(subparsers)``, which adds its subcommand with
``func=run`` and ``catch_user_errors=True``: the entry point turns the errors in
:data:`USER_ERRORS` (bad paths, bad files, bad options, a missing optional package) into one line
on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["COMMAND_MODULES", "USER_ERRORS", "register_all", "run_command", "one_line"]

# subcommand modules, in the order `fasttrack --help` lists them
COMMAND_MODULES = ("bench", "info", "track", "evaluate", "demo", "dataset", "train")

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, ImportError)


def register_all(sub) -> None:
    """Add every subcommand of :data:`COMMAND_MODULES` to the argparse subparsers `sub`."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)


def one_line(exc: BaseException) -> str:
    """`exc` as one line: a user error (:data:`USER_ERRORS`) by its message; any other exception
    (a bug, or a failure inside a library) by its type, message and the file:line it was raised
    at, since no traceback comes with it."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, USER_ERRORS):
        return msg or type(exc).__name__
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {msg}{where}" if msg else f"{type(exc).__name__}{where}"


def run_command(args) -> int:
    """Call ``args.func(args)``; user errors become one stderr line and status 2."""
    if not getattr(args, "catch_user_errors", False):
        return args.func(args)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"fasttrack {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
