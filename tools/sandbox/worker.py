"""Fork server: the long-lived sandbox worker process (run as a script, never imported by the host).

Started by :mod:`tools.sandbox.pool` as ``python -I worker.py``, directly or inside bubblewrap.
It speaks length-prefixed JSON on fds 0/1 with its host. It never runs untrusted code itself: for
every call it forks a fresh child which confines itself (:mod:`confine`) and runs the snippet
(:mod:`runner`); so no state leaks from one call to the next, and a call costs a ``fork`` instead
of an interpreter start-up. Each call gets a private directory that is removed afterwards.

Process-tree kill: when the worker runs as root, every child of a call runs under a uid private to
this worker. After the call (or at its timeout), the worker takes that uid as its real/effective
uid and sends SIGKILL to ``-1``: the kernel then signals exactly the processes of that uid,
wherever they went (new sessions, double forks), and nothing else. The worker is a child
subreaper, so orphans come back to it and get reaped.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import struct
import sys
import time
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import confine  # noqa: E402  (sibling module, loaded from the worker's own directory)
import runner  # noqa: E402

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 64 * 1024 * 1024
_READ_CHUNK = 65536
_REPORT_CAP = 4 * 1024 * 1024
_PR_SET_CHILD_SUBREAPER = 36
_KILL_DEADLINE_S = 5.0
_MEMORY_CHECK_S = 0.05


class Channel:
    """Length-prefixed JSON messages over two file descriptors."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd

    def _read_exact(self, n: int) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            data = os.read(self.rfd, n - got)
            if not data:
                return None
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def recv(self) -> dict[str, Any] | None:
        head = self._read_exact(_HEADER.size)
        if head is None:
            return None
        (size,) = _HEADER.unpack(head)
        if size > _MAX_MESSAGE:
            raise ValueError(f"message of {size} bytes exceeds the protocol limit")
        body = self._read_exact(size)
        return None if body is None else json.loads(body)

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode("utf-8", "backslashreplace")
        view = memoryview(_HEADER.pack(len(body)) + body)
        while view:
            view = view[os.write(self.wfd, view) :]


class _Sink:
    """Output of one call: bytes kept per pipe (up to a cap) and bytes seen in total."""

    def __init__(self, caps: dict[int, int]) -> None:
        self.caps = caps
        self.data = {fd: bytearray() for fd in caps}
        self.totals = dict.fromkeys(caps, 0)
        self.open_fds = set(caps)

    def read(self, fd: int) -> bool:
        """Read what is available on ``fd``; False (and the fd is done) at end of file."""
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            self.open_fds.discard(fd)
            return False
        self.totals[fd] += len(chunk)
        room = self.caps[fd] - len(self.data[fd])
        if room > 0:
            self.data[fd] += chunk[:room]
        return True


