"""The task record: one query with its verifiable answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Task", "ScorerName"]

ScorerName = Literal["exact", "f1", "math", "mc", "game24", "judge"]


class Task(BaseModel):
    """One episode's query.

    ``answer`` is the ground truth as text; ``scorer`` names the rule in
    ``agentflow_env.rewards`` that compares a prediction with it. ``metadata`` holds
    anything source-specific (e.g. the generator's solution path, which scripted oracle
    planners use; it is never shown to the policy).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    answer: str
    scorer: ScorerName = "exact"
    choices: tuple[str, ...] | None = None
    """options of a multiple-choice question, in order (A, B, C, ...)"""
    source: str = ""
    """where the task came from, e.g. ``generated:search`` or ``bamboogle.json``"""
    metadata: dict[str, Any] = Field(default_factory=dict)
