"""Sandbox internals of :mod:`tools.python_coder`.

- :mod:`.models`: limits and the structured execution result (pydantic);
- :mod:`.launcher`: bubblewrap command line / plain process, and what isolation is available;
- :mod:`.worker`, :mod:`.confine`, :mod:`.runner`: the fork server and what runs in each child
  (pre-forked: set up before its call arrives, one call each), with :mod:`.calls` (a child's
  pipes and hand-off), :mod:`.holder` (keeps a call's memory mapped so its exit is quick) and
  :mod:`.results` (the result message); these run inside the sandbox and import only the
  standard library and pyseccomp;
- :mod:`.pool`: host-side worker processes and the thread-safe pool;
- :mod:`.local`, :mod:`.e2b_backend`: the two backends behind ``PythonCoderTool``.
"""

from tools.sandbox.models import (
    E2BConfigError,
    ExceptionInfo,
    ExecutionResult,
    ExitReason,
    SandboxError,
    SandboxLimits,
    SandboxUnavailableError,
)

__all__ = [
    "E2BConfigError",
    "ExceptionInfo",
    "ExecutionResult",
    "ExitReason",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailableError",
]
