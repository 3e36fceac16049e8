"""One call's child as the fork server sees it, and the process plumbing around it.

Runs inside the sandbox worker (standard library only): :class:`Channel` carries the messages to
and from the host, :class:`Child` holds the worker's ends of a child's pipes, :func:`hand_off`
gives a waiting child its call, :class:`Sink` collects capped output, and the rest reaps, kills
and cleans up.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import time
from typing import Any

__all__ = [
    "Channel",
    "SET_UP",
    "RECEIVED",
    "Child",
    "Sink",
    "hand_off",
    "read_to_end",
    "remove_dir",
    "kill_quietly",
    "reap_orphans",
    "close_quietly",
]

_READ_CHUNK = 65536
_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 64 * 1024 * 1024
SET_UP = b"\1"
"""control byte: the child is set up and waits for its call"""
RECEIVED = b"\2"
"""control byte: the child has read its whole call"""


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

    def recv_raw(self) -> bytes | None:
        """The next message's JSON body, None at end of input."""
        head = self._read_exact(_HEADER.size)
        if head is None:
            return None
        (size,) = _HEADER.unpack(head)
        if size > _MAX_MESSAGE:
            raise ValueError(f"message of {size} bytes exceeds the protocol limit")
        return self._read_exact(size)

    def recv(self) -> dict[str, Any] | None:
        body = self.recv_raw()
        return None if body is None else json.loads(body)

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode("utf-8", "backslashreplace")
        view = memoryview(_HEADER.pack(len(body)) + body)
        while view:
            view = view[os.write(self.wfd, view) :]


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
    """A child forked for one call: its pid, its directory and the worker's ends of its pipes:
    ``code_w`` (the call goes in), ``ctl_r`` (out come the pid of its memory holder, then
    :data:`SET_UP` once it waits for its call, then :data:`RECEIVED` once it has read all of
    it), its stdout, stderr and report. The child closes its end of ``ctl_r`` before it runs the
    call: what comes through it was written by this package's code."""

    def __init__(self, pid: int, call_dir: str, fds: tuple[int, int, int, int, int]) -> None:
        self.pid, self.call_dir = pid, call_dir
        self.code_w, self.ctl_r, self.out_r, self.err_r, self.rep_r = fds
        self.pidfd = os.pidfd_open(pid)
        self.swept = False
        """True once every process of the call is known to be gone"""
        self._control = b""
        self._holder_killed = False

    def _read_control(self) -> bytes:
        """What the child wrote on its control pipe so far (the end is non-blocking)."""
        while self.ctl_r >= 0:
            try:
                data = os.read(self.ctl_r, 16)
            except OSError:  # nothing more for now
                break
            if not data:
                break
            self._control += data
        return self._control

    def set_up(self) -> bool:
        """Whether the child had finished setting itself up (and waited for its call)."""
        return SET_UP in self._read_control()[4:]

    def received_call(self) -> bool:
        """Whether the (now gone) child read its whole call: if not, none of it ran."""
        return RECEIVED in self._read_control()[4:]

    def holder_pid(self) -> int:
        """Pid of the (now gone) child's memory holder, 0 if it has none."""
        control = self._read_control()
        return struct.unpack(">i", control[:4])[0] if len(control) >= 4 else 0

    def kill_holder(self) -> int:
        """SIGKILL the (now gone) child's memory holder, once; its pid, 0 if it has none."""
        holder = self.holder_pid()
        if holder > 0 and not self._holder_killed:
            kill_quietly(os.kill, holder)
            self._holder_killed = True
        return holder

    def close(self) -> None:
        self._read_control()  # kept: the holder may be killed after the pipes are closed
        for fd in (self.code_w, self.ctl_r, self.out_r, self.err_r, self.rep_r, self.pidfd):
            close_quietly(fd)
        self.code_w = self.ctl_r = self.out_r = self.err_r = self.rep_r = self.pidfd = -1


def hand_off(child: Child, body: bytes, deadline: float) -> bool:
    """Write the call to the waiting child and close the pipe; False if the child is known to
    have died before it had all of it (then none of it ran: see :meth:`Child.received_call`).

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


def reap_orphans() -> set[int]:
    """Reap every exited child (orphans of the call come back to this subreaper); their pids."""
    reaped = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.add(pid)


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
