"""Where `fasttrack eval` tracks its sequences (in this process, in a pool of --workers
processes, or on the ranks of a torch.distributed job) and the result files of each sequence.

Every way runs each sequence through :func:`track_sequence`, which writes the sequence's result
files (toolkit layout, :func:`result_paths`) as soon as it is tracked, and which does not raise
for a sequence that fails (a frame that cannot be read, a tracker error): it returns the failure,
and the other sequences still run. Only building the tracker stops a run (bad --weights: no
sequence could be tracked). --resume reads finished sequences back (:func:`split_resumed`).

A result is a dict: "index" (into the data set), "name", and either "boxes" (N, 4) float32 and
"times" (N,) seconds per frame ("resumed": True when read back from the files), or "error"
(one line).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import one_line
from .common import make_tracker, run_label, set_threads, write_boxes, write_times

__all__ = ["result_paths", "split_resumed", "track_sequence", "track_items", "track_pool",
           "track_distributed", "progress_line"]


def result_paths(seq, root) -> tuple[Path, Path]:
    """(boxes file, times file) of `seq` in the tracker's results folder `root`: GOT-10k
    ``<seq>/<seq>_001.txt`` and ``<seq>/<seq>_time.txt``; OTB / LaSOT ``<seq>.txt`` and
    ``times/<seq>_time.txt``."""
    root = Path(root)
    if seq.meta.get("layout") == "got10k":
        return root / seq.name / f"{seq.name}_001.txt", root / seq.name / f"{seq.name}_time.txt"
    return root / f"{seq.name}.txt", root / "times" / f"{seq.name}_time.txt"


def _read_result(seq, root, frames: int | None):
    """(boxes, times) of `seq` from its result files, or None unless both exist and hold one
    line per frame the run tracks (a file cut short by a crash, or written with another
    --frames, means the sequence is tracked again)."""
    from ..data import read_boxes

    n = len(seq) if frames is None else min(len(seq), frames)
    box_path, time_path = result_paths(seq, root)
    try:
        boxes = read_boxes(box_path)
        times = np.array([float(t) for t in time_path.read_text().split()])
    except (OSError, ValueError):  # missing, unreadable or malformed: not finished
        return None
    if boxes.shape != (n, 4) or times.shape != (n,) or not np.isfinite(times).all():
        return None
    return boxes, times


def split_resumed(items, root, frames: int | None) -> tuple[list[dict], list]:
    """--resume: (results read back for the (index, Sequence) `items` whose result files are
    complete in `root`, the items still to track)."""
    done, todo = [], []
    for i, seq in items:
        found = _read_result(seq, root, frames)
        if found is None:
            todo.append((i, seq))
        else:
            done.append({"index": i, "name": seq.name, "boxes": found[0], "times": found[1],
                         "resumed": True})
    return done, todo


def _store(seq, root, result: dict) -> None:
    """Write a result's files, or, for a failure, remove those of an earlier run (the folder
    then holds this run's results only)."""
    box_path, time_path = result_paths(seq, root)
    if "error" in result:
        box_path.unlink(missing_ok=True)
        time_path.unlink(missing_ok=True)
        folder = box_path.parent  # GOT-10k: the sequence's own folder, which toolkits would read
        if folder != Path(root) and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    else:
        write_boxes(box_path, result["boxes"])
        write_times(time_path, result["times"])


def track_sequence(tracker, index: int, seq, opts: dict, progress: bool = False) -> dict:
    """Track one sequence from its first ground-truth box and store its result files under
    opts["root"]; a failure (reading, tracking or writing) is returned, not raised."""
    try:
        boxes, times = tracker.run(seq, seq.gt[0], progress=progress, limit=opts["frames"])
        result = {"index": index, "name": seq.name, "boxes": boxes, "times": times}
        _store(seq, opts["root"], result)
    except Exception as exc:  # noqa: BLE001 - one sequence's failure must not stop the others
        result = {"index": index, "name": seq.name, "error": one_line(exc)}
        _store(seq, opts["root"], result)
    return result


