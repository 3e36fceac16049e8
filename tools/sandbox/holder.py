"""Memory holder: keeps a call's address space alive after its process exits, so that exit is
quick.

Runs inside the sandbox worker's children (standard library only). A child forked from the fork
server maps the server's preloaded modules (~50 MB with numpy and sympy) copy-on-write; when it
exits, the kernel unmaps all of that before the worker can reap it, which costs about as much as
the fork (measured: ~2.2 ms of a ~5.5 ms call). The holder is a second task, cloned by the child
before its call with ``CLONE_VM``, that shares the child's address space and only waits in
``pause()``. When the child exits the address space still has a user, so the exit skips the
teardown; the worker kills the holder once the call's result is sent, and the teardown happens
then, off the critical path.

The holder shares memory with untrusted code and keeps the worker's credentials, so it must never
run user-space code once the snippet can run. What makes sure of it:

- the child waits until the holder is blocked inside ``pause`` before it reads its call (before
  that the holder runs glibc's clone trampoline, which reads the child's memory);
- it has no signal handler (every disposition is the default or ignored, checked against the
  kernel's mask), so a signal either does nothing or ends it inside the kernel; only a stop and
  continue, or a freeze and thaw, makes it return to user space, and then only to re-execute the
  system-call instruction it stopped at. The page holding that instruction (glibc's text) is
  sealed (``mseal``) before the clone, so the snippet cannot remap it or make it writable; Landlock
  denies it ``/proc/self/mem`` for writing, seccomp denies ``ptrace`` and ``process_vm_writev``;
- only a process with its credentials may stop it (the snippet runs under another uid, without
  capabilities, its signals scoped by Landlock); it has no terminal; ``CLONE_VM`` leaves it no
  restartable-sequence area, robust-futex list or thread-id address through which the kernel would
  act on the shared memory;
- it is a child of the worker (``CLONE_PARENT``), in the worker's process group, carries the
  child's Landlock domain and seccomp filter, and is used only inside bubblewrap, where the
  worker's credentials reach no further than the sandbox's namespaces.
"""

from __future__ import annotations

import _signal
import ctypes
import errno
import os
import signal
import time

__all__ = [
    "supported",
    "pause_text",
    "caught_signals",
    "reset_signal_handlers",
    "Starter",
    "wait_until_paused",
]

_CLONE_VM = 0x00000100
_CLONE_FILES = 0x00000400
_CLONE_PARENT = 0x00008000
_SYS_MSEAL = 462  # the same number in the generic and the x86_64 tables
_STACK_BYTES = 16 * 1024


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    """Whether a holder can be made safe here: the kernel has ``mseal`` (Linux 6.10+)."""
    syscall = _libc().syscall
    syscall.restype = ctypes.c_long
    # an empty range is accepted where the call exists
    return syscall(ctypes.c_long(_SYS_MSEAL), None, ctypes.c_size_t(0), ctypes.c_ulong(0)) == 0


def caught_signals() -> list[int]:
    """The signals the calling process catches, from the kernel's view (``SigCgt`` in
    /proc/self/status), so handlers installed by C extensions, which Python's
    ``signal.getsignal`` cannot see, are found too. Read in the worker just before each fork: a
    forked child has the same dispositions (read in the child, this and the reset cost ~0.5 ms).
    """
    with open("/proc/self/status", "rb") as fh:
        status = fh.read(8192)
    start = status.find(b"SigCgt:")
    caught = int(status[start + 7 : status.find(b"\n", start)].strip(), 16)
    return [
        number
        for number in range(1, 65)
        if caught >> (number - 1) & 1 and number not in (signal.SIGKILL, signal.SIGSTOP)
    ]


def reset_signal_handlers(caught: list[int]) -> None:
    """Set every signal in ``caught`` (:func:`caught_signals`) back to its default action."""
    for number in caught:
        _signal.signal(number, _signal.SIG_DFL)  # the C function: no enum conversions


def pause_text() -> tuple[int, int]:
    """The address range of the executable mapping holding glibc's ``pause`` (the holder's only
    code). Found once in the worker: a forked child has the same mappings."""
    address = ctypes.cast(_libc().pause, ctypes.c_void_p).value
    with open("/proc/self/maps") as fh:
        for line in fh:
            low, high = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if address is not None and low <= address < high:
                return low, high
    raise OSError(errno.ENOENT, "no mapping holds pause()")


class Starter:
    """Starts memory holders; built once in the worker, used in each forked child (the ctypes
    set-up in the child cost ~0.6 ms, mostly copy-on-write faults; a call through it ~0.1 ms).

    ``text`` is :func:`pause_text`. The holder's stack is a buffer of the worker's: each child
    has its own copy-on-write copy, which only that child's holder writes.
    """

    def __init__(self, text: tuple[int, int]) -> None:
        libc = _libc()
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._clone = libc.clone
        self._clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self._clone.restype = ctypes.c_int
        self._pause = ctypes.cast(libc.pause, ctypes.c_void_p)
        low, high = text
        self._seal = (
            ctypes.c_long(_SYS_MSEAL),
            ctypes.c_void_p(low),
            ctypes.c_size_t(high - low),
            ctypes.c_ulong(0),
        )
        self._stack = ctypes.create_string_buffer(_STACK_BYTES)
        self._top = ctypes.c_void_p(ctypes.addressof(self._stack) + _STACK_BYTES - 64)
        self._flags = _CLONE_VM | _CLONE_FILES | _CLONE_PARENT | int(signal.SIGCHLD)

    def start(self) -> int:
        """Seal the text holding ``pause`` (no mprotect, munmap or remap of it from now on),
        then clone the holder; its pid. Call :func:`reset_signal_handlers` first (the holder
        keeps the dispositions of this moment), then :func:`wait_until_paused` before running
        untrusted code.

        The holder is a child of the caller's parent (the worker, which kills and reaps it), not
        of the caller: a snippet's ``os.wait()`` must behave as in a fresh interpreter. It shares
        the caller's descriptor table (a private copy would keep every pipe the caller holds now
        open for as long as the holder lives): descriptors the caller leaves open when it exits
        stay open until the holder is killed.
        """
        if self._syscall(*self._seal) != 0:
            raise OSError(ctypes.get_errno(), "mseal of glibc's text failed")
        pid = self._clone(self._pause, self._top, self._flags, None)
        if pid < 0:
            raise OSError(ctypes.get_errno(), "clone(CLONE_VM) of the memory holder failed")
        return pid


def wait_until_paused(pid: int, timeout_s: float = 5.0) -> None:
    """Return once ``pid`` sleeps inside ``pause`` (from then on it runs no user-space code).

    Its state in /proc/PID/stat is read (``/proc/PID/syscall`` would name the call, but needs
    ptrace rights that Yama may refuse for a sibling): on the holder's way into ``pause`` nothing
    else sleeps interruptibly (page faults and lock waits show as ``D``), so ``S`` means it is in.
    """
    deadline = time.monotonic() + timeout_s
    tries = 0
    while True:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)  # no file object: fewer pages touched
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"S":
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the memory holder did not reach pause()")
        tries += 1
        # it needs a few microseconds of CPU: yielding gives them to it sooner than sleeping
        # would on a busy machine
        if tries < 100:
            os.sched_yield()
        else:
            time.sleep(0.0005)
