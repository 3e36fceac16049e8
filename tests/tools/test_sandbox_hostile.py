"""Hostile-input suite for the local Python sandbox (issue 3), at every available isolation level.

Each hostile snippet must be contained, come back as a clean error result, leave the pool usable
and leave the host unchanged. The process cap is verified on a bounded test before the real fork
bomb runs (tests in a module run in file order).
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.base import ToolResult
from tools.python_coder import PythonCoderTool
from tools.sandbox.models import ExecutionResult

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAME = "AGENTFLOW_HOSTILE_TEST_SECRET"
SECRET_VALUE = f"s3cr3t-{uuid.uuid4().hex}"
MAX_PROCESSES = 8
TIMEOUT_S = 2.0
WATCHED = [ROOT / "pyproject.toml", ROOT / "tools" / "base.py", ROOT / "tools" / "python_coder.py"]

LEVELS = ["process"] + (["strict"] if shutil.which("bwrap") else [])


def _digest() -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in WATCHED if p.exists()}


def processes_of(uids: list[int]) -> list[int]:
    """Host pids whose real uid is one of the sandbox's private uids."""
    wanted = {str(u) for u in uids}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if line.split()[1] in wanted:
                    found.append(int(name))
                break
    return found


@pytest.fixture(scope="module", params=LEVELS)
def sandbox(request: pytest.FixtureRequest) -> Iterator[PythonCoderTool]:
    # The secret is in this process's environment while the tool (and its workers) exist.
    os.environ[SECRET_NAME] = SECRET_VALUE
    before = _digest()
    tool = PythonCoderTool(
        isolation=request.param,
        timeout_s=TIMEOUT_S,
        pool_size=2,
        max_processes=MAX_PROCESSES,
        memory_mb=512,
        max_file_mb=8,
        max_output_bytes=4096,
        preload=("math", "json", "numpy"),
    )
    try:
        yield tool
        assert _digest() == before, "the project checkout changed"
    finally:
        tool.close()
        del os.environ[SECRET_NAME]


def assert_clean_error(result: ToolResult, reason: str | set[str]) -> ExecutionResult:
    assert isinstance(result, ToolResult)
    assert not result.ok
    assert result.error
    data = ExecutionResult.model_validate(result.data)
    reasons = {reason} if isinstance(reason, str) else reason
    assert data.exit_reason in reasons, (data.exit_reason, result.error, data.stderr)
    return data


def assert_no_leftovers(tool: PythonCoderTool) -> None:
    uids = tool._backend.worker_uids()
    if uids:
        assert processes_of(uids) == []


def assert_still_works(tool: PythonCoderTool) -> None:
    result = tool.execute(code="print(sum(range(1000)))")
    assert result.ok and result.data["stdout"] == "499500\n"


# --- processes -----------------------------------------------------------------------------------
def test_process_cap_on_a_bounded_test_first(sandbox: PythonCoderTool) -> None:
    code = (
        "import os, time\nstarted = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n"
        "        os._exit(0)\n    started += 1\nprint(started)"
    )
    result = sandbox.execute(code=code)
    assert result.ok, result.error
    started = int(result.data["stdout"])
    assert 0 <= started <= MAX_PROCESSES - 1
    assert result.data["duration_s"] < 10  # the sleeping children did not hold the call open
    assert_no_leftovers(sandbox)


