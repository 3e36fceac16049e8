"""Confinement applied inside a freshly forked child, just before it runs untrusted code.

Runs inside the sandbox worker (a separate interpreter, possibly inside bubblewrap), so it only
imports the standard library (plus ``pyseccomp`` when installed) and nothing from this project.

Layers, in the order they are applied (the first two before the call arrives, in the pre-forked
child waiting for it; the last two once its call is there, because they depend on it or would
leave a process of the call's uid waiting between calls):
1. Landlock: writes only below the call's directory (and reads only from an allow-list in process
   mode), no TCP, no signals to processes outside the call;
2. seccomp: no sockets other than AF_UNIX, no clone3 (ENOSYS so glibc falls back to clone, whose
   flags a filter can inspect), no kernel-facing administration calls, and (when the uid cannot be
   dropped) no new processes at all;
3. rlimits from the call's limits: address space, CPU seconds, file size, open files, no core
   dumps, and (once the uid is private) the number of processes;
4. privilege drop to a private uid/gid (only when the worker runs as root: as root RLIMIT_NPROC is
   ignored, so the process cap only holds after the drop).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import socket
import tempfile
from collections.abc import Iterable
from typing import Any

__all__ = [
    "apply_rlimits",
    "drop_privileges",
    "build_seccomp_filter",
    "SeccompProgram",
    "landlock_abi",
    "LandlockRuleset",
    "processes_of",
    "anonymous_memory_of",
    "own_anonymous_memory",
]

_MB = 1024 * 1024

# Calls no snippet needs; most already fail for an unprivileged uid, the filter makes it explicit.
_DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "acct",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "vhangup",
)
_CLONE_THREAD = 0x00010000


def apply_rlimits(limits: dict[str, Any], nproc: int | None) -> None:
    """Set the per-process resource limits of the calling process (soft == hard, so no raising)."""
    cpu = int(limits["cpu_s"])
    settings = [
        (resource.RLIMIT_AS, int(limits["memory_mb"]) * _MB),
        # hard limit one second above soft: SIGXCPU first, SIGKILL if it is ignored
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) * _MB),
        (resource.RLIMIT_NOFILE, int(limits["max_open_files"])),
        (resource.RLIMIT_CORE, 0),
    ]
    if nproc is not None:
        settings.append((resource.RLIMIT_NPROC, int(nproc)))
    for which, value in settings:
        soft_hard = value if isinstance(value, tuple) else (value, value)
        resource.setrlimit(which, soft_hard)


def drop_privileges(uid: int, gid: int) -> None:
    """Switch to ``uid``/``gid`` for good (real, effective and saved ids) and drop supplementary
    groups. Raises if the switch did not take: running user code as root is never acceptable."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError("privilege drop did not take effect")


