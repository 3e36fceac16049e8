"""The result message of one call, built by the worker from what the call's child left behind.

Runs inside the sandbox worker (standard library only). Part of the input comes from the untrusted
child (its output and its report pipe): nothing here trusts it beyond parsing it as JSON; the host
validates the message again (:func:`tools.sandbox.local.to_result`).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

__all__ = ["build_result"]


def build_result(
    out: bytearray,
    err: bytearray,
    report_raw: bytes,
    out_total: int,
    err_total: int,
    cap: int,
    status: int,
    rusage: Any,
    reason: str | None,
    limits: dict[str, Any],
) -> dict[str, Any]:
    """The ``result`` message: the capped output, then the outcome. ``reason`` is the worker's
    own verdict (timeout, output or memory cap) and wins; otherwise the child's report decides,
    and without a report its exit status."""
    truncated = out_total > cap or err_total > cap
    result: dict[str, Any] = {
        "op": "result",
        "stdout": _text(out, out_total, cap),
        "stderr": _text(err, err_total, cap),
        "truncated": truncated,
        "exception": None,
        "variables": {},
        "exit_code": None,
        "signal": None,
        "exit_reason": reason or "ok",
    }
    if reason is not None:
        return result
    report: dict[str, Any] | None = None
    if report_raw:
        try:
            report = json.loads(report_raw)
        except ValueError:
            report = None
    if isinstance(report, dict) and "setup_error" in report:
        result.update(
            exit_reason="sandbox_error",
            exception={
                "type": "SandboxSetupError",
                "message": str(report["setup_error"]),
                "traceback": "",
            },
        )
        return result
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        cpu_used = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
        hit_cpu = sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and cpu_used >= float(limits["cpu_s"]) - 0.05
        )
        result.update(exit_reason="cpu" if hit_cpu else "killed", signal=_signal_name(sig))
        return result
    exit_code = os.WEXITSTATUS(status)
    if isinstance(report, dict):
        result.update(
            exit_reason=report.get("exit_reason", "ok"),
            exception=report.get("exception"),
            variables=report.get("variables") or {},
            exit_code=report.get("exit_code"),
        )
    else:  # no report: the snippet left through os._exit (or closed the report pipe)
        result.update(exit_reason="exit", exit_code=exit_code)
    return result


def _text(buf: bytearray, total: int, cap: int) -> str:
    text = bytes(buf).decode("utf-8", "replace")
    if total > cap:
        text += f"\n... [output truncated: {total} bytes written, first {cap} kept] ..."
    return text


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
