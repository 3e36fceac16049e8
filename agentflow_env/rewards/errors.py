"""The scorers' error types (a malformed task, or a task that needs an LLM judge)."""

from __future__ import annotations

__all__ = ["TaskScoringError", "JudgeRequiredError"]


class TaskScoringError(ValueError):
    """The task itself cannot be scored (e.g. a Game of 24 task without its numbers)."""


class JudgeRequiredError(NotImplementedError):
    """The task's scorer is ``judge``: it needs an LLM judge, not a rule scorer."""
