"""Excerpts of a child process's log that keep the line saying what went wrong.

A fixed-size tail of a log is not enough: a CLI that prints its usage error first and then a page
of valid options (``transformers serve --no-such-option`` does since transformers 5.25) pushes the
one useful line out of the tail, and a byte-offset tail starts mid-word. :func:`log_excerpt`
keeps whole lines: the first lines that name a failure (error, usage, traceback, "no such
option", ...) and as many of the last lines as fit, in their original order, with a marker where
lines were left out, within a size bound. Errors that carry a child's log (the model server's
start errors, the sandbox worker's) build their message with it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["CAUSE_PATTERN", "log_excerpt", "read_log_excerpt"]

CAUSE_PATTERN = re.compile(
    r"error|usage:|no such (?:option|file|command)|traceback|exception|failed|fatal|"
    r"cannot|could not|unrecognized|invalid|denied|not found|already in use|killed",
    re.IGNORECASE,
)
"""a line matching this names the failure (literal alternatives only: linear time on any line)"""

_MAX_LINE_CHARS = 600
"""a longer line is shortened in the middle (a minified JSON blob must not eat the budget)"""
_READ_LIMIT = 1 << 20
"""bytes read from each end of a larger log file"""


def _clip_line(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    keep = max(0, limit - 20)
    return f"{line[: keep // 2]} [...] {line[len(line) - keep // 2 :]}"


def log_excerpt(text: str, *, max_chars: int = 4000, max_cause_lines: int = 8) -> str:
    """Whole lines of ``text``: the first failure-naming lines and the last lines, within
    ``max_chars``.

    Args:
        text: the log (any size).
        max_chars: bound on the result's length (markers included); at least 200.
        max_cause_lines: at most this many failure-naming lines are kept from before the tail.

    Returns:
        The chosen lines in their original order, ``[... N lines left out ...]`` between gaps.
        A log that fits is returned whole (trailing blank lines dropped).
    """
    if max_chars < 200:
        raise ValueError(f"max_chars must be >= 200, got {max_chars}")
    lines = [_clip_line(line, _MAX_LINE_CHARS) for line in text.rstrip().splitlines()]
    if sum(len(line) + 1 for line in lines) <= max_chars:
        return "\n".join(lines)
    # Half the budget at most goes to cause lines, so the tail (the latest state) always shows.
    chosen: set[int] = set()
    used = 0
    for i, line in enumerate(lines):
        if len(chosen) >= max_cause_lines or used + len(line) + 1 > max_chars // 2:
            break
        if CAUSE_PATTERN.search(line):
            chosen.add(i)
            used += len(line) + 1
    marker_room = 40 * (len(chosen) + 1)
    for i in range(len(lines) - 1, -1, -1):
        if i in chosen:
            continue
        if used + len(lines[i]) + 1 + marker_room > max_chars:
            break
        chosen.add(i)
        used += len(lines[i]) + 1
    out: list[str] = []
    previous = -1
    for i in sorted(chosen):
        if i > previous + 1:
            out.append(f"[... {i - previous - 1} lines left out ...]")
        out.append(lines[i])
        previous = i
    if previous < len(lines) - 1:  # only when the last line alone is over budget
        out.append(f"[... {len(lines) - 1 - previous} lines left out ...]")
    return "\n".join(out)


def read_log_excerpt(path: str | os.PathLike[str], *, max_chars: int = 4000) -> str:
    """:func:`log_excerpt` of a log file (its first and last MiB when larger); never raises."""
    try:
        with Path(path).open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(0)
            if size <= 2 * _READ_LIMIT:
                raw = fh.read()
            else:
                head = fh.read(_READ_LIMIT)
                fh.seek(size - _READ_LIMIT)
                raw = head + b"\n[... middle of a large log not read ...]\n" + fh.read()
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return log_excerpt(raw.decode("utf-8", errors="replace"), max_chars=max_chars)