def build_seccomp_filter(deny_new_processes: bool) -> Any | None:
    """A ``pyseccomp.SyscallFilter`` with our rules, or None without pyseccomp/libseccomp."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError):
        return None
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    filt.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for name in _DENIED_SYSCALLS:
        try:
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):
            continue  # not a syscall on this architecture
    if deny_new_processes:
        # Threads (CLONE_THREAD) stay allowed so numpy & co. work; new processes do not.
        filt.add_rule(sc.ERRNO(errno.EAGAIN), "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
        for name in ("fork", "vfork"):
            try:
                filt.add_rule(sc.ERRNO(errno.EAGAIN), name)
            except (ValueError, RuntimeError, OSError):
                continue
    return filt


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


class SeccompProgram:
    """A seccomp filter compiled to BPF once (in the worker); installing it in a child is then a
    single ``prctl`` instead of libseccomp regenerating the program (~1 ms) on every call."""

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise ValueError("not a BPF program")
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(
            len=len(bpf) // 8, filter=ctypes.cast(self._buffer, ctypes.c_void_p)
        )
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    @classmethod
    def build(cls, deny_new_processes: bool) -> SeccompProgram | None:
        filt = build_seccomp_filter(deny_new_processes)
        if filt is None:
            return None
        with tempfile.TemporaryFile() as fh:
            filt.export_bpf(fh)
            fh.seek(0)
            return cls(fh.read())

    def install(self) -> None:
        """Install in the calling process (sets no_new_privs first, as the kernel requires)."""
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS) failed")
        if self._prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0):
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def processes_of(uid: int) -> list[int]:
    """Pids (other than ours) whose real or saved uid is ``uid``, from /proc.

    ``kill(-1)`` cannot tell: it succeeds whenever any other process exists, even if it may
    signal none of them. In a PID namespace /proc lists only the sandbox's few processes.
    """
    return [pid for pid, _ in _scan_uid(uid)]


def anonymous_memory_of(uid: int) -> list[int]:
    """Anonymous resident memory (RssAnon, bytes) of each process of ``uid``."""
    return [anon for _, anon in _scan_uid(uid)]


def own_anonymous_memory() -> int:
    """RssAnon of the calling process, in bytes."""
    with open("/proc/self/status", "rb") as fh:
        return _field_kb(fh.read(8192), b"RssAnon:") * 1024


def _field_kb(status: bytes, key: bytes) -> int:
    start = status.find(key)
    if start < 0:
        return 0  # zombies have no memory lines
    return int(status[start + len(key) : status.find(b"\n", start)].split()[0])


def _scan_uid(uid: int) -> list[tuple[int, int]]:
    me, found = os.getpid(), []
    wanted = str(uid)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                status = fh.read(8192)
        except OSError:
            continue  # exited meanwhile
        start = status.find(b"Uid:")
        uids = status[start + 4 : status.find(b"\n", start)].split()
        if wanted.encode() in uids:
            found.append((int(name), _field_kb(status, b"RssAnon:") * 1024))
    return found


# --- Landlock (raw syscalls: the numbers are shared by all Linux architectures) ------------------
_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_WRITE_TREE = sum(1 << i for i in range(4, 13))  # remove dir/file, make char/dir/reg/sock/...
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc: Any = None


def _syscall() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unavailable."""
    try:
        abi = _syscall()(ctypes.c_long(_SYS_CREATE), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(int(abi), 0)


def _fs_rights(abi: int) -> tuple[int, int]:
    """(all handled file-system rights, the subset valid on a regular file) for ``abi``."""
    file_rights = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE
    rights = file_rights | _FS_READ_DIR | _FS_WRITE_TREE
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
        file_rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
        file_rights |= _FS_IOCTL_DEV
    return rights, file_rights


class LandlockRuleset:
    """A Landlock ruleset created once (in the worker) and enforced in each child.

    ``full_access``: trees the code may read and write (the worker's call directory: the call's
    own subdirectory is the only one present during a call). ``read_only``: trees it may read and
    execute; ``None`` leaves reads unrestricted (namespace isolation already decides what is
    visible). ``rw_files``: single files opened read-write (``/dev/null``). TCP bind/connect and
    signals or abstract sockets reaching outside the call are denied where the ABI allows.
    """

    def __init__(
        self,
        abi: int,
        full_access: Iterable[str],
        read_only: Iterable[str] | None,
        rw_files: Iterable[str] = (),
    ) -> None:
        if abi <= 0:
            raise OSError(errno.ENOSYS, "Landlock is not available")
        sysc = _syscall()
        rights, file_rights = _fs_rights(abi)
        read_rights = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
        handled = rights if read_only is not None else rights & ~read_rights
        attr = _RulesetAttr(handled_access_fs=handled)
        size = 8
        if abi >= 4:
            attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
            size = 16
        if abi >= 6:
            attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
            size = 24
        fd = sysc(
            ctypes.c_long(_SYS_CREATE),
            ctypes.byref(attr),
            ctypes.c_size_t(size),
            ctypes.c_uint32(0),
        )
        if fd < 0:
            raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
        self.fd = int(fd)
        try:
            rules: list[tuple[str, int]] = [(p, handled) for p in full_access]
            rules += [(p, read_rights & handled) for p in (read_only or ())]
            rules += [
                (p, (_FS_READ_FILE | _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)) & handled)
                for p in rw_files
            ]
            for path, allowed in rules:
                _add_path_rule(sysc, self.fd, path, allowed, file_rights)
        except BaseException:
            os.close(self.fd)
            raise
        self._sysc = sysc
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    def enforce(self) -> None:
        """Restrict the calling process and its future children (irreversible)."""
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS) failed")
        if self._sysc(ctypes.c_long(_SYS_RESTRICT), ctypes.c_int(self.fd), ctypes.c_uint32(0)):
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")


def _add_path_rule(sysc: Any, ruleset: int, path: str, allowed: int, file_rights: int) -> None:
    if not allowed:
        return
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a missing optional path (e.g. /lib32) is simply not granted
    try:
        if not os.path.isdir(path):
            allowed &= file_rights
        beneath = _PathBeneathAttr(allowed_access=allowed, parent_fd=fd)
        if (
            sysc(
                ctypes.c_long(_SYS_ADD_RULE),
                ctypes.c_int(ruleset),
                ctypes.c_int(1),
                ctypes.byref(beneath),
                ctypes.c_uint32(0),
            )
            != 0
        ):
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)
