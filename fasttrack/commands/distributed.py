"""`fasttrack eval --distributed`: the same evaluation spread over processes and machines with
torch.distributed (gloo), one process per rank, as torchrun starts them:

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:29500 \\
        -m fasttrack.cli eval DATA --tracker detrack --distributed

Each rank reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment (LOCAL_RANK,
when set, picks its GPU), joins the "gloo" process group, tracks the sequences i with
i % WORLD_SIZE == RANK (writing each sequence's result files as it finishes), and the
per-sequence results are gathered with ``dist.all_gather_object``; rank 0 writes them all and
prints the metrics. A sequence that fails is a result too (with its error). A rank that cannot
build its tracker still takes part in a first gather (with its error), so the others never wait
for it, and every rank then stops with that error (see fasttrack.commands.evaluate_track).
"""
from __future__ import annotations

import datetime
import os

__all__ = ["ENV_VARS", "DistributedContext", "env_config", "shard", "gather", "local_device",
           "local_world_size"]

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def env_config(environ=None) -> tuple[int, int]:
    """(rank, world_size) from the torchrun environment; ValueError naming what is missing or
    wrong."""
    env = os.environ if environ is None else environ
    missing = [k for k in ENV_VARS if not env.get(k)]
    if missing:
        raise ValueError(f"--distributed needs the environment variables {', '.join(ENV_VARS)} "
                         f"(torchrun sets them); missing: {', '.join(missing)}")
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        int(env["MASTER_PORT"])
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and MASTER_PORT must be integers, got "
                         f"RANK={env['RANK']!r} WORLD_SIZE={env['WORLD_SIZE']!r} "
                         f"MASTER_PORT={env['MASTER_PORT']!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    return rank, world


def local_device(device: str | None) -> str | None:
    """The rank's device: `device` if given, else cuda:LOCAL_RANK when GPUs are present."""
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return None


def local_world_size() -> int:
    """How many ranks share this machine (torchrun's LOCAL_WORLD_SIZE; 1 when unset): they
    share its CPUs, so each takes default_threads(local_world_size()) torch threads."""
    try:
        n = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"LOCAL_WORLD_SIZE must be an integer, got "
                         f"{os.environ['LOCAL_WORLD_SIZE']!r}") from None
    return max(1, n)


class DistributedContext:
    """Joins the gloo process group on enter (env:// rendezvous) and leaves it on exit.

    Attributes: rank, world_size. `timeout_min` bounds how long a collective waits for the
    slowest rank, so it must exceed the longest shard's tracking time.
    """

    def __init__(self, timeout_min: float = 24 * 60):
        self.rank, self.world_size = env_config()
        self.timeout = datetime.timedelta(minutes=float(timeout_min))

    def __enter__(self) -> "DistributedContext":
        import torch.distributed as dist

        if not dist.is_available():
            raise ImportError("--distributed needs a torch build with torch.distributed")
        dist.init_process_group("gloo", init_method="env://", rank=self.rank,
                                world_size=self.world_size, timeout=self.timeout)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            if exc_type is None:
                dist.barrier()  # leave together: no rank tears down while a peer still talks
            dist.destroy_process_group()


def shard(items, rank: int, world_size: int) -> list:
    """(index, item) pairs of `items` with index % world_size == rank."""
    return [(i, x) for i, x in enumerate(items) if i % world_size == rank]


def gather(local, world_size: int) -> list:
    """all_gather_object of each rank's picklable `local`; returns the list indexed by rank."""
    import torch.distributed as dist

    out = [None] * world_size
    dist.all_gather_object(out, local)
    return out
