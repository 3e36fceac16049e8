"""The agent's memory: one :class:`Step` record per planner turn.

The memory belongs to one episode: :meth:`Memory.clear` runs on every ``reset`` (the reference
code kept memory across episodes, leaking one query's steps into the next).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agentflow_env.format.labels import OMITTED
from tools.base import execute_call

__all__ = ["Step", "Memory"]


class Step(BaseModel):
    """What happened in one turn: the planner's action, the tool call and its result."""

    turn: int
    """1-based turn index"""
    action_text: str
    """the planner's action as it appears in the prompt (possibly truncated)"""
    tool_name: str | None = None
    sub_goal: str = ""
    command: str | None = None
    """the tool input actually executed (several calls: one ``execution = tool.execute(...)``
    line each)"""
    calls: list[dict[str, Any]] = Field(default_factory=list)
    """the inputs of each tool call of this step, in order (empty when no tool ran)"""
    result: str = ""
    """the text shown to the planner (tool output, or the error)"""
    error: str | None = None
    """parse / executor / tool error of this turn, if any"""
    error_kind: Literal["parse", "executor", "tool"] | None = None
    verifier: str | None = None
    """verifier decision after this turn (``STOP``/``CONTINUE``), when a verifier ran"""
    timings: dict[str, float] = Field(default_factory=dict)


class Memory(BaseModel):
    """Ordered steps of the current episode."""

    steps: list[Step] = Field(default_factory=list)

    def clear(self) -> None:
        self.steps.clear()

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def __len__(self) -> int:
        return len(self.steps)

    def actions(self, omitted: int = 0) -> dict[str, dict[str, Any] | str]:
        """The steps as the reference's memory holds them, for the ``paper`` prompt layout:
        ``{"Action Step k": {"tool_name", "sub_goal", "command", "result"}}``, the command as
        ``execution = tool.execute(...)`` lines. The oldest ``omitted`` steps are replaced by
        :data:`OMITTED` (an over-long prompt drops its oldest steps, never the query)."""
        out: dict[str, dict[str, Any] | str] = {}
        for i, step in enumerate(self.steps):
            key = f"Action Step {step.turn}"
            if i < omitted:
                out[key] = OMITTED
                continue
            command = "\n".join(execute_call(c) for c in step.calls) if step.calls else None
            out[key] = {
                "tool_name": step.tool_name,
                "sub_goal": step.sub_goal,
                "command": command if command is not None else step.command,
                "result": step.result,
            }
        return out

    def render(self, max_result_chars: int = 2_000) -> str:
        """Memory as the compact text the LLM modules (executor/verifier/generator) read."""
        if not self.steps:
            return "No steps yet."
        blocks = []
        for step in self.steps:
            result = step.result
            if len(result) > max_result_chars:
                result = result[:max_result_chars] + " ...[truncated]"
            lines = [f"Action Step {step.turn}:", f"  Tool: {step.tool_name or 'none'}"]
            if step.sub_goal:
                lines.append(f"  Sub-Goal: {step.sub_goal}")
            if step.command is not None:
                lines.append(f"  Command: {step.command}")
            lines.append(f"  Result: {result}")
            blocks.append("\n".join(lines))
        return "\n".join(blocks)
