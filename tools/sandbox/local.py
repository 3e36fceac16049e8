"""The local backend: picks the strongest available isolation and runs code on a worker pool."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ValidationError

from tools.sandbox.launcher import (
    BWRAP_INSTALL_HINT,
    SANDBOX_ENV,
    Isolation,
    build_spec,
    bwrap_path,
    python_roots,
)
from tools.sandbox.models import (
    ExceptionInfo,
    ExecutionResult,
    SandboxLimits,
    SandboxUnavailableError,
)
from tools.sandbox.pool import WorkerDied, WorkerPool

__all__ = ["LocalBackend", "IsolationRequest", "DEFAULT_PRELOAD"]

logger = logging.getLogger(__name__)

IsolationRequest = Literal["auto", "strict", "process"]

# Imported once by each fork server so snippets start with them loaded (a call then costs a
# fork, not an import). Missing optional libraries are skipped.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "math",
    "cmath",
    "random",
    "statistics",
    "fractions",
    "decimal",
    "itertools",
    "functools",
    "collections",
    "heapq",
    "bisect",
    "operator",
    "re",
    "string",
    "json",
    "datetime",
    "time",
    "copy",
    "typing",
    "dataclasses",
    "textwrap",
    "unicodedata",
    "numpy",
    "sympy",
)


class LocalBackend:
    """Runs snippets in pre-started, isolated fork-server workers on this machine.

    ``isolation``: ``"strict"`` requires namespace isolation (bubblewrap) and raises
    :class:`SandboxUnavailableError` naming what is missing; ``"auto"`` uses it when it works and
    falls back to a confined process otherwise; ``"process"`` never uses namespaces.
    """

    def __init__(
        self,
        limits: SandboxLimits,
        isolation: IsolationRequest = "auto",
        pool_size: int = 2,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        startup_timeout_s: float = 60.0,
        huge_pages: bool = True,
    ) -> None:
        if isolation not in ("auto", "strict", "process"):
            raise ValueError(f"isolation must be 'auto', 'strict' or 'process', not {isolation!r}")
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self.limits = limits
        init = {"preload": list(preload), "env": dict(SANDBOX_ENV), "huge_pages": huge_pages}
        self.pool: WorkerPool | None = None
        self.kind: Isolation = "process"
        if isolation in ("auto", "strict") and bwrap_path() is not None:
            try:
                self.pool = self._make_pool("bwrap", pool_size, init, startup_timeout_s)
                self.kind = "bwrap"
            except WorkerDied as exc:
                if isolation == "strict":
                    raise SandboxUnavailableError(
                        f"bubblewrap is installed but could not start a sandbox: {exc}"
                    ) from exc
                logger.warning(
                    "bubblewrap sandbox failed to start, falling back to process isolation: %s", exc
                )
        elif isolation == "strict":
            raise SandboxUnavailableError(
                "isolation='strict' needs namespace isolation, but `bwrap` was not found on "
                f"PATH; {BWRAP_INSTALL_HINT} (or pass isolation='auto' to accept a weaker sandbox)"
            )
        if self.pool is None:
            try:
                self.pool = self._make_pool("process", pool_size, init, startup_timeout_s)
            except WorkerDied as exc:
                raise SandboxUnavailableError(f"could not start a sandbox worker: {exc}") from exc
        self.isolation_level = _describe(self.kind, self.pool.features)
        if self.kind == "process" and self.pool.features.get("drop"):
            _warn_if_python_unreadable()
        if not self.pool.features.get("drop") and not self.pool.features.get("seccomp"):
            logger.warning(
                "sandbox cannot switch to a private uid nor load seccomp: the process "
                "cap (max_processes) is not enforced"
            )
        logger.info("python sandbox ready: %s, %d workers", self.isolation_level, pool_size)

    def _make_pool(
        self, kind: Isolation, size: int, init: dict[str, Any], startup_timeout_s: float
    ) -> WorkerPool:
        tmpfs_mb = self.limits.tmpfs_mb
        return WorkerPool(
            lambda: build_spec(kind, tmpfs_mb), size, init, startup_timeout_s=startup_timeout_s
        )

    def run(self, code: str, limits: SandboxLimits | None = None) -> ExecutionResult:
        """Run ``code`` in a fresh child of an idle worker and return the structured result."""
        limits = limits or self.limits
        payload = limits.model_dump()
        payload["cpu_s"] = limits.effective_cpu_s
        start = time.monotonic()
        assert self.pool is not None
        raw = self.pool.run(code, payload)
        return to_result(raw, time.monotonic() - start, self.isolation_level)

    def worker_pids(self) -> list[int]:
        """Host pids of the live worker processes (the bwrap process in namespace isolation)."""
        return self.pool.worker_pids() if self.pool is not None else []

    def worker_uids(self) -> list[int]:
        """Private uids that snippets run under (empty when the uid cannot be switched)."""
        return self.pool.worker_uids() if self.pool is not None else []

    @property
    def restarts(self) -> int:
        return self.pool.restarts if self.pool is not None else 0

    def reset(self) -> None:
        """Nothing to do: every call already runs in a fresh process."""

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _warn_if_python_unreadable() -> None:
    """In process isolation snippets run under an unprivileged uid on the host file system: if
    the Python installation sits below a directory others cannot enter (e.g. /root), only the
    preloaded modules can be imported."""
    for root in python_roots():
        path = root
        while path not in ("", os.sep):
            if not os.stat(path).st_mode & stat.S_IXOTH:
                logger.warning(
                    "process isolation: %s is not accessible to the sandbox's unprivileged uid, "
                    "so snippets can only import the preloaded modules; install bubblewrap "
                    "(apt-get install -y bubblewrap) or use a world-readable Python",
                    path,
                )
                return
            path = os.path.dirname(path)


def _describe(kind: Isolation, features: dict[str, Any]) -> str:
    parts: list[str] = [kind]
    if features.get("seccomp"):
        parts.append("seccomp")
    if features.get("landlock"):
        parts.append("landlock")
    parts.append("rlimits")
    if features.get("drop"):
        parts.append("uid")
    return "+".join(parts)


def to_result(raw: dict[str, Any], duration_s: float, isolation: str) -> ExecutionResult:
    """Convert a worker's result message into an :class:`ExecutionResult`.

    Part of the message comes from the untrusted child (its report pipe), so anything malformed
    becomes a ``sandbox_error`` result instead of an exception.
    """
    exc = raw.get("exception")
    variables = raw.get("variables")
    try:
        return ExecutionResult(
            stdout=str(raw.get("stdout", "")),
            stderr=str(raw.get("stderr", "")),
            exception=ExceptionInfo.model_validate(exc) if exc is not None else None,
            truncated=bool(raw.get("truncated", False)),
            duration_s=duration_s,
            variables={str(k): str(v) for k, v in variables.items()}
            if isinstance(variables, dict)
            else {},
            exit_reason=raw.get("exit_reason", "sandbox_error"),
            exit_code=raw.get("exit_code"),
            signal=raw.get("signal"),
            isolation=isolation,
        )
    except (ValidationError, TypeError, ValueError) as err:
        return ExecutionResult(
            stdout=str(raw.get("stdout", "")),
            stderr=str(raw.get("stderr", "")),
            exception=ExceptionInfo(
                type="SandboxError", message=f"malformed result from the sandbox: {err}"
            ),
            duration_s=duration_s,
            exit_reason="sandbox_error",
            isolation=isolation,
        )
