"""Small real tools and tasks for env tests (deterministic, no sandbox start-up cost)."""

from __future__ import annotations

import threading
import time
from typing import Any

from agentflow_env.tasks.base import Task
from tools.base import ToolCard, ToolResult


class LookupTool:
    """A dictionary lookup tool: a real tool with a card; ``hang`` sleeps, ``boom`` raises."""

    card = ToolCard(
        name="Lookup_Tool",
        description="Looks a key up in a table.",
        input_types={"query": "str - the key"},
    )

    def __init__(self, table: dict[str, str] | None = None, hang_s: float = 3.0) -> None:
        self.table = table or {}
        self.hang_s = hang_s
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self.closed = False

    def execute(self, query: str = "", **_: Any) -> ToolResult:
        with self._lock:
            self.calls.append(query)
        if query == "hang":
            time.sleep(self.hang_s)
        if query == "boom":
            raise RuntimeError("tool exploded")
        if query in self.table:
            return ToolResult(ok=True, output=self.table[query])
        return ToolResult.failure(f"no entry for {query!r}")

    def close(self) -> None:
        self.closed = True


def numbered_tasks(n: int = 6) -> list[Task]:
    return [
        Task(id=f"t{i}", question=f"What is the code of item {i}?", answer=f"code-{i}")
        for i in range(n)
    ]


def exact_scorer(prediction: str, task: Task) -> float:
    return float(prediction.strip() == task.answer)


def lookup_env_kwargs(n: int = 6, **overrides: Any) -> dict[str, Any]:
    table = {f"item {i}": f"code-{i}" for i in range(n)}
    kwargs: dict[str, Any] = {
        "tasks": numbered_tasks(n),
        "tools": [LookupTool(table)],
        "scorer": exact_scorer,
        "max_turns": 3,
    }
    kwargs.update(overrides)
    return kwargs


def lookup_action(key: str) -> str:
    return (
        f"Justification: need it\nSub-Goal: look up {key}\nTool Name: Lookup_Tool\nCommand: {key}"
    )


def finish_action(answer: str) -> str:
    return f"Justification: known\nTool Name: Finish\n<answer>{answer}</answer>"
