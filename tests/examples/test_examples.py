"""Smoke tests: each example runs offline as a user would run it, and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_custom_policy() -> None:
    out = _run("custom_policy.py", "--episodes", "5")
    assert out.startswith("success ") and "over 5 episodes" in out


def test_custom_tool() -> None:
    out = _run("custom_tool.py")
    assert "tool said: 6.214 mi" in out and "cannot convert" in out and "reward 1.0" in out


def test_custom_tasks_from_jsonl() -> None:
    out = _run("custom_tasks.py")
    assert "3 tasks from" in out and out.count("reward 1.0") == 3


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_every_example_has_a_docstring_and_main(script: str) -> None:
    text = (ROOT / "examples" / script).read_text()
    assert text.lstrip().startswith('"""') and '__name__ == "__main__"' in text
