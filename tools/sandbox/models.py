"""Pydantic models shared by the sandbox backends: per-call limits and the execution result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ExitReason",
    "ExceptionInfo",
    "ExecutionResult",
    "SandboxLimits",
    "SandboxError",
    "SandboxUnavailableError",
    "E2BConfigError",
]

ExitReason = Literal[
    "ok",  # the code ran to the end without an exception
    "exception",  # the code raised an exception
    "exit",  # sys.exit / os._exit (``exit_code`` says which code)
    "timeout",  # wall-clock timeout: the whole process tree was killed
    "cpu",  # RLIMIT_CPU exceeded (SIGXCPU / SIGKILL)
    "memory",  # MemoryError under the address-space limit
    "file_limit",  # a write went past the file-size limit (EFBIG)
    "output_limit",  # far more output than the cap: killed
    "killed",  # ended by a signal (segfault, abort, OOM...)
    "sandbox_error",  # the sandbox itself failed (worker died, protocol error); the pool recovers
]


class SandboxError(RuntimeError):
    """Base class of sandbox configuration errors (raised at construction, never from execute)."""


class SandboxUnavailableError(SandboxError):
    """The requested isolation cannot be provided here; the message says what to install."""


class E2BConfigError(SandboxError):
    """The E2B backend cannot be used (missing package or missing ``E2B_API_KEY``)."""


class ExceptionInfo(BaseModel):
    """An exception raised by the user's code (or the sandbox's report of a fatal condition)."""

    type: str
    message: str
    traceback: str = ""
    """trimmed traceback: only frames of the user's code, at most a few KB"""


class ExecutionResult(BaseModel):
    """Structured outcome of one code execution, identical across backends."""

    stdout: str = ""
    stderr: str = ""
    exception: ExceptionInfo | None = None
    truncated: bool = False
    """True when stdout or stderr went past ``max_output_bytes`` and was cut (with a marker)"""
    duration_s: float = 0.0
    variables: dict[str, str] = Field(default_factory=dict)
    """simple top-level variables of the snippet: name -> repr (length-limited)"""
    exit_reason: ExitReason = "ok"
    exit_code: int | None = None
    signal: str | None = None
    isolation: str = ""
    """the isolation that was in force, e.g. ``bwrap+seccomp+rlimits`` or ``e2b``"""

    @property
    def ok(self) -> bool:
        """True when the code ran to completion (a ``sys.exit(0)`` counts as success)."""
        if self.exception is not None:
            return False
        return self.exit_reason == "ok" or (self.exit_reason == "exit" and self.exit_code == 0)


class SandboxLimits(BaseModel):
    """Per-call resource limits. Defaults suit short model-written snippets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """wall-clock limit; at expiry every process the call started is killed"""
    cpu_s: int | None = Field(default=None, gt=0, le=3600)
    """CPU-seconds limit (RLIMIT_CPU); default: the timeout rounded up plus one second"""
    memory_mb: int = Field(default=1024, ge=64, le=1 << 20)
    """address-space limit of each process (RLIMIT_AS), in MiB; with a private uid also the cap on
    the resident memory of all the call's processes together (checked every 50 ms)"""
    max_processes: int = Field(default=16, ge=1, le=4096)
    """processes + threads the call may have at once (RLIMIT_NPROC on a private uid)"""
    max_file_mb: int = Field(default=16, ge=1, le=1 << 20)
    """largest file the code may write (RLIMIT_FSIZE), in MiB"""
    max_open_files: int = Field(default=64, ge=16, le=65536)
    """RLIMIT_NOFILE"""
    max_output_bytes: int = Field(default=65536, ge=256, le=1 << 30)
    """stdout and stderr are each kept up to this many bytes, then cut with a marker"""
    output_kill_factor: int = Field(default=16, ge=1, le=1024)
    """a call printing more than ``factor * max_output_bytes`` in total is killed"""
    tmpfs_mb: int = Field(default=64, ge=1, le=1 << 20)
    """size of the sandbox's private /tmp (namespace isolation only)"""
    max_variables: int = Field(default=30, ge=0, le=1000)
    max_repr_chars: int = Field(default=200, ge=16, le=100_000)

    @model_validator(mode="after")
    def _cpu_within_reason(self) -> SandboxLimits:
        if self.cpu_s is not None and self.cpu_s > 10 * self.timeout_s + 10:
            raise ValueError("cpu_s is far above timeout_s: the timeout would always fire first")
        return self

    @property
    def effective_cpu_s(self) -> int:
        """The CPU limit actually applied."""
        return self.cpu_s if self.cpu_s is not None else int(self.timeout_s) + 2
