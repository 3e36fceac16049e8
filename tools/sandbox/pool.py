"""Host side of the local sandbox: worker processes and a thread-safe pool of them.

A :class:`WorkerHandle` owns one fork-server process (see :mod:`tools.sandbox.worker`) and talks to
it over pipes with a deadline on every read, so a wedged worker can never hang the caller: it is
killed and replaced. :class:`WorkerPool` lends workers to callers one at a time (several threads,
e.g. one per environment of a vector env, may call concurrently) and replaces dead ones
transparently on their next use.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import threading
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tools.log_excerpt import log_excerpt
from tools.sandbox.confine import processes_of
from tools.sandbox.launcher import LaunchSpec

__all__ = ["WorkerDied", "WorkerHandle", "WorkerPool"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 64 * 1024 * 1024
_UID_BASE = 1_000_000
_KILL_GRACE_S = 10.0
_STDERR_HEAD_LINES = 200
_STDERR_TAIL_LINES = 40
"""the worker may spend up to this long killing a call's processes after its timeout"""


class WorkerDied(RuntimeError):
    """The worker process exited, broke the protocol or stopped answering."""


class WorkerHandle:
    """One running fork server. Not thread-safe: the pool gives it to one caller at a time."""

    def __init__(
        self,
        spec: LaunchSpec,
        init: dict[str, Any],
        startup_timeout_s: float,
        spawner: ThreadPoolExecutor | None = None,
    ) -> None:
        self.spec = spec
        # The worker's stderr: its first lines (where a start-up failure says why) and its last.
        self._stderr_head: list[str] = []
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_dropped = 0
        # bwrap --die-with-parent ties the sandbox to the *thread* that forked it (Linux
        # PDEATHSIG semantics), so workers are spawned from the pool's long-lived spawner thread,
        # never from a caller's short-lived thread.
        if spawner is not None:
            self.proc = spawner.submit(_popen, spec).result()
        else:
            self.proc = _popen(spec)
        # A uid no other live worker can have: derived from this worker's host pid.
        self.uid = _UID_BASE + self.proc.pid
        self._buffer = b""
        self._stderr_thread = threading.Thread(
            target=self._pump_stderr, name=f"sandbox-stderr-{self.proc.pid}", daemon=True
        )
        self._stderr_thread.start()
        self.features: dict[str, Any] = {}
        try:
            self._send(
                {
                    "op": "init",
                    "uid": self.uid,
                    "call_root": spec.call_root,
                    "landlock_read": spec.landlock_read,
                    # a memory holder keeps the worker's credentials: only where namespaces
                    # confine them (see tools/sandbox/holder.py)
                    "hold_memory": spec.isolation == "bwrap",
                    **init,
                }
            )
            ready = self._recv(time.monotonic() + startup_timeout_s)
        except WorkerDied as exc:
            self.kill()
            self._stderr_thread.join(timeout=2)  # the dead worker's last words explain why
            raise WorkerDied(
                f"sandbox worker failed to start: {exc}; stderr: {self.stderr_tail() or '(empty)'}"
            ) from exc
        if ready.get("op") != "ready":
            self.kill()
            raise WorkerDied(f"unexpected first message from the sandbox worker: {ready}")
        self.features = ready

    # -- protocol ------------------------------------------------------------------------------
    def _pump_stderr(self) -> None:
        stream = self.proc.stderr
        if stream is None:  # pragma: no cover - always piped
            return
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if len(self._stderr_head) < _STDERR_HEAD_LINES:
                self._stderr_head.append(line)
            else:
                if len(self._stderr_tail) == self._stderr_tail.maxlen:
                    self._stderr_dropped += 1
                self._stderr_tail.append(line)
            logger.debug("sandbox worker %d: %s", self.proc.pid, line)

    def stderr_tail(self) -> str:
        """An excerpt of the worker's stderr: the lines naming the failure, then the last lines."""
        gap = [f"[... {self._stderr_dropped} lines left out ...]"] if self._stderr_dropped else []
        return log_excerpt(
            "\n".join([*self._stderr_head, *gap, *self._stderr_tail]), max_chars=4000
        )

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode("utf-8")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(_HEADER.pack(len(body)) + body)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise WorkerDied(f"cannot write to the sandbox worker ({exc})") from exc

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDied("the sandbox worker did not answer in time")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise WorkerDied(f"the sandbox worker exited (code {self.proc.poll()})")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _recv(self, deadline: float) -> dict[str, Any]:
        (size,) = _HEADER.unpack(self._read_exact(_HEADER.size, deadline))
        if size > _MAX_MESSAGE:
            raise WorkerDied(f"oversized message ({size} bytes) from the sandbox worker")
        try:
            message = json.loads(self._read_exact(size, deadline))
        except ValueError as exc:
            raise WorkerDied(f"malformed message from the sandbox worker: {exc}") from exc
        if not isinstance(message, dict):
            raise WorkerDied("malformed message from the sandbox worker")
        return message

    def call(self, code: str, limits: dict[str, Any]) -> dict[str, Any]:
        """Run one snippet; raises :class:`WorkerDied` if the worker is lost on the way."""
        self._send({"op": "run", "code": code, "limits": limits})
        deadline = time.monotonic() + float(limits["timeout_s"]) + _KILL_GRACE_S
        return self._recv(deadline)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def usable(self) -> bool:
        """Alive and idle: an idle worker never writes, so readable output means EOF or junk."""
        if not self.alive or self._buffer:
            return False
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout.fileno()], [], [], 0)
        return not readable

    # -- shutdown ------------------------------------------------------------------------------
    def close(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to exit, then make sure it is gone."""
        if self.alive:
            try:
                self._send({"op": "exit"})
                self.proc.wait(timeout=timeout_s)
            except (WorkerDied, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        """Kill the worker and everything it started; remove its host directories."""
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # bwrap and its sandbox, or the worker
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not get ignored
            logger.error("sandbox worker %d did not die after SIGKILL", self.proc.pid)
        # The worker is dead, so its stderr reaches EOF and the pump thread ends; closing the
        # stream after it avoids leaking the pipe (a ResourceWarning in users' code).
        self._stderr_thread.join(timeout=1)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self.spec.isolation == "process" and self.features.get("drop"):
            _kill_uid(self.uid)  # no PID namespace: the call's processes outlive the worker
        for path in self.spec.host_dirs:
            shutil.rmtree(path, ignore_errors=True)


def _popen(spec: LaunchSpec) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        spec.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=spec.env,
        start_new_session=True,
        close_fds=True,
    )


def _kill_uid(uid: int) -> None:
    """Kill every host process running as ``uid`` (a private, per-worker uid), from a helper
    process that itself runs as that uid and so can signal nothing else."""
    kill = shutil.which("kill")
    if kill is None:  # pragma: no cover - procps/util-linux are everywhere
        logger.warning("no `kill` executable: processes of uid %d may survive", uid)
        return
    for _ in range(100):
        if not processes_of(uid):
            return
        subprocess.run(
            [kill, "-KILL", "-1"],
            user=uid,
            group=uid,
            extra_groups=[],
            env={},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
        time.sleep(0.01)
    logger.error("processes of sandbox uid %d survived repeated SIGKILL", uid)


class _Slot:
    """A place in the pool; holds a live worker or None (started on next use)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.handle: WorkerHandle | None = None


class _FairQueue:
    """Idle slots handed to waiting callers in arrival order.

    With ``queue.Queue`` a caller that just returned a slot usually takes it straight back
    while others sleep, so with more callers than workers some wait many calls (measured: p95
    ~30x the median with 8 callers on 2 workers). Here a returned slot goes to the oldest waiter.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: deque[_Slot] = deque()
        self._waiters: deque[list[Any]] = deque()  # [event, slot or None]

    def put(self, slot: _Slot) -> None:
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter[1] = slot
                waiter[0].set()
            else:
                self._free.append(slot)

    def get_nowait(self) -> _Slot:
        with self._lock:
            if not self._free:
                raise queue.Empty
            return self._free.popleft()

    def get(self, timeout: float) -> _Slot:
        with self._lock:
            if self._free and not self._waiters:
                return self._free.popleft()
            waiter: list[Any] = [threading.Event(), None]
            self._waiters.append(waiter)
        if not waiter[0].wait(timeout):
            with self._lock:
                if waiter[1] is None:  # still waiting: give up
                    self._waiters.remove(waiter)
                    raise queue.Empty
        return waiter[1]


class WorkerPool:
    """Pre-started workers lent to one caller at a time; dead workers are replaced on next use."""

    def __init__(
        self,
        spec_factory: Any,
        size: int,
        init: dict[str, Any],
        startup_timeout_s: float = 60.0,
        acquire_timeout_s: float = 600.0,
    ) -> None:
        if size < 1:
            raise ValueError("pool_size must be >= 1")
        self._spec_factory = spec_factory
        self._init = init
        self._startup_timeout_s = startup_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._slots = [_Slot(i) for i in range(size)]
        self._idle = _FairQueue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.restarts = 0
        self.features: dict[str, Any] = {}
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")
        # if the owner never calls close(): kill the workers when the pool is collected or the
        # interpreter exits (process isolation would otherwise leave host temp dirs behind)
        self._finalizer = weakref.finalize(self, _kill_slots, self._slots)
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise
        for slot in self._slots:
            self._idle.put(slot)

    def _start_all(self) -> None:
        # Start every worker concurrently: each preloads libraries for a fraction of a second.
        errors: list[BaseException] = []

        def start(slot: _Slot) -> None:
            try:
                slot.handle = WorkerHandle(
                    self._spec_factory(), self._init, self._startup_timeout_s, self._spawner
                )
            except BaseException as exc:  # collected and re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in self._slots]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        first = self._slots[0].handle
        self.features = dict(first.features) if first is not None else {}

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def run(self, code: str, limits: dict[str, Any]) -> dict[str, Any]:
        """Run ``code`` on an idle worker. Never raises for worker failures: returns a
        ``sandbox_error`` result and replaces the worker."""
        if self.closed:
            return _error_result("the sandbox pool is closed")
        try:
            slot = self._idle.get(timeout=self._acquire_timeout_s)
        except queue.Empty:
            return _error_result("no sandbox worker became free in time")
        try:
            if self.closed:
                return _error_result("the sandbox pool is closed")
            handle = slot.handle
            if handle is None or not handle.usable():
                handle = self._replace(slot)
            try:
                result = handle.call(code, limits)
            except WorkerDied as exc:
                logger.warning(
                    "sandbox worker %d lost during a call: %s; stderr: %s",
                    handle.proc.pid,
                    exc,
                    handle.stderr_tail(),
                )
                self._discard(slot)
                return _error_result(
                    f"the sandbox worker died during the call ({exc}); it has been replaced"
                )
            if result.get("fatal"):
                self._discard(slot)
            return result
        except (WorkerDied, OSError, RuntimeError) as exc:  # spawn failed; retried next call
            logger.error("could not start a sandbox worker: %s", exc)
            return _error_result(f"could not start a sandbox worker: {exc}")
        finally:
            self._idle.put(slot)

    def _replace(self, slot: _Slot) -> WorkerHandle:
        self._discard(slot)
        with self._lock:
            self.restarts += 1
        handle = WorkerHandle(
            self._spec_factory(), self._init, self._startup_timeout_s, self._spawner
        )
        slot.handle = handle
        logger.info("sandbox worker slot %d (re)started as pid %d", slot.index, handle.proc.pid)
        return handle

    @staticmethod
    def _discard(slot: _Slot) -> None:
        if slot.handle is not None:
            slot.handle.kill()
            slot.handle = None

    def worker_uids(self) -> list[int]:
        """The private uids the live workers run snippets under (for monitoring and tests)."""
        return [
            s.handle.uid
            for s in self._slots
            if s.handle is not None and s.handle.alive and s.handle.features.get("drop")
        ]

    def worker_pids(self) -> list[int]:
        """Host pids of the live workers (for monitoring and tests)."""
        return [s.handle.proc.pid for s in self._slots if s.handle is not None and s.handle.alive]

    def close(self) -> None:
        """Stop every worker. Idempotent; calls made afterwards get an error result."""
        self._closed.set()
        idle: list[_Slot] = []
        while True:
            try:
                idle.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for slot in self._slots:
            handle = slot.handle
            if handle is None:
                continue
            if slot in idle:
                handle.close()
                slot.handle = None
            else:  # busy: its caller gets an error result and discards it
                handle.kill()
        for slot in idle:
            self._idle.put(slot)
        self._spawner.shutdown(wait=False)
        self._finalizer.detach()


def _kill_slots(slots: list[_Slot]) -> None:
    for slot in slots:
        if slot.handle is not None:
            slot.handle.kill()
            slot.handle = None


def _error_result(message: str) -> dict[str, Any]:
    return {
        "op": "result",
        "stdout": "",
        "stderr": "",
        "truncated": False,
        "variables": {},
        "exit_reason": "sandbox_error",
        "exit_code": None,
        "signal": None,
        "exception": {"type": "SandboxError", "message": message, "traceback": ""},
    }