class Worker:
    """State of one fork server: its configuration and its per-call bookkeeping."""

    def __init__(self, init: dict[str, Any]) -> None:
        self.call_root: str = init["call_root"]
        self.env: dict[str, str] = dict(init.get("env") or {})
        self.read_only: list[str] | None = init.get("landlock_read")
        self.drop = os.geteuid() == 0 and init.get("uid") is not None
        # the private uid of the call's processes (only meaningful when ``drop``)
        self.uid: int = int(init["uid"]) if self.drop else -1
        self.preloaded = _preload(init.get("preload") or [])
        if "numpy" in sys.modules:
            # the first reseed costs ~10 ms of lazy set-up; pay it once here, not in every child
            sys.modules["numpy"].random.seed(None)
        self.seccomp = confine.SeccompProgram.build(deny_new_processes=not self.drop)
        self.baseline_anon = confine.own_anonymous_memory()
        self.calls = 0
        self.devnull = os.open(os.devnull, os.O_RDWR)
        os.makedirs(self.call_root, mode=0o711, exist_ok=True)
        self.landlock_abi = confine.landlock_abi() if init.get("landlock", True) else 0
        self.landlock: confine.LandlockRuleset | None = None
        if self.landlock_abi:
            # Full access beneath the call root: during a call only that call's directory
            # exists there, and it is the only one the call's uid may write by ownership.
            self.landlock = confine.LandlockRuleset(
                self.landlock_abi, [self.call_root], self.read_only, rw_files=[os.devnull]
            )

    def features(self) -> dict[str, Any]:
        return {
            "uid": self.uid if self.drop else None,
            "drop": self.drop,
            "seccomp": self.seccomp is not None,
            "landlock": self.landlock_abi if self.landlock is not None else 0,
            "preloaded": self.preloaded,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
        }

    # -- one call --------------------------------------------------------------------------
    def run(self, code: str, limits: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        call_dir = os.path.join(self.call_root, f"call-{self.calls}")
        os.mkdir(call_dir, 0o700)
        if self.drop:
            os.chown(call_dir, self.uid, self.uid)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        rep_r, rep_w = os.pipe()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported through the pipes
            self._child(code, limits, call_dir, out_w, err_w, rep_w)
        for fd in (out_w, err_w, rep_w):
            os.close(fd)
        try:
            result = self._supervise(pid, limits, start, out_r, err_r, rep_r)
        finally:
            for fd in (out_r, err_r, rep_r):
                _close_quietly(fd)
            shutil.rmtree(call_dir, ignore_errors=True)
        result["duration_s"] = time.monotonic() - start
        return result

    def _child(
        self, code: str, limits: dict[str, Any], call_dir: str, out_w: int, err_w: int, rep_w: int
    ) -> None:
        exit_code = 70
        report_fd = rep_w  # fd 3 may still be a protocol fd until the dup2 below
        try:
            os.setsid()
            os.dup2(self.devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(rep_w, 3)
            report_fd = 3
            if self.landlock is not None:
                self.landlock.enforce()  # before closerange: it needs the ruleset's fd
            os.closerange(4, 1 << 16)
            os.chdir(call_dir)
            os.environ.clear()
            os.environ.update(self.env, HOME=call_dir, TMPDIR=call_dir, PWD=call_dir)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            confine.apply_rlimits(limits, nproc=limits["max_processes"] if self.drop else None)
            if self.drop:
                confine.drop_privileges(self.uid, self.uid)
            if self.seccomp is not None:
                self.seccomp.install()
            _fresh_interpreter_state()
            exit_code = runner.run_snippet(
                code, 3, int(limits["max_variables"]), int(limits["max_repr_chars"])
            )
        except BaseException as exc:  # setup failed: report it, never run the code unconfined
            try:
                message = json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"})
                os.write(report_fd, message.encode())
            except BaseException:
                pass
        finally:
            os._exit(exit_code)

    def _supervise(
        self, pid: int, limits: dict[str, Any], start: float, out_r: int, err_r: int, rep_r: int
    ) -> dict[str, Any]:
        """Collect output until the call ends; enforce the timeout, output and memory caps."""
        cap = int(limits["max_output_bytes"])
        kill_at = cap * int(limits["output_kill_factor"])
        deadline = start + float(limits["timeout_s"])
        memory_cap = int(limits["memory_mb"]) * 1024 * 1024
        next_memory_check = start + _MEMORY_CHECK_S
        sink = _Sink({out_r: cap, err_r: cap, rep_r: _REPORT_CAP})
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in (out_r, err_r, rep_r, pidfd):
            poller.register(fd, select.POLLIN | select.POLLHUP)
        status, rusage, reason = None, None, None
        try:
            while sink.open_fds or status is None:
                now = time.monotonic()
                if status is not None:
                    timeout_ms = 1000  # only draining buffered output after the kill
                elif now >= deadline:
                    reason = "timeout"
                    break
                else:
                    if self.drop and now >= next_memory_check:
                        if self._over_memory(memory_cap):
                            reason = "memory"
                            break
                        next_memory_check = now + _MEMORY_CHECK_S
                    wake = min(deadline, next_memory_check) if self.drop else deadline
                    timeout_ms = max(1, int((wake - now) * 1000) + 1)
                events = poller.poll(timeout_ms)
                if not events and status is not None:
                    break  # a stray writer kept a pipe open: stop waiting for it
                for fd, _ in events:
                    if fd == pidfd:
                        poller.unregister(pidfd)
                        _, status, rusage = os.wait4(pid, 0)
                        self._kill_stragglers(pid)
                    elif not sink.read(fd):
                        poller.unregister(fd)
                if sink.totals[out_r] + sink.totals[err_r] > kill_at:
                    reason = "output_limit"
                    break
        finally:
            os.close(pidfd)
        if status is None:  # timeout or a cap: kill the whole tree, then collect the status
            status, rusage = self._terminate(pid)
        return _build_result(
            sink.data[out_r],
            sink.data[err_r],
            bytes(sink.data[rep_r]),
            sink.totals[out_r],
            sink.totals[err_r],
            cap,
            status,
            rusage,
            reason,
            limits,
        )

    def _over_memory(self, cap: int) -> bool:
        """Whether the call's processes together hold more than ``cap`` bytes.

        RLIMIT_AS already caps each process; this catches many processes each under it. Forked
        processes share the server's anonymous pages (the preloaded modules) copy-on-write, and
        RssAnon counts them in each: the shared baseline is counted once.
        """
        sizes = confine.anonymous_memory_of(self.uid)
        if len(sizes) < 2:
            return False
        base = self.baseline_anon
        return base + sum(max(0, size - base) for size in sizes) > cap

    def _terminate(self, pid: int) -> tuple[int, Any]:
        """SIGKILL the call's main process ``pid`` and everything else it started; reap it."""
        end = time.monotonic() + _KILL_DEADLINE_S
        while True:
            self._signal_call(pid)
            got, status, rusage = os.wait4(pid, os.WNOHANG)
            if got == pid:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"the call's process {pid} survived SIGKILL")
            time.sleep(0.0005)
        self._kill_stragglers(pid)
        return status, rusage

    def _kill_stragglers(self, pid: int) -> None:
        """Kill every process the call left behind, wherever it went, and reap what comes back.

        Called after the call's main process ``pid`` has been reaped.
        """
        if not self.drop:
            # children could not fork (seccomp): only the group can be left
            self._signal_call(pid)
            return
        end = time.monotonic() + _KILL_DEADLINE_S
        while True:
            _reap_orphans()
            if not confine.processes_of(self.uid):
                return
            if time.monotonic() > end:
                raise RuntimeError("processes of the call survived SIGKILL")
            self._signal_call(pid)
            time.sleep(0.0005)

    def _signal_call(self, pid: int) -> None:
        """Send SIGKILL to the call's process group and, with a private uid, to all of its
        processes."""
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self.drop:
            return
        uid = self.uid
        os.setresuid(uid, uid, 0)
        try:
            # Only with real AND effective uid == the call's uid (no capability in effect) may
            # kill(-1) run: the kernel then signals exactly that uid's processes, even ones
            # forked while it walks the list, and nothing else.
            if os.getresuid() != (uid, uid, 0):
                raise PermissionError("could not take the call's uid to kill its processes")
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.setresuid(0, 0, 0)


def _build_result(
    out: bytearray,
    err: bytearray,
    report_raw: bytes,
    out_total: int,
    err_total: int,
    cap: int,
    status: int,
    rusage: Any,
    reason: str | None,
    limits: dict[str, Any],
) -> dict[str, Any]:
    truncated = out_total > cap or err_total > cap
    result: dict[str, Any] = {
        "op": "result",
        "stdout": _text(out, out_total, cap),
        "stderr": _text(err, err_total, cap),
        "truncated": truncated,
        "exception": None,
        "variables": {},
        "exit_code": None,
        "signal": None,
        "exit_reason": reason or "ok",
    }
    if reason is not None:
        return result
    report: dict[str, Any] | None = None
    if report_raw:
        try:
            report = json.loads(report_raw)
        except ValueError:
            report = None
    if isinstance(report, dict) and "setup_error" in report:
        result.update(
            exit_reason="sandbox_error",
            exception={
                "type": "SandboxSetupError",
                "message": str(report["setup_error"]),
                "traceback": "",
            },
        )
        return result
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        cpu_used = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
        hit_cpu = sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and cpu_used >= float(limits["cpu_s"]) - 0.05
        )
        result.update(exit_reason="cpu" if hit_cpu else "killed", signal=_signal_name(sig))
        return result
    exit_code = os.WEXITSTATUS(status)
    if isinstance(report, dict):
        result.update(
            exit_reason=report.get("exit_reason", "ok"),
            exception=report.get("exception"),
            variables=report.get("variables") or {},
            exit_code=report.get("exit_code"),
        )
    else:  # no report: the snippet left through os._exit (or closed the report pipe)
        result.update(exit_reason="exit", exit_code=exit_code)
    return result


