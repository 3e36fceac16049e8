"""Atomic training checkpoints: model, optimizer, random state, step, extra state.

A checkpoint is a directory ``ckpt-<step>`` written under a temporary name, every file fsynced,
and renamed when complete; ``latest.json`` (replaced atomically, last) names the newest one. A
run killed at any moment leaves either the previous or the new checkpoint, never a half-written
one, and a save that fails (an exception, a full disk) removes its partial files and leaves
``latest.json`` pointing at the previous, complete checkpoint.

The files are the same whatever wrote them: ``model.pt`` is the model's full state dict and
``optimizer.pt`` the optimizer's, in torch's own layout (state keyed by parameter index). Under
FSDP, :func:`full_state` gathers both onto rank 0 first and :func:`load_checkpoint` broadcasts
them from rank 0 back into the shards, so single-process, DDP and FSDP runs resume each other's
checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from agentflow_env.runfiles import atomic_write_text, fsync_dir

__all__ = [
    "CheckpointError",
    "full_state",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

LATEST = "latest.json"


class CheckpointError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is intact."""


def _save_synced(obj: Any, path: Path) -> None:
    """``torch.save`` whose bytes are on disk before the checkpoint is renamed into place."""
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of every optimizer parameter, in the optimizer's (= its state dict's index)
    order."""
    names = {id(p): n for n, p in model.named_parameters()}
    try:
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    except KeyError as exc:
        raise ValueError("the optimizer holds a parameter that is not one of the model's") from exc


def _by_index(named: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """A name-keyed optimizer state dict (torch.distributed's layout) -> torch.optim's index
    layout."""
    index = {n: i for i, n in enumerate(names)}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]]
    return {"state": {index[n]: v for n, v in named["state"].items()}, "param_groups": groups}


def _by_name(indexed: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """torch.optim's index layout -> the name-keyed layout torch.distributed's helpers load."""
    if sum(len(g["params"]) for g in indexed["param_groups"]) != len(names):
        raise ValueError(
            "the checkpoint's optimizer has "
            f"{sum(len(g['params']) for g in indexed['param_groups'])} "
            f"parameters but this optimizer has {len(names)}"
        )
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in indexed["param_groups"]]
    return {
        "state": {names[int(i)]: v for i, v in indexed["state"].items()},
        "param_groups": groups,
    }


def full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *, sharded: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full model and optimizer state dicts in the plain (single-process) layout.

    ``sharded`` (FSDP): a collective every rank must call; rank 0 gets the full dicts on the
    CPU, the other ranks get empty dicts. Otherwise the module's and optimizer's own dicts.
    Without an optimizer its dict is empty.
    """
    if not sharded:
        return model.state_dict(), optimizer.state_dict() if optimizer is not None else {}
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    if optimizer is None:
        return dict(model_state), {}
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    if dist.get_rank() != 0:
        return {}, {}
    return dict(model_state), _by_index(optim_state, _param_names(model, optimizer))


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    model: torch.nn.Module | Mapping[str, Any],
    optimizer: torch.optim.Optimizer | Mapping[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``root/ckpt-<step>`` atomically, point ``latest.json`` at it, keep the newest ``keep``.

    ``model`` and ``optimizer`` are the objects or their full state dicts (see :func:`full_state`).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:07d}"
    tmp = root / f".ckpt-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a save that was killed
    tmp.mkdir()
    try:
        # torch.save keeps tied weights' shared storage.
        _save_synced(model if isinstance(model, Mapping) else model.state_dict(), tmp / "model.pt")
        _save_synced(
            optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict(),
            tmp / "optimizer.pt",
        )
        atomic_write_text(tmp / "state.json", json.dumps({"step": step, **state}))
        fsync_dir(tmp)
    except BaseException as exc:  # a full disk or a bad state: the previous one stays latest
        shutil.rmtree(tmp, ignore_errors=True)
        cause = _os_error(exc)
        if cause is not None:
            previous = latest_checkpoint(root)
            raise CheckpointError(
                cause.errno,
                f"saving checkpoint {final.name} failed ({cause.strerror or cause}); the last "
                f"complete checkpoint is {previous.name if previous else 'none'}",
            ) from exc
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / LATEST, json.dumps({"step": step, "path": final.name}))
    olds = sorted(p for p in root.glob("ckpt-*") if p.is_dir() and p != final)
    for old in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``, if any (torch.save reports a full disk as a RuntimeError
    raised while handling the OSError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def latest_checkpoint(root: str | Path) -> Path | None:
    """The directory ``latest.json`` names, or None when there is no complete checkpoint.

    Should the named directory be gone (a kill while the same step was being saved again), the
    newest complete ``ckpt-*`` directory is used.
    """
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / json.loads(pointer.read_text())["path"]
    if (path / "state.json").is_file():
        return path
    complete = sorted(p for p in root.glob("ckpt-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    sharded: bool = False,
) -> dict[str, Any]:
    """Restore model (and optimizer) in place; return the saved state (with ``step``).

    ``sharded`` (FSDP): a collective every rank must call; rank 0 reads the files and the full
    tensors are broadcast into every rank's shards.
    """
    path = Path(path)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no state.json)")
    if sharded:
        _load_sharded(path, model, optimizer)
    else:
        model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
        if optimizer is not None:
            optimizer.load_state_dict(
                torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
            )
    return json.loads((path / "state.json").read_text())


def _load_sharded(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> None:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    main = dist.get_rank() == 0
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    model_state = (
        torch.load(path / "model.pt", map_location="cpu", weights_only=True) if main else {}
    )
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None:
        optim_state: dict[str, Any] = {}
        if main:
            indexed = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
            optim_state = _by_name(indexed, _param_names(model, optimizer))
        set_optimizer_state_dict(model, optimizer, optim_state, options=options)
