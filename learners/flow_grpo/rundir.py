"""The output directory a Flow-GRPO run owns: claimed at start, rolled back on resume.

A run writes ``config.json``, ``checkpoints/`` (:mod:`learners.checkpoint`), ``tb/`` (TensorBoard
events), ``trajectories.jsonl`` (rank r > 0: ``trajectories-rank{r}.jsonl``), ``final_model/`` and
``ranks.json``. :func:`claim_run_dir` refuses a directory holding another run unless the run is
resumed or overwritten (``--overwrite`` removes those files, and only those). On ``--resume`` the
records written after the checkpoint the run continues from are rolled back
(:func:`rollback_trajectories`, :func:`rollback_events`): the steps after it are played again, so
each step appears exactly once in every file, as in an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from agentflow_env.runfiles import (
    OutputPathError,
    WriteMode,
    atomic_write_text,
    check_writable,
    fsync_dir,
)
from agentflow_env.trajectory import EpisodeRecord, recover_jsonl, write_jsonl

__all__ = [
    "RUN_FILES",
    "append_trajectories",
    "claim_run_dir",
    "holds_run",
    "rollback_events",
    "rollback_trajectories",
    "trajectory_file",
    "write_final",
]

logger = logging.getLogger(__name__)

RUN_FILES = ("config.json", "checkpoints", "tb", "trajectories.jsonl", "final_model", "ranks.json")
"""what a run writes (besides ``trajectories-rank{r}.jsonl``)"""


def _run_files(out: Path) -> list[Path]:
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    return found + sorted(out.glob("trajectories-rank*.jsonl"))


def holds_run(out: str | Path) -> bool:
    """Whether ``out`` holds (part of) a training run's files."""
    out = Path(out)
    return out.is_dir() and bool(_run_files(out))


def claim_run_dir(out: str | Path, mode: WriteMode) -> None:
    """Check that this run may write ``out``; with ``overwrite`` remove the run it holds.

    Raises:
        OutputPathError: ``out`` cannot be written, or holds a run and ``mode`` is ``new``.
    """
    out = Path(out)
    check_writable(out, "--output-dir", directory=True)
    if not holds_run(out):
        return
    if mode == "new":
        raise OutputPathError(
            f"--output-dir {str(out)!r} holds a run: pass --resume to continue it or "
            "--overwrite to replace it"
        )
    if mode == "overwrite":
        for path in _run_files(out):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        fsync_dir(out)


def trajectory_file(out: Path, rank: int) -> Path:
    """This rank's trajectory file (EpisodeRecord JSONL; ``python -m agentflow_env.view``)."""
    return out / ("trajectories.jsonl" if rank == 0 else f"trajectories-rank{rank}.jsonl")


def append_trajectories(path: Path, records: list[EpisodeRecord]) -> None:
    """Append whole lines and flush them: a kill can tear only the last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        write_jsonl(records, fh)
        fh.flush()
        os.fsync(fh.fileno())


def rollback_trajectories(path: Path, step: int) -> int:
    """Keep the records of steps ``<= step`` (and drop a torn last line); returns how many
    records were dropped. The file is replaced atomically."""
    if not path.is_file():
        return 0
    records, torn = recover_jsonl(path)
    kept = [r for r in records if int(r.metadata.get("step", 0)) <= step]
    dropped = len(records) - len(kept)
    if dropped or torn:
        atomic_write_text(path, "".join(r.model_dump_json() + "\n" for r in kept))
        logger.info("rolled %s back to step %d (%d record(s) dropped)", path, step, dropped)
    return dropped


def rollback_events(tb_dir: Path, step: int) -> int:
    """Rewrite TensorBoard event files without the events of steps ``> step``; returns how many
    events were dropped. A torn last record (a kill while writing) is dropped too."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in sorted(tb_dir.glob("events.out.tfevents.*")) if tb_dir.is_dir() else []:
        raw = list(RawEventFileLoader(str(path)).Load())
        keep = [r for r in raw if Event.FromString(r).step <= step]
        if len(keep) == len(raw) and _whole(path, raw):
            continue
        dropped += len(raw) - len(keep)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            writer = RecordWriter(fh)
            for record in keep:
                writer.write(record)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    if dropped:
        logger.info("rolled %s back to step %d (%d event(s) dropped)", tb_dir, step, dropped)
    return dropped


def _whole(path: Path, records: list[bytes]) -> bool:
    """Whether the file holds exactly these records (no torn tail): 16 framing bytes each."""
    return path.stat().st_size == sum(len(r) + 16 for r in records)


def write_final(
    out: Path,
    policy: Any,
    state_dict: dict[str, Any] | None,
    world_size: int,
    step: int,
    fingerprints: list[list[float]],
) -> None:
    """Rank 0 at the end of a run: ``final_model/`` (``policy.save``; written under a temporary
    name and renamed, never half-written) and ``ranks.json`` (whether every rank ended with the
    same parameters; differing ones are logged as an error)."""
    final, tmp = out / "final_model", out / ".final_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(tmp, state_dict=state_dict)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    same = all(p == fingerprints[0] for p in fingerprints)
    ranks = {"world_size": world_size, "step": step, "identical": same}
    atomic_write_text(out / "ranks.json", json.dumps({**ranks, "fingerprints": fingerprints}))
    if not same:
        logger.error("parameters differ across ranks: %s", fingerprints)
