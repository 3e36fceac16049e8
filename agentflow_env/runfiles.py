"""The files a run writes: owned by that run, written atomically, checked before any work.

Every command that writes results (``evaluate``, ``view``, the learners' CLIs) follows the same
rules (DESIGN.md, section 9):

- an existing output is touched only when the user said so (``--resume`` or ``--overwrite``):
  :func:`claim_output` refuses it otherwise with an :class:`OutputPathError` naming the file and
  both options;
- a path that cannot be written (a parent that is a file, a directory without write permission)
  is refused before any work, by :func:`check_writable`;
- reports, pointers and checkpoints' small files are replaced atomically with
  :func:`atomic_write_text`: a temporary file in the same directory, ``fsync``, ``os.replace``,
  then ``fsync`` of the directory, so a kill at any moment leaves the old file or the new one.

This module imports nothing from the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = [
    "OutputPathError",
    "WriteMode",
    "atomic_write_text",
    "check_writable",
    "claim_output",
    "fsync_dir",
]

WriteMode = Literal["new", "resume", "overwrite"]


class OutputPathError(ValueError):
    """An output path the run may not or cannot write (CLIs exit with status 2)."""


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename is durable only once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename, fsync of the dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def check_writable(path: str | Path, flag: str, *, directory: bool = False) -> None:
    """Raise :class:`OutputPathError` unless ``path`` (a file, or a ``directory``) can be
    created or replaced: its nearest existing ancestor must be a writable directory."""
    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise OutputPathError(f"{flag} {str(path)!r} is a file, not a directory")
        if not directory and path.is_dir():
            raise OutputPathError(f"{flag} {str(path)!r} is a directory, not a file")
    ancestor = path if directory and path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{flag} {str(path)!r}: {str(ancestor)!r} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {str(path)!r}: {str(ancestor)!r} is not writable")


def claim_output(path: str | Path, flag: str, mode: WriteMode, *, directory: bool = False) -> None:
    """Check that this run may write ``path``: writable, and new unless resumed or overwritten.

    A directory counts as existing output when it is not empty.
    """
    check_writable(path, flag, directory=directory)
    path = Path(path)
    taken = path.is_dir() and any(path.iterdir()) if directory else path.exists()
    if taken and mode == "new":
        what = "holds a run" if directory else "exists"
        raise OutputPathError(
            f"{flag} {str(path)!r} {what}: pass --resume to continue it or --overwrite to "
            "replace it"
        )
