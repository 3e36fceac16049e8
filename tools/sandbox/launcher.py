"""How a sandbox worker is started: the bubblewrap command line or a plain confined process.

The worker script (:mod:`tools.sandbox.worker`) is the same in both cases; only its surroundings
differ. Namespace isolation (bubblewrap) gives: no network, a read-only view of the system and the
Python installation only (the project checkout and the rest of the host file system are absent), a
private size-capped /tmp, a new PID namespace, an empty environment, and the worker dies with its
host. Without bubblewrap the worker is a separate process with an empty environment; the
per-call confinement (rlimits, private uid, Landlock, seccomp) is applied in both cases.
"""

from __future__ import annotations

import logging
import os
import shutil
import site
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from typing import Literal

from tools.sandbox.models import SandboxUnavailableError

__all__ = [
    "LaunchSpec",
    "Isolation",
    "bwrap_path",
    "python_roots",
    "build_spec",
    "BWRAP_INSTALL_HINT",
    "SANDBOX_ENV",
]

logger = logging.getLogger(__name__)

Isolation = Literal["bwrap", "process"]
BWRAP_INSTALL_HINT = "install bubblewrap: apt-get install -y bubblewrap"
_WORKER_DIR = os.path.dirname(os.path.abspath(__file__))
_MOUNTED_WORKER_DIR = "/opt/agentflow-sandbox"
_SANDBOX_TMP = "/tmp"

# The whole environment the snippet sees: fixed here, nothing inherited from the host process.
# One BLAS/OpenMP thread: threads count against the process cap and the machine is shared.
SANDBOX_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}

# System locations a Python process needs, read-only. /etc is reduced to loader and locale files.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
    "/etc/alternatives",
    "/etc/ssl/certs",
)
_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL")


@dataclass
class LaunchSpec:
    """Everything needed to start one worker process."""

    isolation: Isolation
    argv: list[str]
    env: dict[str, str]
    call_root: str
    """where the worker creates per-call directories (as the worker sees the file system)"""
    landlock_read: list[str] | None
    """read allow-list for Landlock, or None when namespaces already restrict what is visible"""
    host_dirs: list[str] = field(default_factory=list)
    """host directories to delete when the worker is gone (process isolation)"""


def bwrap_path() -> str | None:
    """Path of the ``bwrap`` executable, or None."""
    return shutil.which("bwrap")


def python_roots() -> list[str]:
    """Directories holding the running interpreter, its standard library and site-packages."""
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    ]
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            candidates.append(path)
    try:
        candidates.extend(site.getsitepackages())
    except AttributeError:  # pragma: no cover - very old virtualenvs
        pass
    roots: list[str] = []
    for path in sorted(
        {os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}, key=len
    ):
        if path in _SYSTEM_DIRS or any(path == r or path.startswith(r + os.sep) for r in roots):
            continue
        roots.append(path)
    # also keep the non-resolved prefixes: the venv's python finds pyvenv.cfg through them
    for path in (sys.prefix, os.path.dirname(sys.executable)):
        if os.path.isdir(path) and not any(path == r or path.startswith(r + os.sep) for r in roots):
            roots.append(path)
    return [r for r in roots if not any(r == s or r.startswith(s + os.sep) for s in _SYSTEM_DIRS)]


def _ancestors(path: str) -> list[str]:
    parts = path.strip(os.sep).split(os.sep)[:-1]
    return [os.sep + os.sep.join(parts[: i + 1]) for i in range(len(parts))]


def _bwrap_argv(bwrap: str, tmpfs_mb: int) -> list[str]:
    argv = [
        bwrap,
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
    ]
    if os.geteuid() == 0:
        # As root bwrap keeps every capability by default; the fork server needs only these
        # (switching uid for the per-call children, managing their directories, killing them
        # at the timeout). The children
        # lose them all when they drop to their private uid.
        argv += ["--cap-drop", "ALL"]
        for cap in _CAPS:
            argv += ["--cap-add", cap]
    else:
        argv += ["--unshare-user"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    # The private /tmp goes first: binds that follow may live under the host's /tmp (a venv
    # in a CI checkout there), and a tmpfs mounted after them would hide them.
    argv += ["--size", str(tmpfs_mb * 1024 * 1024), "--tmpfs", _SANDBOX_TMP]
    made: set[str] = {"/", "/usr", "/tmp", "/proc", "/dev", "/opt"}
    for root in python_roots():
        for parent in _ancestors(root):
            if parent not in made:
                # bwrap copies a 0700 /root from the host; the private uid must traverse it
                argv += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        argv += ["--ro-bind", root, root]
        made.add(root)
    argv += [
        "--ro-bind",
        _WORKER_DIR,
        _MOUNTED_WORKER_DIR,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--clearenv",
    ]
    for key, value in SANDBOX_ENV.items():
        argv += ["--setenv", key, value]
    argv += [
        "--chdir",
        _SANDBOX_TMP,
        sys.executable,
        "-I",
        "-B",
        f"{_MOUNTED_WORKER_DIR}/worker.py",
    ]
    return argv


def landlock_read_list() -> list[str]:
    """What a snippet may read in process isolation: the system, Python, and a few pseudo-fs."""
    paths = (
        list(_SYSTEM_DIRS)
        + python_roots()
        + ["/etc", "/proc", "/dev", "/sys/devices/system/cpu", "/usr/share/zoneinfo"]
    )
    return [p for p in paths if os.path.exists(p)]


def build_spec(isolation: Isolation, tmpfs_mb: int) -> LaunchSpec:
    """The command line and environment for one worker with the given isolation."""
    if isolation == "bwrap":
        bwrap = bwrap_path()
        if bwrap is None:
            raise SandboxUnavailableError(
                f"namespace isolation needs bubblewrap and `bwrap` is not on PATH; "
                f"{BWRAP_INSTALL_HINT}"
            )
        return LaunchSpec(
            isolation="bwrap",
            argv=_bwrap_argv(bwrap, tmpfs_mb),
            env={"PATH": SANDBOX_ENV["PATH"]},
            call_root=f"{_SANDBOX_TMP}/calls",
            landlock_read=None,
        )
    host_dir = tempfile.mkdtemp(prefix="agentflow-sandbox-")
    os.chmod(host_dir, 0o711)  # the private uid must reach its own call directory inside
    argv = [sys.executable, "-I", "-B", os.path.join(_WORKER_DIR, "worker.py")]
    return LaunchSpec(
        isolation="process",
        argv=argv,
        env=dict(SANDBOX_ENV),
        call_root=os.path.join(host_dir, "calls"),
        landlock_read=landlock_read_list(),
        host_dirs=[host_dir],
    )
