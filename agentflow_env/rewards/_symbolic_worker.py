"""The child process behind :mod:`agentflow_env.rewards.symbolic`: Math-Verify on one request.

Reads JSON lines ``{"pred": str, "gold": str}`` on stdin and answers each with one JSON line
``{"equal": bool}`` (or ``{"error": str}``) on stdout. The first line it writes says whether
Math-Verify loaded: ``{"ready": true, "version": ...}`` or ``{"ready": false, "error": ...}``.
Math-Verify's own signal-based timeouts are switched off: the parent bounds each request's
wall-clock time and kills this process when one runs over, which works from any thread.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


def _wrap(text: str) -> str:
    """Bare LaTeX (``\\sqrt{8}``) is read as math only inside ``$...$``."""
    return text if ("$" in text or "\\boxed" in text or "\\[" in text) else f"${text}$"


def main() -> int:
    logging.disable(logging.WARNING)  # "timeout is disabled" notices: the parent bounds time
    out = sys.stdout
    try:
        from importlib.metadata import version

        from math_verify import parse, verify
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        out.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 0
    out.write(json.dumps({"ready": True, "version": version("math-verify")}) + "\n")
    out.flush()

    def read(text: str) -> list[Any]:
        parsed = parse(_wrap(text), parsing_timeout=None)
        return parsed if parsed else parse(text, parsing_timeout=None)

    for line in sys.stdin:
        try:
            request = json.loads(line)
            gold, pred = read(request["gold"]), read(request["pred"])
            equal = bool(gold and pred and verify(gold, pred, timeout_seconds=None))
            reply: dict[str, Any] = {"equal": equal}
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
