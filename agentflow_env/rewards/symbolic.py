"""Symbolic equivalence of math answers with Math-Verify, in a child process with a time bound.

Math-Verify (Hugging Face's ``math-verify``, the optional ``[math]`` extra) parses LaTeX into
SymPy and compares expressions, sets and intervals (``2^5+1`` equals ``33``, ``\\sqrt{8}``
equals ``2\\sqrt{2}``). Its own timeouts use ``signal.alarm``, which fails off the main thread,
and SymPy cannot be interrupted from another thread; the env scores from worker threads. So the
comparison runs in one long-lived child process (``_symbolic_worker``): each request has a
wall-clock bound, and a request that runs over kills the child (a fresh one starts on the next
request) and counts as "not shown equal". Inputs are also capped at :data:`MAX_SYMBOLIC_CHARS`.

Without Math-Verify, :func:`symbolic_equal` returns None and the caller keeps its exact
numeric and text comparison. The child is Linux/macOS only (it is read with ``select``).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["symbolic_available", "symbolic_equal", "SymbolicChecker", "MAX_SYMBOLIC_CHARS"]

logger = logging.getLogger(__name__)

MAX_SYMBOLIC_CHARS = 400
"""Longer answers are not parsed symbolically (no gold answer is near this)."""
REQUEST_TIMEOUT_S = 5.0
START_TIMEOUT_S = 60.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def symbolic_available() -> bool:
    """Whether Math-Verify is installed (``pip install 'agentflow-gym[math]'``)."""
    return importlib.util.find_spec("math_verify") is not None


class SymbolicChecker:
    """One Math-Verify child process, shared by all threads (requests are serialized).

    ``equal(pred, gold)`` returns True/False, or None when undecided: Math-Verify missing, the
    child failed, or the request ran past ``timeout_s`` (the child is then killed and restarted
    on the next request). Never raises for what a prediction contains.
    """

    def __init__(self, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self.version: str | None = None
        self.unavailable: str | None = None  # why Math-Verify could not load, once known
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._buffer = b""
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes] | None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentflow_env.rewards._symbolic_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=_PACKAGE_ROOT,  # -m puts the cwd first on sys.path: import this very package
            env=env,
        )
        self._proc, self._pid, self._buffer = proc, os.getpid(), b""
        hello = self._read_line(time.monotonic() + START_TIMEOUT_S)
        if hello is None or not hello.get("ready"):
            why = (hello or {}).get("error", "the Math-Verify worker did not start")
            self.unavailable = str(why)
            logger.warning("symbolic math checking is off: %s", why)
            self.close()
            return None
        self.version = str(hello.get("version"))
        return proc

    def _read_line(self, deadline: float) -> dict | None:
        """One JSON line from the child before ``deadline``; None on timeout or exit."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            return None
        return reply if isinstance(reply, dict) else None

    def equal(self, pred: str, gold: str) -> bool | None:
        """Whether Math-Verify shows ``pred`` equivalent to ``gold`` (None: undecided)."""
        if len(pred) > MAX_SYMBOLIC_CHARS or len(gold) > MAX_SYMBOLIC_CHARS:
            return None
        if self.unavailable is not None:
            return None
        with self._lock:
            if self._proc is None or self._pid != os.getpid() or self._proc.poll() is not None:
                self._proc = None  # never reuse a child inherited through fork
                if self._start() is None:
                    return None
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            request = json.dumps({"pred": pred, "gold": gold}).encode() + b"\n"
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.close()
                return None
            reply = self._read_line(time.monotonic() + self.timeout_s)
            if reply is None:
                logger.warning(
                    "symbolic check of %r against %r gave no answer in %.1f s; "
                    "restarting the Math-Verify worker",
                    pred[:80],
                    gold[:80],
                    self.timeout_s,
                )
                self.close()
                return None
            if "error" in reply:
                logger.debug("Math-Verify error on %r vs %r: %s", pred[:80], gold, reply["error"])
                return None
            return bool(reply.get("equal"))

    def close(self) -> None:
        """Stop the child (a later request starts a new one)."""
        proc, self._proc = self._proc, None
        if proc is None or self._pid != os.getpid():
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


_checker: SymbolicChecker | None = None
_checker_lock = threading.Lock()


def _shared() -> SymbolicChecker:
    global _checker
    with _checker_lock:
        if _checker is None:
            _checker = SymbolicChecker()
            atexit.register(_checker.close)
        return _checker


def symbolic_equal(pred: str, gold: str) -> bool | None:
    """Math-Verify's verdict on ``pred`` vs ``gold`` from the shared checker; None when
    Math-Verify is not installed, the inputs are too long, or the check timed out."""
    if not symbolic_available():
        return None
    return _shared().equal(pred, gold)
