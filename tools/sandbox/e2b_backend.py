"""E2B backend: run snippets in a remote E2B code-interpreter sandbox (``e2b-code-interpreter``).

One remote sandbox is created lazily on the first call and reused by later calls (an episode's
calls share it, as a notebook would) until :meth:`E2BBackend.reset` or :meth:`E2BBackend.close`.
Without an API key the backend refuses to be constructed, so a misconfiguration shows at start-up
and not in the middle of an episode.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from tools.sandbox.models import (
    E2BConfigError,
    ExceptionInfo,
    ExecutionResult,
    ExitReason,
    SandboxLimits,
)

__all__ = ["E2BBackend", "execution_to_result"]

logger = logging.getLogger(__name__)

_TRACEBACK_CHARS = 4000


def _cap(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text, False
    kept = data[:limit].decode("utf-8", "replace")
    marker = f"\n... [output truncated: {len(data)} bytes written, first {limit} kept] ..."
    return kept + marker, True


def execution_to_result(
    execution: Any, duration_s: float, limits: SandboxLimits
) -> ExecutionResult:
    """Map an ``e2b_code_interpreter.models.Execution`` onto our :class:`ExecutionResult`.

    stdout/stderr are the concatenated log chunks (capped like the local backend); the value of
    the last expression (the notebook's main result) is appended to stdout, since the planner
    reads it like printed output; an ``ExecutionError`` becomes the exception.
    """
    logs = getattr(execution, "logs", None)
    stdout_text = "".join(getattr(logs, "stdout", None) or [])
    stderr_text = "".join(getattr(logs, "stderr", None) or [])
    main_text = getattr(execution, "text", None)
    if main_text:
        stdout_text += ("" if not stdout_text or stdout_text.endswith("\n") else "\n") + main_text
    stdout, cut_out = _cap(stdout_text, limits.max_output_bytes)
    stderr, cut_err = _cap(stderr_text, limits.max_output_bytes)
    error = getattr(execution, "error", None)
    exception = None
    reason: ExitReason = "ok"
    if error is not None:
        trace = str(getattr(error, "traceback", "") or "")
        if len(trace) > _TRACEBACK_CHARS:
            half = _TRACEBACK_CHARS // 2
            trace = trace[:half] + "\n... (traceback trimmed) ...\n" + trace[-half:]
        name = str(getattr(error, "name", "Error"))
        exception = ExceptionInfo(
            type=name, message=str(getattr(error, "value", "")), traceback=trace
        )
        reason = "memory" if name == "MemoryError" else "exception"
    return ExecutionResult(
        stdout=stdout,
        stderr=stderr,
        exception=exception,
        truncated=cut_out or cut_err,
        duration_s=duration_s,
        exit_reason=reason,
        isolation="e2b",
    )


class E2BBackend:
    """Remote execution through E2B. Thread-safe; calls on one backend are serialized because
    they share one remote interpreter."""

    isolation_level = "e2b"

    def __init__(
        self,
        limits: SandboxLimits,
        api_key: str | None = None,
        template: str | None = None,
        sandbox_timeout_s: int = 600,
        allow_internet_access: bool = False,
        request_timeout_s: float = 30.0,
        sandbox_cls: Any | None = None,
    ) -> None:
        key = api_key or os.environ.get("E2B_API_KEY")
        if not key:
            raise E2BConfigError(
                "backend='e2b' needs an E2B API key: set the E2B_API_KEY environment variable "
                "or pass e2b_api_key=...; use backend='local' to run without E2B"
            )
        try:
            from e2b_code_interpreter import Sandbox, TimeoutException
        except ImportError as exc:
            raise E2BConfigError(
                "backend='e2b' needs the e2b-code-interpreter package: "
                "pip install 'agentflow-gym[e2b]'"
            ) from exc
        # ``sandbox_cls``: anything with the SDK's ``create``/``run_code``/``kill`` shape
        # (a subclass with custom defaults, or a test double where no E2B service is reachable)
        self._sandbox_cls = sandbox_cls if sandbox_cls is not None else Sandbox
        self._timeout_exc = TimeoutException
        self._api_key = key
        self.limits = limits
        self.template = template
        self.sandbox_timeout_s = int(sandbox_timeout_s)
        self.allow_internet_access = allow_internet_access
        self.request_timeout_s = float(request_timeout_s)
        self._sandbox: Any | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _ensure_sandbox(self) -> Any:
        if self._sandbox is None:
            logger.info("creating E2B sandbox (template=%s)", self.template)
            self._sandbox = self._sandbox_cls.create(
                template=self.template,
                timeout=self.sandbox_timeout_s,
                envs={},
                allow_internet_access=self.allow_internet_access,
                api_key=self._api_key,
                request_timeout=self.request_timeout_s,
            )
        return self._sandbox

    def run(self, code: str, limits: SandboxLimits | None = None) -> ExecutionResult:
        """Run ``code`` in the (lazily created) remote sandbox. Never raises for SDK errors."""
        limits = limits or self.limits
        start = time.monotonic()
        with self._lock:
            if self._closed:
                return _error("the E2B backend is closed", 0.0)
            try:
                sandbox = self._ensure_sandbox()
                execution = sandbox.run_code(
                    code,
                    timeout=limits.timeout_s,
                    request_timeout=limits.timeout_s + self.request_timeout_s,
                )
            except Exception as exc:  # SDK/network errors become results, never exceptions
                duration = time.monotonic() - start
                if isinstance(exc, self._timeout_exc):
                    # the remote kernel may still be busy: start afresh on the next call
                    self._kill_locked()
                    return ExecutionResult(
                        exit_reason="timeout", duration_s=duration, isolation="e2b"
                    )
                self._kill_locked()
                return _error(f"E2B call failed: {type(exc).__name__}: {exc}", duration)
        return execution_to_result(execution, time.monotonic() - start, limits)

    def _kill_locked(self) -> None:
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            try:
                sandbox.kill()
            except Exception as exc:  # best effort: the sandbox also expires on its own timeout
                logger.warning("could not kill E2B sandbox: %s", exc)

    def reset(self) -> None:
        """Drop the remote sandbox; the next call starts a fresh one."""
        with self._lock:
            self._kill_locked()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._kill_locked()


def _error(message: str, duration_s: float) -> ExecutionResult:
    return ExecutionResult(
        exception=ExceptionInfo(type="SandboxError", message=message),
        exit_reason="sandbox_error",
        duration_s=duration_s,
        isolation="e2b",
    )
