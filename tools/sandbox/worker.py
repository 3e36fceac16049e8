"""Fork server: the long-lived sandbox worker process (run as a script, never imported by the host).

Started by :mod:`tools.sandbox.pool` as ``python -I worker.py``, directly or inside bubblewrap.
It speaks length-prefixed JSON on fds 0/1 with its host. It never runs untrusted code itself: each
call runs in a fresh forked child which confines itself (:mod:`confine`) and runs the snippet
(:mod:`runner`), and each child serves exactly one call; so no state leaks from one call to the
next, and no call pays an interpreter start-up. Each call gets a private directory that is removed
afterwards.

Pre-forked children: the fork and every set-up step that does not depend on the call happen
before the call arrives. Right after a call's result is sent (and its processes are gone), the
worker gives numpy's global generator a new state, sets its own environment to the next call's,
and forks the next child (cheaply: :mod:`hugepages`). The child enforces Landlock and seccomp,
clones its memory holder (see :mod:`holder`: it makes the child's exit skip the teardown of its
address space), takes its own session, file descriptors and directory, then
blocks reading its call from a pipe. A call then costs the hand-off, what depends on it (rlimits
from its limits), the drop to the private uid, the run and the result. The waiting child drops
its privileges only once its call has arrived, so between calls no process of the call uid
exists, and a waiting child dies with the worker (parent-death signal; a uid change would clear
it). A child serves one call. What the child needs of the worker's state is set in the worker
where it can be: in the child, each first write to a page is a copy-on-write fault.

Process-tree kill: when the worker runs as root, every child of a call runs under a uid private to
this worker. After the call (or at its timeout), the worker takes that uid as its real/effective
uid and sends SIGKILL to ``-1``: the kernel then signals exactly the processes of that uid,
wherever they went (new sessions, double forks), and nothing else. Every process of a call has
been sent SIGKILL before its result goes out; the check that they are all gone (a scan of /proc)
runs after the result is sent and always before the next child is forked. The worker is a child
subreaper, so orphans come back to it and get reaped.
"""

from __future__ import annotations

import _signal
import ctypes
import gc
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

import calls  # noqa: E402  (sibling modules, loaded from the worker's own directory)
import confine  # noqa: E402
import holder  # noqa: E402
import hugepages  # noqa: E402
import results  # noqa: E402
import runner  # noqa: E402

_REPORT_CAP = 4 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_KILL_DEADLINE_S = 5.0
_MEMORY_CHECK_S = 0.05
_MT_KEY_WORDS = 624  # the Mersenne Twister's state
_IDLE_RESPAWNS = 3
"""waiting children replaced in a row without a call in between (then the next call forks one)"""


