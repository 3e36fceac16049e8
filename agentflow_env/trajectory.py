"""Trajectory records: the JSONL format shared by evaluation, training and the viewer.

One line per episode (:class:`EpisodeRecord`), each with its planner turns (:class:`TurnRecord`).
:class:`TrajectoryBuilder` turns ``reset``/``step`` results into records, so every producer writes
the same fields; :func:`info_at` reads one sub-env's info out of a vector env's batched info.
What differs between producers goes in ``metadata``: evaluation and ``RecordTrajectory`` store
``episode_index``; the Flow-GRPO trainer stores ``step``, ``rank``, ``group``, ``index`` and
``sampling`` (the viewer filters on ``step`` and ``group``).

An episode whose outcome was lost to infrastructure has :attr:`EpisodeRecord.infra_error` set
(:class:`~agentflow_env.infra.InfraError`: kind, source, message), no score, and no reward on its
last turn (``None``; its :attr:`~EpisodeRecord.total_reward` is NaN): it is neither right nor
wrong, and reports and learners leave it out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from pydantic import BaseModel, Field

from agentflow_env.infra import InfraError

__all__ = [
    "TurnRecord",
    "EpisodeRecord",
    "TrajectoryBuilder",
    "info_at",
    "write_jsonl",
    "read_jsonl",
    "recover_jsonl",
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
    """``parse``, ``executor`` (the tool did not run), ``tool``, or ``infra`` (the turn could not
    run at all: see the episode's ``infra_error``)"""
    verifier: str | None = None
    reward: float | None = 0.0
    """``None``: no reward, the episode's outcome was lost to infrastructure"""


class EpisodeRecord(BaseModel):
    episode_id: str
    task_id: str
    question: str
    ground_truth: str
    answer: str | None = None
    score: float | None = None
    score_error: str | None = None
    infra_error: InfraError | None = None
    """set when infrastructure failed and the episode has no outcome (not scored)"""
    terminated: bool = False
    truncated: bool = False
    turns: list[TurnRecord] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def total_reward(self) -> float:
        """The episode's return: the sum of its turns' rewards (NaN when it has no outcome)."""
        if self.infra_error is not None or any(t.reward is None for t in self.turns):
            return math.nan
        return sum((t.reward for t in self.turns if t.reward is not None), 0.0)


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
                reward=None if math.isnan(reward) else float(reward),
            )
        )
        if info.get("infra_error"):
            self.fail(InfraError.model_validate(info["infra_error"]))
            self.record.answer = info.get("answer")
            self.record.terminated, self.record.truncated = bool(terminated), bool(truncated)
            self.record.score_error = info.get("score_error")
        elif terminated or truncated:
            score = info.get("score")
            self.record.answer = info.get("answer")
            self.record.score = (
                None
                if score is None or (isinstance(score, float) and math.isnan(score))
                else float(score)
            )
            self.record.score_error = info.get("score_error")
            self.record.terminated, self.record.truncated = bool(terminated), bool(truncated)

    def fail(self, infra: InfraError) -> None:
        """End the episode without an outcome (e.g. the planner's engine failed): no score, no
        reward on its last turn, ``infra_error`` set, truncated."""
        record = self.record
        record.infra_error = infra
        record.score = None
        record.truncated, record.terminated = True, False
        if record.turns:
            record.turns[-1].reward = None


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


def recover_jsonl(path: str | Path) -> tuple[list[EpisodeRecord], bool]:
    """Records of a file a killed run may have left: ``(records, torn)``.

    Lines are written whole and end with a newline, so only the last line can be torn (a kill in
    the middle of a write); it is left out and ``torn`` is True. A malformed line elsewhere is
    not the work of a kill: it raises ``ValueError`` naming the line.
    """
    data = Path(path).read_bytes()
    complete, _, tail = data.rpartition(b"\n")
    records = []
    for lineno, line in enumerate(complete.split(b"\n") if complete else [], 1):
        if not line.strip():
            continue
        try:
            records.append(EpisodeRecord.model_validate_json(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: not an episode record: {exc}") from exc
    return records, bool(tail.strip())


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
