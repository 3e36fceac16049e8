"""Trajectory records: the JSONL format shared by evaluation, training and the viewer.

One line per episode (:class:`EpisodeRecord`), each with its planner turns (:class:`TurnRecord`).
:class:`TrajectoryBuilder` turns ``reset``/``step`` results into records, so every producer writes
the same fields; :func:`info_at` reads one sub-env's info out of a vector env's batched info.
What differs between producers goes in ``metadata``: evaluation and ``RecordTrajectory`` store
``episode_index``; the Flow-GRPO trainer stores ``step``, ``rank``, ``group``, ``index`` and
``sampling`` (the viewer filters on ``step`` and ``group``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from pydantic import BaseModel, Field

__all__ = [
    "TurnRecord",
    "EpisodeRecord",
    "TrajectoryBuilder",
    "info_at",
    "write_jsonl",
    "read_jsonl",
]


class TurnRecord(BaseModel):
    turn: int
    action: str
    """the planner's text as written"""
    sub_goal: str = ""
    justification: str = ""
    context: str = ""
    tool_name: str | None = None
    tool_input: str | None = None
    tool_result: str = ""
    error: str | None = None
    error_kind: str | None = None
    """``parse``, ``executor`` (the tool did not run) or ``tool``"""
    verifier: str | None = None
    reward: float = 0.0


class EpisodeRecord(BaseModel):
    episode_id: str
    task_id: str
    question: str
    ground_truth: str
    answer: str | None = None
    score: float | None = None
    score_error: str | None = None
    terminated: bool = False
    truncated: bool = False
    turns: list[TurnRecord] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def total_reward(self) -> float:
        """The episode's return: the sum of its turns' rewards."""
        return sum((t.reward for t in self.turns), 0.0)


class TrajectoryBuilder:
    """Accumulates one episode from the env's outputs."""

    def __init__(self, episode_id: str, task: Any, **metadata: Any) -> None:
        self.record = EpisodeRecord(
            episode_id=episode_id,
            task_id=str(task.id),
            question=task.question,
            ground_truth=task.answer,
            metadata=dict(metadata),
        )

    def add(
        self, action: str, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]
    ) -> None:
        parsed = info.get("action") or {}
        self.record.turns.append(
            TurnRecord(
                turn=int(info.get("turn", len(self.record.turns) + 1)),
                action=action if isinstance(action, str) else repr(action),
                sub_goal=parsed.get("sub_goal", ""),
                justification=parsed.get("justification", ""),
                context=parsed.get("context", ""),
                tool_name=info.get("tool_name"),
                tool_input=info.get("tool_input"),
                tool_result=info.get("tool_result", ""),
                error=info.get("error"),
                error_kind=info.get("error_kind"),
                verifier=info.get("verifier"),
                reward=float(reward),
            )
        )
        if terminated or truncated:
            score = info.get("score")
            self.record.answer = info.get("answer")
            self.record.score = (
                None
                if score is None or (isinstance(score, float) and math.isnan(score))
                else float(score)
            )
            self.record.score_error = info.get("score_error")
            self.record.terminated, self.record.truncated = bool(terminated), bool(truncated)


def info_at(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info from gymnasium's vector info format (``key`` + ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, dict):
            out[key] = info_at(value, i)
        else:
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def write_jsonl(records: Iterable[EpisodeRecord], path_or_file: str | Path | TextIO) -> int:
    """Write records as JSONL; returns how many were written."""
    if isinstance(path_or_file, (str, Path)):
        Path(path_or_file).parent.mkdir(parents=True, exist_ok=True)
        with open(path_or_file, "w", encoding="utf-8") as fh:
            return write_jsonl(records, fh)
    count = 0
    for record in records:
        path_or_file.write(record.model_dump_json() + "\n")
        count += 1
    return count


def read_jsonl(path: str | Path) -> Iterator[EpisodeRecord]:
    """Read records; a malformed line raises ``ValueError`` naming the line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield EpisodeRecord.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: not an episode record: {exc}") from exc