class Worker:
    """State of one fork server: its configuration, the waiting child, the call being cleaned."""

    def __init__(self, init: dict[str, Any]) -> None:
        self.call_root: str = init["call_root"]
        self.env: dict[str, str] = dict(init.get("env") or {})
        self.read_only: list[str] | None = init.get("landlock_read")
        self.drop = os.geteuid() == 0 and init.get("uid") is not None
        # the private uid of the call's processes (only meaningful when ``drop``)
        self.uid: int = int(init["uid"]) if self.drop else -1
        self.preloaded = _preload(init.get("preload") or [])
        self.numpy: Any = sys.modules.get("numpy")  # its random state: new before each fork
        if self.numpy is not None:
            _reseed_numpy(self.numpy)
        self.seccomp = confine.SeccompProgram.build(deny_new_processes=not self.drop)
        # The snippet's environment is exactly self.env with its call's HOME, TMPDIR and PWD: the
        # worker's own, set here and by prepare() just before each fork, not in the child, where
        # each first touch of a page is a copy-on-write fault (~0.55 ms per child that way).
        os.environ.clear()
        os.environ.update(self.env)
        self.streams = runner.output_streams()
        self.calls = 0
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.prctl = ctypes.CDLL(None, use_errno=True).prctl
        os.makedirs(self.call_root, mode=0o711, exist_ok=True)
        self.landlock_abi = confine.landlock_abi() if init.get("landlock", True) else 0
        self.landlock: confine.LandlockRuleset | None = None
        if self.landlock_abi:
            # Full access beneath the call root: during a call only that call's directory
            # exists there, and it is the only one the call's uid may write by ownership.
            self.landlock = confine.LandlockRuleset(
                self.landlock_abi, [self.call_root], self.read_only, rw_files=[os.devnull]
            )
        # Frozen, the preloaded modules are skipped by collections (which would copy them).
        gc.collect()
        gc.freeze()
        # cheaper forks (see hugepages.py); before the baseline below is taken
        huge = init.get("huge_pages", True)
        self.huge_pages_kb = hugepages.collapse_to_huge_pages() if huge else 0
        # see holder.py: only with a private uid (the snippet cannot signal it), Landlock (no
        # /proc/self/mem for writing), mseal, and inside namespaces
        self.hold_memory = bool(
            init.get("hold_memory") and self.drop and self.landlock and holder.supported()
        )
        self.holders = holder.Starter(holder.pause_text()) if self.hold_memory else None
        self.caught: list[int] = []  # signals the worker catches, reset in each child
        self.baseline_anon = confine.own_anonymous_memory()
        self.ready: calls.Child | None = None
        """the forked child waiting for the next call"""
        self.done: calls.Child | None = None
        """the last call's child, whose result is sent and whose clean-up is not finished"""
        self.idle_respawns = 0
        self.off_path: dict[str, float] = {}
        self.dying: set[int] = set()
        """killed memory holders not reaped yet (children of this worker)"""

    def features(self) -> dict[str, Any]:
        return {
            "uid": self.uid if self.drop else None,
            "drop": self.drop,
            "seccomp": self.seccomp is not None,
            "landlock": self.landlock_abi if self.landlock is not None else 0,
            "preloaded": self.preloaded,
            "prefork": True,
            "memory_holder": self.hold_memory,
            "huge_pages_kb": self.huge_pages_kb,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
        }

    # -- the next call's child ---------------------------------------------------------------
    def prepare(self) -> None:
        """Fork the next call's child; it sets itself up and waits for its code."""
        self.calls += 1
        call_dir = os.path.join(self.call_root, f"call-{self.calls}")
        os.mkdir(call_dir, 0o700)
        if self.drop:
            os.chown(call_dir, self.uid, self.uid)
        if self.numpy is not None:
            _reseed_numpy(self.numpy)
        os.environ.update(HOME=call_dir, TMPDIR=call_dir, PWD=call_dir)
        if self.holders is not None:
            self.caught = holder.caught_signals()
        code_r, code_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        rep_r, rep_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported through the pipes
            self._child(parent, call_dir, (code_r, ctl_w, out_w, err_w, rep_w))
        for fd in (code_r, ctl_w, out_w, err_w, rep_w):
            os.close(fd)
        os.set_blocking(code_w, False)
        os.set_blocking(ctl_r, False)
        self.ready = calls.Child(pid, call_dir, (code_w, ctl_r, out_r, err_r, rep_r))

    def _child(self, parent: int, call_dir: str, fds: tuple[int, int, int, int, int]) -> None:
        code_r, ctl_w, out_w, err_w, rep_w = fds
        exit_code = 70
        report_fd = rep_w  # fd 3 may still be a protocol fd until the dup2 below
        try:
            # killed with the worker while it waits (the privilege drop clears this later)
            self.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(0)  # the worker died before the line above took effect
            if self.landlock is not None:
                self.landlock.enforce()
            if self.seccomp is not None:
                self.seccomp.install()  # in force for everything below, the holder included
            # the C function: signal.signal's enum conversions cost ~0.25 ms of page faults here
            _signal.signal(signal.SIGINT, _signal.SIG_DFL)
            if self.holders is not None:
                holder.reset_signal_handlers(self.caught)
                holder_pid = self.holders.start()
                os.write(ctl_w, struct.pack(">i", holder_pid))  # the worker kills it
            else:
                os.write(ctl_w, struct.pack(">i", 0))
            os.setsid()  # after the holder: it stays in the worker's process group
            os.dup2(self.devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(rep_w, 3)
            os.dup2(code_r, 4)
            os.dup2(ctl_w, 5)
            report_fd = 3
            os.closerange(6, 1 << 16)
            os.chdir(call_dir)
            _fresh_interpreter_state()
            runner.prepare(self.streams)
            if self.hold_memory:  # long since there, as a rule; the snippet must not run before
                holder.wait_until_paused(holder_pid)
            os.write(5, calls.SET_UP)
            body = calls.read_to_end(4)  # blocks until the call arrives
            if not body:
                os._exit(0)  # the worker is shutting down: there will be no call
            os.write(5, calls.RECEIVED)  # from here on the call may have run
            os.closerange(4, 6)
            message = json.loads(body)
            code, limits = str(message["code"]), dict(message["limits"])
            confine.apply_rlimits(limits, nproc=limits["max_processes"] if self.drop else None)
            if self.drop:
                confine.drop_privileges(self.uid, self.uid)
            exit_code = runner.run_snippet(
                code, 3, int(limits["max_variables"]), int(limits["max_repr_chars"])
            )
            # end of file for the worker now (the holder shares this descriptor table)
            os.closerange(0, 1 << 16)
        except BaseException as exc:  # setup failed: report it, never run the code unconfined
            try:
                message = json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"})
                os.write(report_fd, message.encode())
            except BaseException:
                pass
        finally:
            os._exit(exit_code)

    def on_ready_exit(self) -> None:
        """The waiting child died before its call (killed from outside, or its set-up failed):
        clean up after it and fork another, unless that keeps happening (then the next call
        forks one and reports why it fails)."""
        child, self.ready = self.ready, None
        if child is None:
            return
        os.waitpid(child.pid, 0)
        child.swept = True  # it never left this module's code: nothing of it can remain
        self._retire(child)
        if self.idle_respawns < _IDLE_RESPAWNS:
            self.idle_respawns += 1
            self.prepare()

    # -- one call --------------------------------------------------------------------------
    def run(self, body: bytes, limits: dict[str, Any]) -> dict[str, Any]:
        """Hand the call to the waiting child and supervise it to the end; the clean-up that
        can wait is left to :meth:`finish`, after the result is sent."""
        self.idle_respawns = 0
        received = time.monotonic()
        self._reap_dying(block=False)
        for _ in range(2):
            if self.ready is None:
                self.prepare()
            child, self.ready = self.ready, None
            assert child is not None
            start = time.monotonic()
            ready = child.set_up()
            calls.hand_off(child, body, start + float(limits["timeout_s"]))
            handed = time.monotonic()
            result = self._supervise(child, limits, start)
            ended = time.monotonic()
            setup_error = (result.get("exception") or {}).get("type") == "SandboxSetupError"
            if child.received_call() or setup_error:
                break
            # it died while waiting, so the code never reached it: run it in a fresh child
            child.swept = True  # it never left this module's code: nothing of it can remain
            self._retire(child)
        else:
            raise RuntimeError("two prepared children died before their call")
        if not child.swept:
            # every process of the call gets SIGKILL before the result goes out; finish()
            # waits until they are gone
            self._quick_kill(child.pid)
        calls.remove_dir(child.call_dir)
        self.done = child
        now = time.monotonic()
        result["duration_s"] = now - start
        # where the worker's time went (seconds): for benchmarks/sandbox_latency.py
        result["timings"] = {
            "handoff": handed - received,
            "run": ended - handed,
            "result": now - ended,
            "child_was_set_up": float(ready),
            **self.off_path,
        }
        return result

    def finish(self) -> None:
        """After the result is sent: make sure the call's processes are gone, remove what is
        left, then fork the child for the next call (never before: calls do not overlap)."""
        child, self.done = self.done, None
        start = time.monotonic()
        if child is not None:
            self._retire(child)
        # The last call's memory is freed before the fork, not during it: both take the locks
        # of the worker's memory (its anon_vma); overlapped, forks took ~20 ms under load.
        self._reap_dying(block=True)
        freed = time.monotonic()
        self.prepare()
        # reported with the next call: work between two calls, off their critical path
        self.off_path = {
            "previous_cleanup": freed - start,
            "previous_fork": time.monotonic() - freed,
        }

    def shutdown(self) -> None:
        """Kill the waiting child (it runs only this module's code) and remove its directory."""
        child, self.ready = self.ready, None
        if child is not None:
            try:
                os.kill(child.pid, signal.SIGKILL)
                os.waitpid(child.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            child.swept = True
            self._retire(child)
            self._reap_dying(block=True)

    def _retire(self, child: calls.Child) -> None:
        """Kill what is left of a call whose main process is reaped and remove its directory.
        Its memory holder is killed first (it frees the call's memory meanwhile) and reaped
        later (:meth:`_reap_dying`)."""
        holder_pid = child.kill_holder()
        if holder_pid > 0:
            self.dying.add(holder_pid)
        if not child.swept:
            self._kill_stragglers(child.pid)
            child.swept = True
        self._reap_orphans()
        child.close()
        shutil.rmtree(child.call_dir, ignore_errors=True)

    def _reap_orphans(self) -> None:
        self.dying -= calls.reap_orphans()

    def _reap_dying(self, block: bool) -> None:
        """Reap killed memory holders: all of them (``block``), or those already gone."""
        for pid in list(self.dying):
            try:
                got, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                got = pid
            if got == pid:
                self.dying.discard(pid)

    def _supervise(
        self, child: calls.Child, limits: dict[str, Any], start: float
    ) -> dict[str, Any]:
        """Collect output until the call ends; enforce the timeout, output and memory caps."""
        cap = int(limits["max_output_bytes"])
        kill_at = cap * int(limits["output_kill_factor"])
        deadline = start + float(limits["timeout_s"])
        memory_cap = int(limits["memory_mb"]) * 1024 * 1024
        next_memory_check = start + _MEMORY_CHECK_S
        out_r, err_r, rep_r, pid = child.out_r, child.err_r, child.rep_r, child.pid
        sink = calls.Sink({out_r: cap, err_r: cap, rep_r: _REPORT_CAP})
        poller = select.poll()
        for fd in (out_r, err_r, rep_r, child.pidfd):
            poller.register(fd, select.POLLIN | select.POLLHUP)
        status, rusage, reason = None, None, None
        while sink.open_fds or status is None:
            now = time.monotonic()
            if status is not None:
                # The main process is gone. Take what its pipes already hold; if they are still
                # open after that, processes it left behind hold them: kill those, then drain.
                timeout_ms = 1000 if child.swept else 0
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
                if child.swept:
                    break  # a stray writer kept a pipe open: stop waiting for it
                # left open by processes of the call, or by an exit that skipped the closing
                # (os._exit, a crash): the holder shares the descriptors, it goes too
                child.kill_holder()
                self._kill_stragglers(pid)
                child.swept = True
                continue
            for fd, _ in events:
                if fd == child.pidfd:
                    poller.unregister(fd)
                    _, status, rusage = os.wait4(pid, 0)
                elif not sink.read(fd):
                    poller.unregister(fd)
            if sink.totals[out_r] + sink.totals[err_r] > kill_at:
                reason = "output_limit"
                break
        if status is None:  # timeout or a cap: kill the whole tree, then collect the status
            status, rusage = self._terminate(pid)
            child.swept = True
        return results.build_result(
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
            self._reap_orphans()
            if not confine.processes_of(self.uid):
                return
            if time.monotonic() > end:
                raise RuntimeError("processes of the call survived SIGKILL")
            self._signal_call(pid)
            time.sleep(0.0005)

    def _quick_kill(self, pid: int) -> None:
        """SIGKILL to whatever of the call may still run, without checking (see finish())."""
        if self.drop:
            self._kill_uid()
        else:
            calls.kill_quietly(os.killpg, pid)

    def _signal_call(self, pid: int) -> None:
        """Send SIGKILL to the call's process group and, with a private uid, to all of its
        processes."""
        calls.kill_quietly(os.killpg, pid)
        calls.kill_quietly(os.kill, pid)
        if self.drop:
            self._kill_uid()

    def _kill_uid(self) -> None:
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
    for name in ("calls", "confine", "holder", "results", "runner"):
        sys.modules.pop(name, None)


def _reseed_numpy(numpy: Any) -> None:
    """A new state from OS entropy for numpy's global generator, just before each fork: each
    child starts with a state no other call had. In the child, ``seed(None)`` cost ~0.9 ms
    (copy-on-write faults, mostly); here (no page shared) the 624-word key from ``os.urandom``
    ~0.1 ms."""
    key = numpy.frombuffer(os.urandom(_MT_KEY_WORDS * 4), dtype="<u4")
    numpy.random.set_state(("MT19937", key, _MT_KEY_WORDS, 0, 0.0))


def _host_speaks(proto_in: int, child: calls.Child | None) -> bool:
    """Block until the host writes (True) or the waiting child exits (False)."""
    poller = select.poll()
    poller.register(proto_in, select.POLLIN)
    if child is not None:
        poller.register(child.pidfd, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if proto_in in events:
            return True
        if events:
            return False


def main() -> int:
    """Serve calls until the host closes the channel or sends ``exit``."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    # fd 1 becomes stderr: a stray print from a preloaded library must not corrupt the protocol
    os.dup2(2, 1)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    chan = calls.Channel(proto_in, proto_out)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    init = chan.recv()
    if init is None or init.get("op") != "init":
        return 2
    worker = Worker(init)
    worker.prepare()
    chan.send({"op": "ready", **worker.features()})
    while True:
        if not _host_speaks(proto_in, worker.ready):
            try:
                worker.on_ready_exit()
            except Exception as exc:  # the next call finds the worker gone and gets a new one
                sys.stderr.write(f"sandbox worker: replacing a waiting child failed: {exc!r}\n")
                return 3
            continue
        body = chan.recv_raw()
        message = None if body is None else json.loads(body)
        if message is None or message.get("op") == "exit":
            worker.shutdown()
            return 0
        if message.get("op") == "ping":
            chan.send({"op": "pong"})
            continue
        try:
            result = worker.run(body, dict(message["limits"]))
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
        try:
            worker.finish()
        except Exception as exc:  # the next call finds the worker gone and gets a new one
            sys.stderr.write(f"sandbox worker: clean-up after a call failed: {exc!r}\n")
            return 3


if __name__ == "__main__":
    sys.exit(main())
