"""One call's child as the fork server sees it, and the process plumbing around it.

Runs inside the sandbox worker (standard library only): :class:`Child` holds the worker's ends of
a child's pipes, :func:`hand_off` gives a waiting child its call, :class:`Sink` collects capped
output, and the rest reaps, kills and cleans up.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import struct
import time
from typing import Any

__all__ = [
    "Child",
    "Sink",
    "hand_off",
    "wait_gone",
    "read_to_end",
    "remove_dir",
    "kill_quietly",
    "reap_orphans",
    "close_quietly",
]

_READ_CHUNK = 65536


class Sink:
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


class Child:
    """A child forked for one call: its pid, its directory and the worker's ends of its pipes
    (``code_w``: the call goes in; ``holder_r``: the pid of its memory holder comes out, before
    the call; then its stdout, stderr and report)."""

    def __init__(self, pid: int, call_dir: str, fds: tuple[int, int, int, int, int]) -> None:
        self.pid, self.call_dir = pid, call_dir
        self.code_w, self.holder_r, self.out_r, self.err_r, self.rep_r = fds
        self.pidfd = os.pidfd_open(pid)
        self.swept = False
        """True once every process of the call is known to be gone"""
        self.holder = -1
        """pid of its memory holder once known (0: none), see :meth:`kill_holder`"""

    def kill_holder(self) -> int:
        """SIGKILL the child's memory holder (once); its pid, 0 if it has none.

        Only called once the child is gone: the pid was written before the call, by this
        module's code, and the pipe's writing end is closed, so the read cannot block.
        """
        if self.holder < 0:
            try:
                data = os.read(self.holder_r, 4)
            except OSError:
                data = b""
            self.holder = struct.unpack(">i", data)[0] if len(data) == 4 else 0
            if self.holder > 0:
                kill_quietly(os.kill, self.holder)
        return self.holder

    def close(self) -> None:
        for fd in (self.code_w, self.holder_r, self.out_r, self.err_r, self.rep_r, self.pidfd):
            close_quietly(fd)


def hand_off(child: Child, body: bytes, deadline: float) -> bool:
    """Write the call to the waiting child and close the pipe; False if the child died first
    (it reads the whole call before running any of it, so then none of it ran).

    A child's exit does not always break the pipe (its memory holder shares its descriptors), so
    its pidfd is watched too. The pipe is non-blocking: a child that stops reading (it cannot,
    short of being stopped from outside) is left to the supervisor's timeout.
    """
    view = memoryview(body)
    poller = select.poll()
    poller.register(child.pidfd, select.POLLIN)
    try:
        if poller.poll(0):
            return False
        poller.register(child.code_w, select.POLLOUT)
        while view:
            try:
                view = view[os.write(child.code_w, view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                events = dict(poller.poll(int(remaining * 1000) + 1))
                if child.pidfd in events:
                    return False
    except BrokenPipeError:
        return False
    finally:
        os.close(child.code_w)
        child.code_w = -1
    return True


def wait_gone(pid: int) -> None:
    """Reap ``pid`` (a killed memory holder, a child of this worker) once it has exited."""
    if pid > 0:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # already reaped with the orphans


def read_to_end(fd: int) -> bytes:
    chunks = []
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def remove_dir(path: str) -> None:
    """Remove a call's directory: usually empty, so one ``rmdir``."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def kill_quietly(kill: Any, pid: int) -> None:
    try:
        kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def reap_orphans() -> None:
    """Reap every exited child (orphans of the call come back to this subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