def _text(buf: bytearray, total: int, cap: int) -> str:
    text = bytes(buf).decode("utf-8", "replace")
    if total > cap:
        text += f"\n... [output truncated: {total} bytes written, first {cap} kept] ..."
    return text


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _reap_orphans() -> None:
    """Reap every exited child (orphans of the call come back to this subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _preload(names: list[str]) -> list[str]:
    """Import modules once in the server so children start with them (and need not read them
    from disk, which an unprivileged uid may not be allowed to do)."""
    loaded = []
    for name in names:
        try:
            __import__(name)
            loaded.append(name)
        except BaseException:  # an optional library that is absent or broken is just skipped
            continue
    return loaded


def _fresh_interpreter_state() -> None:
    """Make the forked child look like a fresh interpreter running a script."""
    sys.argv = [runner.CODE_FILENAME]
    sys.path[:] = [p for p in sys.path if p != _HERE]
    for name in ("confine", "runner"):
        sys.modules.pop(name, None)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        # A forked child inherits numpy's legacy global RNG state; reseeding from OS entropy
        # gives each call what a fresh interpreter would have (not a fixed seed).
        numpy.random.seed(None)


def main() -> int:
    """Serve calls until the host closes the channel or sends ``exit``."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    # fd 1 becomes stderr: a stray print from a preloaded library must not corrupt the protocol
    os.dup2(2, 1)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    chan = Channel(proto_in, proto_out)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    init = chan.recv()
    if init is None or init.get("op") != "init":
        return 2
    worker = Worker(init)
    chan.send({"op": "ready", **worker.features()})
    while True:
        message = chan.recv()
        if message is None or message.get("op") == "exit":
            return 0
        if message.get("op") == "ping":
            chan.send({"op": "pong"})
            continue
        try:
            result = worker.run(str(message["code"]), dict(message["limits"]))
        except Exception as exc:  # the worker is now in doubt: report, then exit to be replaced
            chan.send(
                {
                    "op": "result",
                    "exit_reason": "sandbox_error",
                    "fatal": True,
                    "exception": {"type": type(exc).__name__, "message": str(exc), "traceback": ""},
                }
            )
            return 3
        chan.send(result)


if __name__ == "__main__":
    sys.exit(main())