def progress_line(k: int, total: int, r: dict) -> str:
    """The line logged when the k-th of `total` sequences is done."""
    if "error" in r:
        return f"[{k}/{total}] {r['name']}: failed: {r['error']}"
    n = len(r["boxes"])
    return f"[{k}/{total}] {r['name']}: {n} frames, {n / float(np.sum(r['times'])):.1f} FPS"


def track_items(items, opts: dict, log=print, progress: bool = True, tracker=None) -> list[dict]:
    """Track (index, Sequence) `items` in this process, with `tracker` or one built from `opts`
    (only when there is something to track)."""
    if items and tracker is None:
        tracker = make_tracker(opts)
    results = []
    for k, (i, seq) in enumerate(items, 1):
        results.append(track_sequence(tracker, i, seq, opts, progress))
        log(progress_line(k, len(items), results[-1]))
    return results


_WORKER: dict = {}


def _worker_init(opts: dict) -> None:
    # A failing initializer would only show as BrokenProcessPool: keep the error and raise it
    # from the first task, so that the parent gets the real exception (and its message).
    _WORKER["opts"] = opts
    try:
        set_threads(opts["threads"])
        _WORKER["tracker"] = make_tracker(opts)
    except Exception as exc:  # noqa: BLE001
        _WORKER["error"] = exc


def _worker_track(index: int, seq) -> dict:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return track_sequence(_WORKER["tracker"], index, seq, _WORKER["opts"])


def track_pool(items, opts: dict, workers: int, log=print) -> list[dict]:
    """Spread (index, Sequence) `items` over `workers` spawned processes, one tracker each with
    opts["threads"] torch threads. A tracker that cannot be built stops the run (its error is
    raised here); a worker process that dies fails the sequences it had not finished."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    results = []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(opts,)) as pool:
        futures = {pool.submit(_worker_track, i, s): (i, s) for i, s in items}
        try:
            for k, fut in enumerate(as_completed(futures), 1):
                try:
                    r = fut.result()
                except BrokenProcessPool as exc:
                    i, s = futures[fut]
                    r = {"index": i, "name": s.name, "error": f"its worker process died ({exc})"}
                results.append(r)
                log(progress_line(k, len(items), r))
        except BaseException:
            for fut in futures:  # stop at a fatal error: skip the sequences not started
                fut.cancel()
            raise
    return results


def track_distributed(seqs, opts: dict, timeout_min: float, resume: bool):
    """This rank's share of `seqs` (index % WORLD_SIZE == RANK), tracked and gathered. Each
    rank writes its own result files as it goes; rank 0 also writes those gathered from the
    other ranks (so that they are all on its machine without a shared file system). Returns
    (every result, True) on rank 0, (this rank's own, False) elsewhere. A tracker that cannot
    be built on any rank stops every rank with a ValueError listing the ranks' errors."""
    from .distributed import DistributedContext, gather, shard

    with DistributedContext(timeout_min) as ctx:
        log = lambda m: print(f"[rank {ctx.rank}] {m}", flush=True)  # noqa: E731
        mine = shard(seqs, ctx.rank, ctx.world_size)
        done, todo = split_resumed(mine, opts["root"], opts["frames"]) if resume else ([], mine)
        if done:
            log(f"--resume: {len(done)} of its {len(mine)} sequences already in {opts['root']}")
        log(f"eval: {opts['tracker']} on {len(todo)} of the {len(seqs)} sequences, "
            f"{run_label(opts['device'], opts['threads'])}")
        tracker, error = None, None
        if todo:
            try:
                tracker = make_tracker(opts)
            except Exception as exc:  # noqa: BLE001 - every rank must reach the gather
                error = f"rank {ctx.rank}: {one_line(exc)}"
        errors = [e for e in gather(error, ctx.world_size) if e]
        if not errors:
            local = done + track_items(todo, opts, log=log, progress=False, tracker=tracker)
            everything = gather(local, ctx.world_size)
    if errors:
        raise ValueError("; ".join(errors))
    if ctx.rank != 0:
        return local, False
    for results in everything[1:]:
        for r in results:
            _store(seqs[r["index"]], opts["root"], r)
    return [r for results in everything for r in results], True