def test_fork_bomb(sandbox: PythonCoderTool) -> None:
    uids = sandbox._backend.worker_uids()
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(processes_of(uids)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = sandbox.execute(
            code="import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass"
        )
    finally:
        stop.set()
        watcher.join()
    assert_clean_error(result, "timeout")
    # the snippet's processes, at most one more sampled while the worker was switching uid
    assert peak[0] <= MAX_PROCESSES + 1
    assert_no_leftovers(sandbox)
    assert_still_works(sandbox)


def test_background_process_does_not_outlive_the_call(sandbox: PythonCoderTool) -> None:
    code = (
        "import os, subprocess, time\n"
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "pid = os.fork()\nif pid == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n    os._exit(0)\nos.waitpid(pid, 0)\nprint('started', p.pid)"
    )
    start = time.monotonic()
    result = sandbox.execute(code=code)
    if sandbox._backend.worker_uids():
        assert result.ok and result.data["stdout"].startswith("started")
        assert_no_leftovers(sandbox)
    else:  # no private uid: seccomp forbids new processes altogether
        assert not result.ok
    assert time.monotonic() - start < 10


def test_killing_the_parent_and_the_worker(sandbox: PythonCoderTool) -> None:
    pids = sandbox._backend.worker_pids()
    code = (
        "import os, signal\nfor target in (os.getppid(), 1):\n    try:\n"
        "        os.kill(target, signal.SIGKILL)\n        print(target, 'sent')\n"
        "    except OSError as exc:\n        print(target, type(exc).__name__)\n"
        "try:\n    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n"
        "    print('pg sent')\nexcept OSError as exc:\n    print('pg', type(exc).__name__)\n"
    )
    result = sandbox.execute(code=code)
    assert result.ok
    lines = result.data["stdout"].splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["PermissionError", "PermissionError"]
    # killpg(1) is kill(-1) in bwrap (the worker's group is 1): "succeeds" without reaching
    # anything but the snippet's own uid, so only the survival of the workers is checked.
    uncaught = sandbox.execute(code="import os\nos.kill(os.getppid(), 9)")
    assert_clean_error(uncaught, "exception")
    # kill(-1) from the snippet reaches only its own uid: it takes down itself, nothing else
    suicide = sandbox.execute(code="import os\nos.kill(-1, 9)\nprint('survived')")
    assert suicide.data["exit_reason"] in {"killed", "ok"}
    assert sandbox._backend.worker_pids() == pids
    assert_still_works(sandbox)


# --- time, memory, output, files -----------------------------------------------------------------
def test_infinite_loop(sandbox: PythonCoderTool) -> None:
    start = time.monotonic()
    assert_clean_error(sandbox.execute(code="while True:\n    pass"), "timeout")
    assert time.monotonic() - start < TIMEOUT_S + 3
    assert_still_works(sandbox)


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(8 * 1024 ** 3)",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 ** 2))",
        "import numpy as np\na = np.ones((40_000, 40_000))",
        # several processes, each under the per-process limit, together far above it
        "import os, time\nfor _ in range(MAX - 1):\n    if os.fork() == 0:\n        break\n"
        "block = b'x' * (200 * 1024 ** 2)\ntime.sleep(30)",
    ],
)
def test_memory_bomb(sandbox: PythonCoderTool, code: str) -> None:
    forks = "os.fork()" in code
    if forks and not sandbox._backend.worker_uids():
        pytest.skip("the aggregate memory cap needs a private uid (root)")
    result = sandbox.execute(code=code.replace("MAX", str(MAX_PROCESSES)))
    data = assert_clean_error(result, "memory")
    assert "Memory limit" in (result.error or "")
    if forks:  # stopped by the aggregate cap (the reason says so), not by the timeout
        assert_no_leftovers(sandbox)
    else:
        assert data.exception is not None and data.exception.type in {
            "MemoryError",
            "_ArrayMemoryError",
        }
    assert_still_works(sandbox)


def test_hundred_megabytes_of_output(sandbox: PythonCoderTool) -> None:
    start = time.monotonic()
    result = sandbox.execute(
        code="import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1024 * 1024)"
    )
    data = assert_clean_error(result, "output_limit")
    assert data.truncated and "output truncated" in data.stdout
    assert len(result.output) < 10_000
    assert time.monotonic() - start < TIMEOUT_S + 3
    assert_still_works(sandbox)


def test_one_gigabyte_file(sandbox: PythonCoderTool) -> None:
    code = (
        "import os\nprint(os.getcwd(), flush=True)\nwith open('big.bin', 'wb') as fh:\n"
        "    for _ in range(1024):\n        fh.write(b'\\0' * 1024 * 1024)"
    )
    result = sandbox.execute(code=code)
    data = assert_clean_error(result, "file_limit")
    assert "File size limit" in (result.error or "")
    cwd = Path(data.stdout.split()[0])
    if sandbox.isolation_level.startswith("process"):
        assert not cwd.exists()  # the call directory (and the partial file) are gone
    assert_still_works(sandbox)


# --- secrets, network, the checkout --------------------------------------------------------------
def test_host_secret_is_not_readable(sandbox: PythonCoderTool) -> None:
    assert os.environ[SECRET_NAME] == SECRET_VALUE
    code = (
        "import os\nprint(os.environ.get(%r))\nseen = []\n"  # noqa: UP031 (Python source: braces would need escaping)
        "for path in ['/proc/self/environ', '/proc/1/environ', '/proc/%d/environ']"
        " + ['/proc/%%s/environ' %% p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n        seen.append(open(path, 'rb').read().decode('latin-1'))\n"
        "    except OSError:\n        pass\nprint('|'.join(seen))" % (SECRET_NAME, os.getpid())
    )
    result = sandbox.execute(code=code)
    assert result.ok, result.error
    assert result.data["stdout"].startswith("None\n")
    assert SECRET_VALUE not in result.model_dump_json()


def test_tcp_to_a_local_listener_fails(sandbox: PythonCoderTool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = (
            "import socket\nsock = socket.create_connection(('127.0.0.1', %d), timeout=2)\n"  # noqa: UP031 (Python source: braces would need escaping)
            "sock.sendall(b'escaped')\nprint('connected')" % port
        )
        result = sandbox.execute(code=code)
        data = assert_clean_error(result, "exception")
        assert "connected" not in data.stdout
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever reached the listener


def test_project_checkout_is_out_of_reach(sandbox: PythonCoderTool) -> None:
    marker = ROOT / f"sandbox_escape_{uuid.uuid4().hex}.txt"
    host_tmp = Path("/tmp") / f"sandbox_escape_{uuid.uuid4().hex}.txt"
    code = (
        f"import os\nops = {{\n"
        f"    'read': lambda: open({str(ROOT / 'pyproject.toml')!r}).read(),\n"
        f"    'create': lambda: open({str(marker)!r}, 'w').write('x'),\n"
        f"    'append': lambda: open({str(ROOT / 'pyproject.toml')!r}, 'a').write('#'),\n"
        f"    'tmp': lambda: open({str(host_tmp)!r}, 'w').write('x'),\n"
        f"}}\nfor name, op in ops.items():\n    try:\n        op()\n"
        f"        print(name, 'DONE')\n    except OSError as exc:\n"
        f"        print(name, 'blocked', type(exc).__name__)\n"
        f"try:\n    print(sorted(os.listdir({str(ROOT)!r})))\n"
        f"except OSError as exc:\n    print([])"
    )
    result = sandbox.execute(code=code)
    assert result.ok, result.error
    *lines, listing = result.data["stdout"].splitlines()
    assert len(lines) == 4 and all(" blocked " in line for line in lines), lines
    # bwrap shows the checkout directory only as the mount point of its .venv (if the
    # interpreter lives there); none of the project's own files are visible
    visible = set(ast.literal_eval(listing))
    assert visible <= {Path(sys.prefix).name}, visible
    assert not marker.exists() and not host_tmp.exists()
    uncaught = sandbox.execute(code=f"print(open({str(ROOT / 'pyproject.toml')!r}).read())")
    assert_clean_error(uncaught, "exception")
    assert "agentflow-gym" not in uncaught.output


# --- crashes and exits ---------------------------------------------------------------------------
def test_sys_exit_nonzero(sandbox: PythonCoderTool) -> None:
    data = assert_clean_error(sandbox.execute(code="import sys\nsys.exit(3)"), "exit")
    assert data.exit_code == 3


def test_os_exit_keeps_earlier_output(sandbox: PythonCoderTool) -> None:
    result = sandbox.execute(code="import os\nprint('partial')\nos._exit(7)")
    data = assert_clean_error(result, "exit")
    assert data.exit_code == 7 and data.stdout == "partial\n"
    assert "status 7" in (result.error or "")


def test_ctypes_segfault(sandbox: PythonCoderTool) -> None:
    result = sandbox.execute(code="import ctypes\nctypes.string_at(0)")
    data = assert_clean_error(result, "killed")
    assert data.signal == "SIGSEGV"
    assert_still_works(sandbox)


def test_deep_recursion(sandbox: PythonCoderTool) -> None:
    code = "def f(n):\n    return f(n + 1)\nf(0)"
    data = assert_clean_error(sandbox.execute(code=code), "exception")
    assert data.exception is not None and data.exception.type == "RecursionError"
    assert len(data.exception.traceback) <= 4100
    unbounded = "import sys\nsys.setrecursionlimit(10 ** 8)\n" + code
    assert_clean_error(
        sandbox.execute(code=unbounded), {"killed", "memory", "exception", "timeout"}
    )
    assert_still_works(sandbox)


def test_missing_module(sandbox: PythonCoderTool) -> None:
    result = sandbox.execute(code="import module_that_does_not_exist_42")
    data = assert_clean_error(result, "exception")
    assert data.exception is not None and data.exception.type == "ModuleNotFoundError"


def test_forged_report_is_not_trusted(sandbox: PythonCoderTool) -> None:
    code = (
        "import os, json\nos.write(3, json.dumps({'exit_reason': 'bogus', "
        "'exception': {'nope': 1}, 'exit_code': 'x'}).encode())\nos._exit(0)"
    )
    result = sandbox.execute(code=code)
    assert_clean_error(result, "sandbox_error")
    assert_still_works(sandbox)


def test_after_the_suite_everything_still_works(sandbox: PythonCoderTool) -> None:
    result = sandbox.execute(
        code="from fractions import Fraction\nprint(Fraction(1, 3) + Fraction(1, 6))\nanswer = 42"
    )
    assert result.ok
    assert result.data["stdout"] == "1/2\n" and result.data["variables"] == {"answer": "42"}
    assert sandbox._backend.restarts == 0
    assert_no_leftovers(sandbox)
