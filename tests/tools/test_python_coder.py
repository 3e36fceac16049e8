"""PythonCoderTool, local backend: contract, results, limits, isolation selection, pool behaviour.

Everything runs real sandboxes (bubblewrap when installed, confined processes otherwise).
Hostile inputs live in test_sandbox_hostile.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from tools.base import Tool, ToolResult
from tools.python_coder import PythonCoderTool, extract_code
from tools.sandbox.models import ExecutionResult, SandboxUnavailableError

HAS_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")
SMALL_PRELOAD = ("math", "random", "json")


@pytest.fixture(scope="module")
def tool():
    with PythonCoderTool(timeout_s=5, pool_size=2) as t:
        yield t


@pytest.fixture(scope="module")
def process_tool():
    with PythonCoderTool(isolation="process", timeout_s=5, pool_size=1, preload=SMALL_PRELOAD) as t:
        yield t


# --- contract ----------------------------------------------------------------------------------
def test_card_and_protocol(tool: PythonCoderTool) -> None:
    assert isinstance(tool, Tool)
    card = tool.card
    assert card.name == "Python_Coder_Tool"
    assert card.primary_input == "code"
    assert set(card.input_types) == {"code"}
    assert len(card.demo_commands) >= 2
    limits = " ".join(card.limitations).lower()
    assert "network" in limits and "time" in limits
    assert any("print" in p for p in card.best_practices)
    rendered = card.render()
    assert "Python_Coder_Tool" in rendered and "Example command" in rendered


def test_demo_commands_produce_what_they_claim(tool: PythonCoderTool) -> None:
    first, second = tool.card.demo_commands[:2]
    assert tool.execute(code=first.command).data["stdout"].strip() == "385"
    assert tool.execute(code=second.command).data["stdout"].strip() == "1/2"


def test_print_and_variables(tool: PythonCoderTool) -> None:
    result = tool.execute(code="x = 6 * 7\nname = 'abc'\nxs = [1, 2, 3]\nprint(x)")
    assert isinstance(result, ToolResult)
    assert result.ok and result.error is None
    assert "42" in result.output
    data = ExecutionResult.model_validate(result.data)
    assert data.stdout == "42\n"
    assert data.variables == {"x": "42", "name": "'abc'", "xs": "[1, 2, 3]"}
    assert data.exit_reason == "ok" and data.exit_code == 0
    assert data.duration_s > 0
    assert data.isolation == tool.isolation_level
    assert "x = 42" in result.output


def test_only_simple_variables_are_reported(tool: PythonCoderTool) -> None:
    code = (
        "import math\ndef f():\n    return 1\nclass C: pass\n_hidden = 1\n"
        "big = list(range(500))\n"
        "long = 'z' * 1000\nobj = C()\nfrac = __import__('fractions').Fraction(1, 3)\n"
    )
    variables = tool.execute(code=code).data["variables"]
    assert set(variables) == {"long", "frac"}
    assert variables["frac"] == "Fraction(1, 3)"
    assert len(variables["long"]) <= 200 and variables["long"].endswith("...")


def test_no_output_hint(tool: PythonCoderTool) -> None:
    result = tool.execute(code="import math")
    assert result.ok and "print" in result.output


def test_exception_has_trimmed_traceback(tool: PythonCoderTool) -> None:
    result = tool.execute(code="print('before')\ny = 1 / 0\n")
    assert not result.ok
    assert result.error == "ZeroDivisionError: division by zero"
    data = result.data
    assert data["exit_reason"] == "exception"
    assert data["stdout"] == "before\n"
    trace = data["exception"]["traceback"]
    assert 'File "<code>", line 2' in trace and "y = 1 / 0" in trace
    assert "runner.py" not in trace and "worker.py" not in trace
    assert "before" in result.as_text() and "ZeroDivisionError" in result.as_text()


def test_syntax_error(tool: PythonCoderTool) -> None:
    result = tool.execute(code="def broken(:\n    pass")
    assert not result.ok and result.infra is None  # the planner's bad code: part of the outcome
    assert result.data["exception"]["type"] == "SyntaxError"


@pytest.mark.parametrize(
    "code,expected",
    [
        (None, "no code"),
        (123, "must be a string"),
        ("", "empty"),
        ("   \n\t", "empty"),
        ("```python\n```", "empty"),
        ("print(1)\x00", "NUL"),
        ("x" * 300_000, "limit"),
    ],
)
def test_bad_input_is_an_error_result(tool: PythonCoderTool, code: object, expected: str) -> None:
    result = tool.execute(code=code)
    assert not result.ok and result.infra is None
    assert expected in (result.error or "")


def test_unknown_inputs_are_ignored(tool: PythonCoderTool) -> None:
    result = tool.execute(code="print(2 + 2)", query="ignored", context="also ignored")
    assert result.ok and result.data["stdout"] == "4\n"


# --- fenced code -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("print(1)", "print(1)"),
        ("```python\nprint(1)\n```", "print(1)"),
        ("```py\nprint(1)\n```", "print(1)"),
        ("```\nprint(1)\n```", "print(1)"),
        ("Here is the code:\n```python\nx = 2\nprint(x)\n```\nThat prints 2.", "x = 2\nprint(x)"),
        ("```python\na = 1\n```\nthen\n```python\nprint(a)\n```", "a = 1\n\nprint(a)"),
        ("    x = 1\n    print(x)", "x = 1\nprint(x)"),
        ("```python\nprint('unterminated')", "print('unterminated')"),
    ],
)
def test_extract_code(text: str, expected: str) -> None:
    assert extract_code(text) == expected


def test_fenced_block_runs(tool: PythonCoderTool) -> None:
    result = tool.execute(code="Sure:\n```python\nprint(sum(range(10)))\n```")
    assert result.ok and result.data["stdout"] == "45\n"


# --- isolation basics (issue 2) ----------------------------------------------------------------
def test_infinite_loop_is_killed_and_next_call_works() -> None:
    with PythonCoderTool(timeout_s=1, pool_size=1, preload=SMALL_PRELOAD) as short:
        start = time.monotonic()
        result = short.execute(code="while True:\n    pass")
        elapsed = time.monotonic() - start
        assert not result.ok
        assert result.data["exit_reason"] == "timeout"
        assert "timed out" in (result.error or "")
        assert elapsed < 5
        assert short.execute(code="print('alive')").data["stdout"] == "alive\n"


def test_host_environment_is_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_PARENT_ONLY", "visible-in-parent")
    with PythonCoderTool(timeout_s=5, pool_size=1, preload=SMALL_PRELOAD) as fresh:
        result = fresh.execute(
            code="import os\nprint('AGENTFLOW_PARENT_ONLY' in os.environ)\n"
            "print(sorted(os.environ))"
        )
    assert result.ok
    assert result.data["stdout"].splitlines()[0] == "False"
    assert "visible-in-parent" not in result.output


def test_no_state_leaks_between_calls(tool: PythonCoderTool) -> None:
    first = tool.execute(
        code="import math, os\nmath.pi = 3\nleak = 'x'\n"
        "open('note.txt', 'w').write('hi')\nprint(os.getcwd())"
    )
    assert first.ok
    # two workers: repeat so both get exercised
    for _ in range(3):
        again = tool.execute(
            code="import math, os\nprint(math.pi)\nprint('leak' in globals())\n"
            "print(os.path.exists('note.txt'), os.listdir('.'))"
        )
        assert again.data["stdout"].splitlines() == ["3.141592653589793", "False", "False []"]


def test_fresh_random_state_each_call(tool: PythonCoderTool) -> None:
    code = "import random, numpy\nprint(random.random(), numpy.random.random())"
    outputs = {tool.execute(code=code).data["stdout"] for _ in range(4)}
    assert len(outputs) == 4


def test_code_runs_in_another_process(process_tool: PythonCoderTool) -> None:
    result = process_tool.execute(code="import os\nprint(os.getpid(), os.getuid())")
    pid, uid = map(int, result.data["stdout"].split())
    assert pid != os.getpid()
    if os.geteuid() == 0:
        assert uid != 0  # user code never runs as root


def test_call_directory_is_removed(process_tool: PythonCoderTool) -> None:
    result = process_tool.execute(
        code="import os\nopen('f.bin', 'wb').write(b'1' * 1000)\nprint(os.getcwd())"
    )
    cwd = Path(result.data["stdout"].strip())
    assert cwd.is_absolute() and "calls" in cwd.parts
    assert not cwd.exists()


def test_threads_and_numpy_work(tool: PythonCoderTool) -> None:
    code = (
        "import threading, numpy as np\nout = []\n"
        "ts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]\n"
        "[t.start() for t in ts]\n[t.join() for t in ts]\n"
        "print(sorted(out), int(np.arange(10).sum()))"
    )
    assert tool.execute(code=code).data["stdout"] == "[0, 1, 2, 3] 45\n"


def test_sys_exit_zero_is_success(tool: PythonCoderTool) -> None:
    result = tool.execute(code="import sys\nprint('done')\nsys.exit(0)")
    assert result.ok and result.data["exit_reason"] == "exit" and result.data["exit_code"] == 0


def test_many_small_processes_are_not_a_memory_bomb(tool: PythonCoderTool) -> None:
    # each child shares the preloaded modules copy-on-write: that must not count 12 times
    code = (
        "import os, time\nkids = []\nfor _ in range(12):\n    pid = os.fork()\n"
        "    if pid == 0:\n        time.sleep(0.3)\n        os._exit(0)\n    kids.append(pid)\n"
        "for pid in kids:\n    os.waitpid(pid, 0)\nprint(len(kids))"
    )
    result = tool.execute(code=code)
    assert result.ok, result.error
    assert result.data["stdout"] == "12\n"


# --- output cap ----------------------------------------------------------------------------------
def test_output_is_truncated_with_marker() -> None:
    with PythonCoderTool(
        timeout_s=5, pool_size=1, max_output_bytes=1000, preload=SMALL_PRELOAD
    ) as small:
        result = small.execute(code="print('a' * 5000)\nx = 1")
        assert result.ok
        data = result.data
        assert data["truncated"] is True
        assert data["stdout"].startswith("a" * 1000)
        assert "output truncated: 5001 bytes written" in data["stdout"]
        assert data["variables"] == {"x": "1"}  # the program still ran to the end
        flood = small.execute(code="while True:\n    print('b' * 1000)")
        assert not flood.ok and flood.data["exit_reason"] == "output_limit"
        assert flood.data["truncated"] is True


# --- isolation selection -------------------------------------------------------------------------
@needs_bwrap
def test_auto_uses_bubblewrap_when_present(tool: PythonCoderTool) -> None:
    assert tool.isolation_level.startswith("bwrap")


@needs_bwrap
def test_strict_works_with_bubblewrap() -> None:
    with PythonCoderTool(isolation="strict", pool_size=1, preload=SMALL_PRELOAD) as strict:
        assert strict.isolation_level.startswith("bwrap")
        assert strict.execute(code="print('ok')").ok


def test_strict_without_bubblewrap_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no bwrap to be found
    with pytest.raises(SandboxUnavailableError, match="apt-get install -y bubblewrap"):
        PythonCoderTool(isolation="strict", pool_size=1, preload=SMALL_PRELOAD)


def test_auto_without_bubblewrap_falls_back_to_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with PythonCoderTool(pool_size=1, preload=SMALL_PRELOAD) as fallback:
        assert fallback.isolation_level.startswith("process")
        assert "rlimits" in fallback.isolation_level
        assert fallback.execute(code="print(7 * 6)").data["stdout"] == "42\n"


def test_broken_bubblewrap_strict_raises_auto_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a bwrap that cannot create namespaces, as in an unprivileged container
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(SandboxUnavailableError, match="No permissions to create new namespace"):
        PythonCoderTool(isolation="strict", pool_size=1, preload=SMALL_PRELOAD)
    with PythonCoderTool(pool_size=1, preload=SMALL_PRELOAD) as fallback:
        assert fallback.isolation_level.startswith("process")
        assert fallback.execute(code="print('fallback')").ok


def test_process_isolation_level(process_tool: PythonCoderTool) -> None:
    level = process_tool.isolation_level
    assert level.startswith("process+") and "rlimits" in level
    assert process_tool.execute(code="print('p')").data["stdout"] == "p\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"isolation": "nope"},
        {"backend": "docker"},
        {"pool_size": 0},
        {"timeout_s": 0},
        {"memory_mb": 1},
        {"max_output_bytes": 0},
    ],
)
def test_bad_configuration_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PythonCoderTool(preload=SMALL_PRELOAD, **kwargs)


# --- pool ----------------------------------------------------------------------------------------
def test_concurrent_callers_get_their_own_results(tool: PythonCoderTool) -> None:
    results: dict[int, list[str]] = {}

    def caller(i: int) -> None:
        results[i] = [
            tool.execute(code=f"print({i} * 1000 + {j})").data["stdout"] for j in range(5)
        ]

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {i: [f"{i * 1000 + j}\n" for j in range(5)] for i in range(8)}


def test_worker_killed_from_outside_is_replaced() -> None:
    with PythonCoderTool(timeout_s=5, pool_size=1, preload=SMALL_PRELOAD) as t:
        (pid,) = t._backend.worker_pids()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid in t._backend.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.01)  # SIGKILL is asynchronous: wait until the worker is really gone
        result = t.execute(code="print('recovered')")
        assert result.ok and result.data["stdout"] == "recovered\n"
        assert t._backend.restarts == 1
        assert t._backend.worker_pids() != [pid]


def test_worker_killed_during_a_call_gives_error_then_recovers() -> None:
    with PythonCoderTool(timeout_s=10, pool_size=1, preload=SMALL_PRELOAD) as t:
        (pid,) = t._backend.worker_pids()
        timer = threading.Timer(0.5, os.kill, args=(pid, signal.SIGKILL))
        timer.start()
        result = t.execute(code="import time\ntime.sleep(5)")
        timer.join()
        assert not result.ok and result.data["exit_reason"] == "sandbox_error"
        assert result.infra == "sandbox"  # the sandbox broke, not the code: no outcome
        assert "replaced" in (result.error or "")
        assert t.execute(code="print(1)").data["stdout"] == "1\n"


def test_close_stops_workers_and_is_idempotent() -> None:
    t = PythonCoderTool(pool_size=2, preload=SMALL_PRELOAD)
    pids = t._backend.worker_pids()
    assert len(pids) == 2
    t.close()
    t.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    result = t.execute(code="print(1)")
    assert not result.ok and "closed" in (result.error or "") and result.infra == "backend"


@pytest.mark.parametrize("isolation", ["process"] + (["strict"] if HAS_BWRAP else []))
def test_worker_killed_mid_call_leaves_no_process_behind(isolation: str) -> None:
    with PythonCoderTool(
        isolation=isolation, timeout_s=10, pool_size=1, preload=SMALL_PRELOAD
    ) as t:
        uids = t._backend.worker_uids()
        if not uids:
            pytest.skip("no private uid to look for (not running as root)")
        (pid,) = t._backend.worker_pids()
        code = (
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "    os._exit(0)\ntime.sleep(5)"
        )
        timer = threading.Timer(0.7, os.kill, args=(pid, signal.SIGKILL))
        timer.start()
        result = t.execute(code=code)
        timer.join()
        assert result.data["exit_reason"] == "sandbox_error"
        deadline = time.monotonic() + 5
        while _uid_processes(uids) and time.monotonic() < deadline:
            time.sleep(0.05)  # a PID namespace is torn down asynchronously
        assert _uid_processes(uids) == []
        assert t.execute(code="print(3)").data["stdout"] == "3\n"


def _uid_processes(uids: list[int]) -> list[int]:
    wanted = {str(u) for u in uids}
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if uid_line.split()[1] in wanted:
            found.append(int(name))
    return found
