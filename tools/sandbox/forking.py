"""What makes the fork server's forks cheap: huge pages for its memory, and a bare ``fork``.

Runs inside the sandbox worker (standard library only). Every call runs in a fresh child forked
from the worker, so the fork, the child's first steps and the end of its address space are paid
once per call. Two costs here do not come with the isolation itself:

Huge pages. A child starts with a copy of the worker's page tables: with the preloaded modules
(~48 MB of anonymous memory with numpy and sympy) that is ~12,000 entries copied at each fork and
dropped again when the call's address space goes away. ``MADV_COLLAPSE`` (Linux 6.1) rebuilds the
worker's anonymous memory into 2 MiB transparent huge pages once, after the preload; a fork then
shares one entry per 2 MiB. A page written after a fork (by the child or by the worker) is split
off and copied 4 KiB at a time as before, so isolation is unchanged: each process still gets its
own copy of what it writes. The worker splits the pages it keeps writing; what stays huge is the
memory nobody touches, which is what a fork copied for nothing. ``MADV_COLLAPSE`` works whatever
the system's THP mode is except ``never``; where the kernel lacks it or has no huge page to give,
the memory stays in small pages and :func:`collapse_to_huge_pages` reports what it did collapse.

A bare fork. ``os.fork`` runs CPython's after-fork work in the child: re-creating the GIL and
runtime locks (for threads the child no longer has) and every handler registered with
``os.register_at_fork``, which the preloaded libraries bring (``threading``, ``logging``,
``random``, ``concurrent.futures``...). Each is Python code the child runs for the first time, so
it copies the pages it touches: ~230 page faults and ~0.85 ms of CPU per call on the machine
measured (2-core AMD EPYC, CPython 3.11), before the child's first statement. The worker is
single-threaded and holds the GIL across the fork (a ``PyDLL`` call), so in the child no lock can
be held by a thread that is gone and the interpreter's state is already right for its one thread;
what a handler would do that matters is ``random``'s reseed, which the worker does before each
fork instead (:func:`reseed_random`, as for numpy). glibc's own ``fork`` handlers still run. The
worker uses the bare fork only while it has one thread (:func:`single_threaded`, checked at
start-up: the sandbox's environment keeps BLAS and OpenMP to one thread) and ``os.fork``
otherwise. A snippet that forks or starts threads itself gets CPython's full handling.
"""

from __future__ import annotations

import ctypes
import os
import random
from collections.abc import Callable

__all__ = [
    "collapse_to_huge_pages",
    "huge_anonymous_kb",
    "single_threaded",
    "bare_fork",
    "reseed_random",
]

_MADV_COLLAPSE = 25
_HUGE = 2 << 20
_MT_KEY_BYTES = 624 * 4  # a Mersenne Twister state's worth of entropy


def _anonymous_regions(maps: str) -> list[tuple[int, int]]:
    """Writable private mappings with no file behind them (the heap and anonymous mmaps)."""
    found = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[1].startswith("rw") or fields[1][3] != "p":
            continue
        name = fields[5] if len(fields) > 5 else ""
        if name not in ("", "[heap]"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        found.append((start, end))
    return found


def collapse_to_huge_pages() -> int:
    """Collapse the whole 2 MiB ranges of this process's anonymous memory into huge pages.

    Returns the kB of anonymous memory in huge pages afterwards (0 where the kernel cannot)."""
    if not os.path.exists("/proc/self/maps"):
        return 0
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as fh:
        regions = _anonymous_regions(fh.read())
    for start, end in regions:
        first = (start + _HUGE - 1) & ~(_HUGE - 1)
        last = end & ~(_HUGE - 1)
        if last > first:
            # best effort: a range the kernel cannot collapse stays as it was
            madvise(first, last - first, _MADV_COLLAPSE)
    return huge_anonymous_kb()


def huge_anonymous_kb() -> int:
    """AnonHugePages of this process, in kB."""
    try:
        with open("/proc/self/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def single_threaded() -> bool:
    """Whether this process has exactly one thread (from the kernel's view, so threads started
    by C libraries count)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _libc_fork() -> Callable[[], int]:
    # PyDLL: the GIL stays held during the call, so no other Python thread runs across it
    fork = ctypes.PyDLL(None, use_errno=True).fork
    fork.restype = ctypes.c_int
    fork.argtypes = []
    return fork


_fork = _libc_fork()


def bare_fork() -> int:
    """``fork()`` without CPython's after-fork work (see the module docstring): 0 in the child,
    the child's pid in the parent. Only for a single-threaded process."""
    pid = int(_fork())
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid


def reseed_random() -> None:
    """A new state from OS entropy for ``random``'s global generator (``os.fork`` would have
    the child do this itself)."""
    random.seed(int.from_bytes(os.urandom(_MT_KEY_BYTES), "little"))
