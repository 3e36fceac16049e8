"""Small real tools and tasks for env tests (deterministic, no sandbox start-up cost), and a
headless browser for the viewer's pages."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
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


class Page(HTMLParser):
    """Collects tags, attributes, text, and script bodies of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        else:
            self.text.append(data)

    def by_class(self, tag: str, css: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and css in (a.get("class") or "").split()]

    def shown_episodes(self) -> list[str]:
        """Ids of the viewer's episodes the page's filters left visible."""
        return [a["id"] or "" for a in self.by_class("details", "episode") if "hidden" not in a]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_dom(path: Path, fragment: str = "") -> Page:
    """The live DOM of a local page after its scripts ran, from headless Chromium."""
    assert CHROMIUM is not None, "chromium is not installed (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(  # noqa: PLW1510 - the return code is asserted below
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                f"{path.as_uri()}{fragment}",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, "HOME": profile},
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return Page(done.stdout)
