"""``Python_Coder_Tool``: run model-written Python in an isolated sandbox and report the outcome.

The reference implementation ran generated code in-process with ``exec`` and a timeout that never
fired. Here code never runs in the calling process:

- ``backend="local"`` (default): pre-started fork-server workers, inside bubblewrap when
  available (no network, read-only system, private /tmp, new PID namespace), each call in a fresh
  child (forked and confined before the call arrives, used once) under a private uid with
  rlimits, Landlock and seccomp; a wall-clock timeout kills every process the call started. See
  :mod:`tools.sandbox`.
- ``backend="e2b"``: a remote E2B code-interpreter sandbox (needs ``E2B_API_KEY``).

Example::

    with PythonCoderTool(timeout_s=5) as tool:
        result = tool.execute(code="x = 6 * 7\\nprint(x)")
        result.output        # 'Printed output:\\n42\\n\\nVariables:\\n  x = 42'
        result.data["exit_reason"]   # 'ok'
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from tools.base import ToolCard, ToolDemo, ToolResult
from tools.sandbox.local import DEFAULT_PRELOAD, IsolationRequest, LocalBackend
from tools.sandbox.models import (
    E2BConfigError,
    ExecutionResult,
    SandboxError,
    SandboxLimits,
    SandboxUnavailableError,
)

__all__ = [
    "PythonCoderTool",
    "PYTHON_CODER_CARD",
    "extract_code",
    "format_result",
    "SandboxError",
    "SandboxUnavailableError",
    "E2BConfigError",
]

logger = logging.getLogger(__name__)

PYTHON_CODER_CARD = ToolCard(
    name="Python_Coder_Tool",
    description=(
        "Runs a short Python 3 program in an isolated sandbox and returns what it printed, the "
        "values of simple top-level variables, and any error with its traceback. Use it for "
        "arithmetic, counting, combinatorics, algebra and checking candidate answers."
    ),
    input_types={"code": "str - a complete Python program (a ```python fenced block is fine)"},
    output_type="str - printed output, then simple variables; or the error and traceback",
    primary_input="code",
    demo_commands=(
        ToolDemo(command="print(sum(i * i for i in range(1, 11)))", description="prints 385"),
        ToolDemo(
            command="from fractions import Fraction\nx = Fraction(1, 3) + Fraction(1, 6)\nprint(x)",
            description="exact rational arithmetic, prints 1/2",
        ),
        ToolDemo(
            command="import itertools\nprint([p for p in itertools.permutations([1, 2, 3])][:2])",
            description="enumerate candidates",
        ),
    ),
    limitations=(
        "No network access and no access to files outside a private temporary directory.",
        "Each call starts from scratch: variables and imports do not carry over between calls.",
        "Wall-clock time, CPU time, memory, processes, file size and output size are limited; "
        "a program exceeding a limit is stopped and reported as an error.",
        "Standard library plus preinstalled numpy/sympy only; nothing can be pip-installed.",
    ),
    best_practices=(
        "Print the final result explicitly with print(...): printed output is what you get back.",
        "Keep programs short and self-contained; import what you use in the same call.",
        "Prefer exact arithmetic (integers, fractions.Fraction, sympy) for math answers.",
    ),
)

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)(?:```|\Z)", re.S | re.I)


def extract_code(text: str) -> str:
    """The program inside ``text``: the fenced ```python block(s) if any, else the text itself.

    Planners often wrap code in a fence, sometimes with prose around it; several fenced blocks are
    joined in order. Common indentation is removed.
    """
    blocks = [m.group(1) for m in _FENCE.finditer(text)]
    code = "\n".join(blocks) if blocks else text
    return textwrap.dedent(code).strip("\n")


_REASON_TEXT = {
    "timeout": "Execution timed out after {timeout_s:g} s; all its processes were killed.",
    "cpu": "CPU time limit of {cpu_s} s exceeded; the program was killed.",
    "memory": "Memory limit of {memory_mb} MB exceeded.",
    "file_limit": "File size limit of {max_file_mb} MB exceeded.",
    "output_limit": "Output limit exceeded (far more than {max_output_bytes} bytes printed); "
    "the program was killed.",
}


def format_result(result: ExecutionResult, limits: SandboxLimits) -> ToolResult:
    """Turn a structured result into the planner-facing :class:`ToolResult`."""
    sections: list[str] = []
    if result.stdout:
        sections.append("Printed output:\n" + result.stdout.rstrip("\n"))
    if result.stderr and result.exception is None:
        sections.append("Standard error:\n" + result.stderr.rstrip("\n"))
    if result.variables:
        lines = [f"  {name} = {value}" for name, value in result.variables.items()]
        sections.append("Variables:\n" + "\n".join(lines))
    error: str | None = None
    if not result.ok:
        error = _error_text(result, limits)
        if result.exception is not None and result.exception.traceback:
            sections.append(result.exception.traceback.rstrip("\n"))
        elif result.stderr:
            sections.append("Standard error:\n" + result.stderr.rstrip("\n"))
    elif not sections:
        sections.append("(no output; print the values you need)")
    output = "\n\n".join(sections)
    # A broken sandbox (a worker that died, a lost remote sandbox) is not the code's doing.
    infra = "sandbox" if result.exit_reason == "sandbox_error" else None
    return ToolResult(
        ok=result.ok, output=output, error=error, data=result.model_dump(), infra=infra
    )


def _error_text(result: ExecutionResult, limits: SandboxLimits) -> str:
    template = _REASON_TEXT.get(result.exit_reason)
    values = limits.model_dump()
    values["cpu_s"] = limits.effective_cpu_s
    if template is not None:
        text = template.format(**values)
        if result.exception is not None:
            text += f" ({result.exception.type}: {result.exception.message})"
        return text
    if result.exception is not None:
        return f"{result.exception.type}: {result.exception.message}"
    if result.exit_reason == "exit":
        return f"The program exited with status {result.exit_code}."
    if result.exit_reason == "killed":
        return f"The program was killed by {result.signal or 'a signal'} (it crashed)."
    return f"Execution failed ({result.exit_reason})."


class PythonCoderTool:
    """Sandboxed Python execution for the planner (satisfies :class:`tools.base.Tool`).

    Args:
        backend: ``"local"`` (isolated worker pool on this machine) or ``"e2b"`` (remote).
        isolation: local only. ``"auto"`` picks the strongest isolation that works (bubblewrap
            namespaces, else a confined process); ``"strict"`` raises
            :class:`SandboxUnavailableError` without namespace isolation; ``"process"`` never uses
            namespaces.
        timeout_s, cpu_s, memory_mb, max_processes, max_file_mb, max_open_files,
        max_output_bytes, tmpfs_mb: per-call limits, see :class:`SandboxLimits`.
        pool_size: number of pre-started workers (concurrent calls beyond it wait their turn).
        preload: modules each worker imports once so snippets find them already loaded.
        huge_pages: local only. Each worker rebuilds its memory into 2 MiB pages after the
            preload (``MADV_COLLAPSE``, Linux 6.1+; where the kernel cannot, the memory stays as
            it was), which makes forking a call's child and ending it cheaper with the same
            isolation (see ``tools/sandbox/hugepages.py``).
        max_code_chars: longer inputs are rejected without running.
        e2b_api_key, e2b_template, e2b_allow_internet: E2B options (the key defaults to
            ``E2B_API_KEY``); ``e2b_options``: further keyword arguments of
            :class:`tools.sandbox.e2b_backend.E2BBackend` (``sandbox_timeout_s``,
            ``request_timeout_s``, ``sandbox_cls``).

    Thread-safe: several threads may call :meth:`execute` at once. Use as a context manager or
    call :meth:`close` to stop the workers.
    """

    card: ToolCard = PYTHON_CODER_CARD

    def __init__(
        self,
        backend: Literal["local", "e2b"] = "local",
        isolation: IsolationRequest = "auto",
        timeout_s: float = 10.0,
        cpu_s: int | None = None,
        memory_mb: int = 1024,
        max_processes: int = 16,
        max_file_mb: int = 16,
        max_open_files: int = 64,
        max_output_bytes: int = 65536,
        tmpfs_mb: int = 64,
        pool_size: int = 2,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        max_code_chars: int = 200_000,
        e2b_api_key: str | None = None,
        e2b_template: str | None = None,
        e2b_allow_internet: bool = False,
        e2b_options: Mapping[str, Any] | None = None,
        startup_timeout_s: float = 60.0,
        huge_pages: bool = True,
    ) -> None:
        self.limits = SandboxLimits(
            timeout_s=timeout_s,
            cpu_s=cpu_s,
            memory_mb=memory_mb,
            max_processes=max_processes,
            max_file_mb=max_file_mb,
            max_open_files=max_open_files,
            max_output_bytes=max_output_bytes,
            tmpfs_mb=tmpfs_mb,
        )
        if max_code_chars < 1:
            raise ValueError("max_code_chars must be >= 1")
        self.max_code_chars = max_code_chars
        self.backend_name = backend
        self._backend: Any
        if backend == "local":
            self._backend = LocalBackend(
                self.limits,
                isolation=isolation,
                pool_size=pool_size,
                preload=preload,
                startup_timeout_s=startup_timeout_s,
                huge_pages=huge_pages,
            )
        elif backend == "e2b":
            from tools.sandbox.e2b_backend import E2BBackend

            self._backend = E2BBackend(
                self.limits,
                api_key=e2b_api_key,
                template=e2b_template,
                allow_internet_access=e2b_allow_internet,
                **dict(e2b_options or {}),
            )
        else:
            raise ValueError(f"backend must be 'local' or 'e2b', not {backend!r}")
        self._closed = False

    @property
    def isolation_level(self) -> str:
        """The isolation in force, e.g. ``bwrap+seccomp+landlock+rlimits+uid`` or ``e2b``."""
        return str(self._backend.isolation_level)

    def run(self, code: str) -> ExecutionResult:
        """Run ``code`` exactly as given and return the structured result (no fence stripping)."""
        if self._closed:
            raise SandboxError("PythonCoderTool is closed")
        return self._backend.run(code)

    def execute(self, code: Any = None, **ignored: Any) -> ToolResult:
        """Run a program and return what the planner sees. Never raises for bad input."""
        if ignored:
            logger.debug("Python_Coder_Tool ignores inputs %s", sorted(ignored))
        if self._closed:
            return ToolResult.backend_failure("Python_Coder_Tool is closed")
        if code is None:
            return ToolResult.failure("no code given: pass the program as `code`")
        if not isinstance(code, str):
            return ToolResult.failure(f"code must be a string, not {type(code).__name__}")
        if len(code) > self.max_code_chars:
            return ToolResult.failure(
                f"code is {len(code)} characters long; the limit is {self.max_code_chars}"
            )
        program = extract_code(code)
        if not program.strip():
            return ToolResult.failure("no code given: the program is empty")
        if "\x00" in program:
            return ToolResult.failure("code contains a NUL character")
        return format_result(self._backend.run(program), self.limits)

    def reset(self) -> None:
        """Forget per-episode state (the E2B sandbox; local calls are always fresh)."""
        self._backend.reset()

    def close(self) -> None:
        """Stop workers / remote sandboxes. Idempotent."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> PythonCoderTool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort: do not leave workers behind
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass
