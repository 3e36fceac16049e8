"""Pre-forked sandbox children (issue 17): each worker keeps its next child forked and confined
before the call arrives, and each child serves one call.

What must still hold: no call sees a previous call's state, a waiting child killed from outside is
replaced without losing a call, the timeout covers the run only and still kills, concurrent
callers get their own results, and (in bubblewrap) the memory holder that spares the child's exit
its address-space teardown is unreachable from the snippet and never outlives its call.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.python_coder import PythonCoderTool

HAS_BWRAP = shutil.which("bwrap") is not None
LEVELS = ["process"] + (["strict"] if HAS_BWRAP else [])
SMALL_PRELOAD = ("math", "random", "json")


@pytest.fixture(scope="module", params=LEVELS)
def single(request: pytest.FixtureRequest) -> Iterator[PythonCoderTool]:
    """One worker, so consecutive calls run in children forked by the same server."""
    with PythonCoderTool(
        isolation=request.param, timeout_s=5, pool_size=1, preload=SMALL_PRELOAD
    ) as t:
        yield t


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, session id, real uid) of every process on the host."""
    table = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        table[int(name)] = (int(fields[1]), int(fields[3]), int(uid_line.split()[1]))
    return table


def _descendants(root: int, table: dict[int, tuple[int, int, int]]) -> set[int]:
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def waiting_children(tool: PythonCoderTool) -> list[int]:
    """Host pids of the children waiting for a call: root processes under the tool's workers
    whose working directory is a call directory (the memory holder keeps the worker's)."""
    table = _proc_table()
    found = []
    for worker in tool._backend.worker_pids():
        for pid in _descendants(worker, table):
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if table[pid][2] == 0 and "/calls/call-" in cwd:
                found.append(pid)
    return found


def wait_for(predicate, timeout_s: float = 10.0) -> bool:  # noqa: ANN001 - a small test helper
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# --- no state crosses calls ------------------------------------------------------------------
def test_a_call_never_sees_the_previous_calls_state(single: PythonCoderTool) -> None:
    token = uuid.uuid4().hex
    first = single.execute(
        code=(
            "import builtins, json, math, os, random, sys, types\n"
            f"open('left.txt', 'w').write('{token}')\n"
            f"os.environ['LEFT'] = '{token}'\n"
            "math.pi = 3\njson.LEFT = 1\nbuiltins.LEFT = 1\nLEFT = 1\n"
            "sys.modules['left_module'] = types.ModuleType('left_module')\n"
            "sys.path.append('/left')\nrandom.seed(7)\nprint(os.getcwd())"
        )
    )
    assert first.ok, first.error
    first_dir = first.data["stdout"].strip()
    # the next child was forked and set up while (or right after) the first call ran
    assert wait_for(lambda: len(waiting_children(single)) == 1)
    second = single.execute(
        code=(
            "import builtins, json, math, os, random, sys\n"
            "print(sorted(os.listdir('.')), os.environ.get('LEFT'), math.pi)\n"
            "print(hasattr(json, 'LEFT'), hasattr(builtins, 'LEFT'), 'LEFT' in globals())\n"
            "print('left_module' in sys.modules, '/left' in sys.path)\n"
            "print(os.path.exists(" + repr(first_dir) + "), os.getcwd())\n"
            "random.seed(7)\nseeded = random.random()"
        )
    )
    assert second.ok, second.error
    lines = second.data["stdout"].splitlines()
    assert lines[0] == "[] None 3.141592653589793"
    assert lines[1] == "False False False"
    assert lines[2] == "False False"
    exists, cwd = lines[3].split()
    assert exists == "False" and cwd != first_dir


def test_each_child_serves_one_call(single: PythonCoderTool) -> None:
    pids = [single.execute(code="import os\nprint(os.getpid())").data["stdout"] for _ in range(6)]
    assert len(set(pids)) == 6


def test_fresh_random_state_in_pre_forked_children(single: PythonCoderTool) -> None:
    outputs = {single.execute(code="import random\nprint(random.random())").data["stdout"]}
    for _ in range(4):
        outputs.add(single.execute(code="import random\nprint(random.random())").data["stdout"])
    assert len(outputs) == 5


def test_numpy_random_state_is_fresh_in_every_child() -> None:
    """The worker gives numpy's global generator a new state from OS entropy before each fork:
    a seed set by one call never reaches the next, and no two calls draw the same numbers."""
    draw = "import numpy\nprint(numpy.random.random(), numpy.random.randint(1 << 62))"
    with PythonCoderTool(
        isolation=LEVELS[-1], timeout_s=5, pool_size=1, preload=("numpy",)
    ) as tool:
        seeded = tool.execute(code="import numpy\nnumpy.random.seed(0)\n" + draw[13:])
        draws = [tool.execute(code=draw) for _ in range(5)]
    assert seeded.ok and all(d.ok for d in draws), [d.error for d in draws]
    outputs = [d.data["stdout"] for d in draws]
    assert len(set(outputs)) == 5
    assert seeded.data["stdout"] not in outputs
    assert seeded.data["stdout"].split()[0] == "0.5488135039273248"  # seed 0 still works


# --- a waiting child killed from outside -----------------------------------------------------
def test_killed_waiting_child_is_replaced_and_the_next_call_succeeds(
    single: PythonCoderTool,
) -> None:
    restarts = single._backend.restarts
    assert single.execute(code="print(1)").ok
    assert wait_for(lambda: len(waiting_children(single)) == 1)
    (victim,) = waiting_children(single)
    os.kill(victim, signal.SIGKILL)
    # replaced while idle: a new child waits, the worker itself was not restarted
    assert wait_for(lambda: waiting_children(single) not in ([], [victim]))
    result = single.execute(code="print('after the kill')")
    assert result.ok and result.data["stdout"] == "after the kill\n"
    assert single._backend.restarts == restarts


def test_call_racing_the_kill_of_its_waiting_child_still_runs(single: PythonCoderTool) -> None:
    restarts = single._backend.restarts
    for i in range(3):
        assert wait_for(lambda: len(waiting_children(single)) == 1)
        (victim,) = waiting_children(single)
        os.kill(victim, signal.SIGKILL)
        result = single.execute(code=f"print({i})")  # no wait: the call may meet the dead child
        assert result.ok and result.data["stdout"] == f"{i}\n", result.error
    assert single._backend.restarts == restarts


# --- timeouts ------------------------------------------------------------------------------------
def test_waiting_time_does_not_count_and_timeouts_still_kill() -> None:
    with PythonCoderTool(timeout_s=1, pool_size=1, preload=SMALL_PRELOAD) as t:
        time.sleep(1.5)  # the child has been waiting longer than the timeout
        result = t.execute(code="import time\ntime.sleep(0.5)\nprint('in time')")
        assert result.ok and result.data["stdout"] == "in time\n"
        start = time.monotonic()
        looped = t.execute(
            code="import os\nif os.fork() == 0:\n    while True: pass\nwhile True: pass"
        )
        assert looped.data["exit_reason"] == "timeout"
        assert time.monotonic() - start < 4
        uids = t._backend.worker_uids()
        if uids:
            table = _proc_table()
            assert [pid for pid, (_, _, uid) in table.items() if uid in uids] == []
        assert t.execute(code="print('alive')").data["stdout"] == "alive\n"


# --- concurrency ---------------------------------------------------------------------------------
@pytest.mark.parametrize("pool_size", [2, 4])
def test_eight_concurrent_callers_get_their_own_results(pool_size: int) -> None:
    with PythonCoderTool(timeout_s=10, pool_size=pool_size, preload=SMALL_PRELOAD) as t:
        results: dict[int, list[str]] = {}
        tokens = {i: uuid.uuid4().hex for i in range(8)}

        def caller(i: int) -> None:
            results[i] = [
                t.execute(code=f"import os\nx = '{tokens[i]}-{j}'\nprint(x, len(os.listdir('.')))")
                .data["stdout"]
                .strip()
                for j in range(10)
            ]

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert results == {i: [f"{tokens[i]}-{j} 0" for j in range(10)] for i in range(8)}
        assert t._backend.restarts == 0
        uids = t._backend.worker_uids()
        if uids:
            table = _proc_table()
            assert [pid for pid, (_, _, uid) in table.items() if uid in uids] == []


# --- the memory holder (bubblewrap) --------------------------------------------------------------
HOLDER_PROBE = """
import ctypes, os, signal
me = os.getpid()
others = []
for name in os.listdir('/proc'):
    if name.isdigit() and int(name) != me:
        status = open(f'/proc/{name}/status').read()
        fields = dict(line.split(':', 1) for line in status.splitlines() if ':' in line)
        caught = int(fields['SigCgt'], 16)
        others.append((int(name), fields['Uid'].split()[0], int(fields['PPid']), caught))
holders = [pid for pid, uid, ppid, _ in others if uid == '0' and ppid == os.getppid()]
print(len(others), len(holders))
# the worker catches signals (SIGINT at least); its handlers are reset before the holder starts
worker_catches = [c for pid, _, _, c in others if pid == os.getppid()][0] != 0
holder_catches = [c for p, _, _, c in others if p in holders]
print('worker catches', worker_catches, 'holder catches', holder_catches)
for pid in holders:
    try:
        os.kill(pid, signal.SIGKILL)
        print('signalled')
    except PermissionError:
        print('kill refused')
try:
    open('/proc/self/mem', 'r+b')
    print('mem writable')
except PermissionError:
    print('mem refused')
libc = ctypes.CDLL(None, use_errno=True)
pause = ctypes.cast(libc.pause, ctypes.c_void_p).value
for line in open('/proc/self/maps'):
    low, high = (int(x, 16) for x in line.split()[0].split('-'))
    if low <= pause < high:
        rc = libc.mprotect(ctypes.c_void_p(low), ctypes.c_size_t(high - low), 7)
        print('mprotect', rc, os.strerror(ctypes.get_errno()))
try:
    os.waitpid(-1, os.WNOHANG)
    print('has a child')
except ChildProcessError:
    print('no child')
"""


SIGNALS_PROBE = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import holder
signal.signal(signal.SIGUSR1, lambda *_: None)
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if this process started ignoring it
caught = holder.caught_signals()  # in the worker, before the fork
pid = os.fork()
if pid == 0:
    holder.reset_signal_handlers(caught)
    print(holder.caught_signals(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(signal.SIGUSR1 in caught, signal.SIGINT in caught, signal.SIGKILL in caught)
"""


def test_handlers_the_worker_has_are_reset_in_its_child() -> None:
    """The worker reads which signals it catches (the kernel's view) before each fork; the child
    resets them before it starts its memory holder, which must have no handler at all."""
    sandbox_dir = Path(__file__).resolve().parents[2] / "tools" / "sandbox"
    out = subprocess.run(
        [sys.executable, "-I", "-c", SIGNALS_PROBE, str(sandbox_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines() == ["[]", "True True False"]


@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) is not installed")
def test_memory_holder_is_out_of_the_snippets_reach_and_dies_with_its_call(
    sigint_caught: None,
) -> None:
    with PythonCoderTool(isolation="strict", timeout_s=5, pool_size=1, preload=SMALL_PRELOAD) as t:
        if not t._backend.pool.features.get("memory_holder"):
            pytest.skip("no memory holder here (needs root, Landlock and mseal)")
        for _ in range(3):
            result = t.execute(code=HOLDER_PROBE)
            assert result.ok, result.error
            # bwrap's init, the worker and this call's holder: no holder of an earlier call and
            # no waiting child (the next one is forked after this call)
            assert result.data["stdout"].splitlines() == [
                "3 1",
                "worker catches True holder catches [0]",
                "kill refused",
                "mem refused",
                "mprotect -1 Operation not permitted",
                "no child",
            ]
        # an exit that skips the runner's closing of the pipes (they are shared with the holder)
        quick = t.execute(code="import os\nprint('partial', flush=True)\nos._exit(4)")
        assert quick.data["exit_reason"] == "exit" and quick.data["stdout"] == "partial\n"
        assert quick.data["duration_s"] < 1.0  # not the supervisor's 1 s drain
