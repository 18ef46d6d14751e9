"""Helpers of the command-line tests (test_cli.py, test_cli_eval.py): running `fasttrack` in
process, the small synthetic data set they share, and reading eval's result files."""
from __future__ import annotations

from pathlib import Path

from fasttrack.cli import main

FRAMES = 5  # frames per synthetic sequence
NAMES = ["synthetic-4", "synthetic-5", "synthetic-6"]  # the sequences of write_synth


def run_cli(capsys, *argv):
    """main(argv) -> (status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def write_synth(root: Path) -> Path:
    """3 synthetic sequences (seeds 4, 5, 6) of FRAMES frames in GOT-10k layout, written by
    `fasttrack dataset synth`, in `root`."""
    assert main(["dataset", "synth", str(root), "--num", "3", "--frames", str(FRAMES),
                 "--seed", "4"]) == 0
    return root


def result_files(out: Path, names, tracker: str = "detrack") -> dict:
    """{name: text of the GOT-10k boxes file} of eval's results in `out`."""
    return {n: (out / tracker / n / f"{n}_001.txt").read_text() for n in names}
