"""Errors that carry a child process's log keep the line that says what went wrong.

Unit cases for :func:`tools.log_excerpt.log_excerpt`, then real child processes whose useful line
is followed by 10 kB of noise: a log file read back, and a sandbox worker that dies at start-up
(``WorkerDied`` carries its stderr). The real ``transformers serve`` case is in
``tests/agentflow_env/test_serve.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.log_excerpt import log_excerpt, read_log_excerpt
from tools.sandbox.launcher import LaunchSpec
from tools.sandbox.pool import WorkerDied, WorkerHandle

USEFUL = "Error: No such option '--no-such-option'."
# A child that prints a usage error, then ~10 kB of option listing, then a closing hint.
NOISY_CHILD = textwrap.dedent(f"""
    import sys
    out = sys.stderr
    print("Usage: prog serve [OPTIONS] MODEL", file=out)
    print({USEFUL!r}, file=out)
    for i in range(200):
        print(f"  --option-{{i:03d}} TEXT   what option {{i}} does, at some length here.", file=out)
    print("Did you mean: --no-compile?", file=out)
    sys.exit(2)
""")


def _whole_lines_of(excerpt: str, source: str) -> None:
    lines = set(source.splitlines())
    for line in excerpt.splitlines():
        assert line in lines or line.startswith("[... "), f"not a whole line of the log: {line!r}"


def test_a_short_log_is_returned_whole() -> None:
    text = "starting\nError: boom\ndone\n\n"
    assert log_excerpt(text) == "starting\nError: boom\ndone"


def test_the_error_line_and_the_tail_survive_a_page_of_noise() -> None:
    noise = "\n".join(f"  --flag-{i} does something rather long to describe" for i in range(400))
    text = f"Usage: x [OPTIONS]\n{USEFUL}\n{noise}\nDid you mean: --no-compile?\n"
    excerpt = log_excerpt(text, max_chars=1500)
    assert len(excerpt) <= 1500
    assert USEFUL in excerpt.splitlines() and "Usage: x [OPTIONS]" in excerpt.splitlines()
    assert excerpt.splitlines()[-1] == "Did you mean: --no-compile?"
    assert "lines left out" in excerpt
    _whole_lines_of(excerpt, text)
    # original order: the cause comes before the tail
    assert excerpt.index(USEFUL) < excerpt.index("Did you mean")


def test_cause_lines_take_at_most_half_the_budget_and_a_bounded_count() -> None:
    text = "\n".join([f"Error {i}: something failed here" for i in range(100)] + ["the last line"])
    excerpt = log_excerpt(text, max_chars=800, max_cause_lines=3)
    assert len(excerpt) <= 800 and excerpt.endswith("the last line")
    assert excerpt.splitlines()[:3] == [f"Error {i}: something failed here" for i in range(3)]


def test_an_overlong_line_is_shortened_in_the_middle_not_dropped() -> None:
    blob = "Error: " + "x" * 50_000 + " END"
    excerpt = log_excerpt(blob + "\nbye", max_chars=1000)
    assert len(excerpt) <= 1000
    first = excerpt.splitlines()[0]
    assert first.startswith("Error: x") and first.endswith(" END") and "[...]" in first


def test_bad_budget_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_chars must be >= 200"):
        log_excerpt("x", max_chars=10)


def test_adversarial_input_is_fast() -> None:
    # literal alternatives only: a megabyte of near-matches is linear work
    excerpt = log_excerpt(("erro " * 20 + "\n") * 10_000 + "Error: real\n" + "fail" * 250_000)
    assert "Error: real" in excerpt


def test_a_real_child_log_file_keeps_its_error_line(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", NOISY_CHILD],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2 and log.stat().st_size > 10_000
    excerpt = read_log_excerpt(log, max_chars=2000)
    assert USEFUL in excerpt.splitlines()
    assert excerpt.splitlines()[-1] == "Did you mean: --no-compile?"
    assert len(excerpt) <= 2000
    _whole_lines_of(excerpt, log.read_text())


def test_an_unreadable_log_says_so(tmp_path: Path) -> None:
    assert read_log_excerpt(tmp_path / "missing.log").startswith("(log unreadable:")


def test_a_sandbox_worker_that_dies_at_start_reports_its_error_line(tmp_path: Path) -> None:
    spec = LaunchSpec(
        isolation="process",
        argv=[sys.executable, "-c", NOISY_CHILD],
        env={},
        call_root=str(tmp_path),
        landlock_read=None,
    )
    with pytest.raises(WorkerDied, match="failed to start") as info:
        WorkerHandle(spec, init={}, startup_timeout_s=30)
    message = str(info.value)
    assert USEFUL in message.splitlines()
    assert "Did you mean: --no-compile?" in message
    assert len(message) < 4500
