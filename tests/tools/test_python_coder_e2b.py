"""PythonCoderTool with the E2B backend.

No E2B service is reachable here, so: construction errors, mapping of the SDK's own ``Execution``
objects into our result model, and the backend's sandbox life cycle driven through a stand-in
class with the SDK's ``create``/``run_code``/``kill`` shape that returns real SDK objects. Live
calls are marked ``e2b_live`` and skipped without ``E2B_API_KEY``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

e2b_ci = pytest.importorskip("e2b_code_interpreter")
from e2b_code_interpreter import TimeoutException  # noqa: E402
from e2b_code_interpreter.models import Execution, ExecutionError, Logs, Result  # noqa: E402

from tools.python_coder import PythonCoderTool, format_result  # noqa: E402
from tools.sandbox.e2b_backend import E2BBackend, execution_to_result  # noqa: E402
from tools.sandbox.models import E2BConfigError, ExecutionResult, SandboxLimits  # noqa: E402

LIMITS = SandboxLimits(timeout_s=5, max_output_bytes=1000)


# --- construction --------------------------------------------------------------------------------
def test_missing_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(E2BConfigError, match="E2B_API_KEY"):
        PythonCoderTool(backend="e2b")


def test_empty_key_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_API_KEY", "")
    with pytest.raises(E2BConfigError, match="backend='local'"):
        PythonCoderTool(backend="e2b")


def test_key_argument_or_env_allows_lazy_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    tool = PythonCoderTool(backend="e2b", e2b_api_key="e2b_test_key")
    assert tool.isolation_level == "e2b"
    assert tool._backend._sandbox is None  # nothing is created before the first call
    tool.close()
    monkeypatch.setenv("E2B_API_KEY", "e2b_from_env")
    with PythonCoderTool(backend="e2b") as from_env:
        assert from_env.card.name == "Python_Coder_Tool"


def test_config_error_is_a_sandbox_error() -> None:
    from tools.python_coder import SandboxError

    assert issubclass(E2BConfigError, SandboxError)


# --- mapping real SDK objects --------------------------------------------------------------------
def test_mapping_of_a_successful_execution() -> None:
    execution = Execution(
        results=[Result(text="42", is_main_result=True)],
        logs=Logs(stdout=["hello\n", "world\n"], stderr=["warn\n"]),
    )
    result = execution_to_result(execution, 0.5, LIMITS)
    assert isinstance(result, ExecutionResult)
    assert result.ok and result.exit_reason == "ok"
    assert result.stdout == "hello\nworld\n42"
    assert result.stderr == "warn\n"
    assert result.duration_s == 0.5 and result.isolation == "e2b"
    tool_result = format_result(result, LIMITS)
    assert tool_result.ok and "hello" in tool_result.output and "42" in tool_result.output


def test_mapping_of_an_error() -> None:
    trace = "Traceback (most recent call last):\n  Cell In[1], line 1\n----> 1 1/0\n" * 200
    execution = Execution(
        logs=Logs(stdout=["partial\n"]),
        error=ExecutionError(name="ZeroDivisionError", value="division by zero", traceback=trace),
    )
    result = execution_to_result(execution, 0.1, LIMITS)
    assert not result.ok and result.exit_reason == "exception"
    assert result.exception is not None
    assert result.exception.type == "ZeroDivisionError"
    assert result.exception.message == "division by zero"
    assert len(result.exception.traceback) < 4200 and "trimmed" in result.exception.traceback
    tool_result = format_result(result, LIMITS)
    assert tool_result.error == "ZeroDivisionError: division by zero"
    assert "partial" in tool_result.output


def test_mapping_of_memory_error_and_truncation() -> None:
    execution = Execution(
        logs=Logs(stdout=["x" * 3000]),
        error=ExecutionError(name="MemoryError", value="", traceback=""),
    )
    result = execution_to_result(execution, 0.1, LIMITS)
    assert result.exit_reason == "memory"
    assert result.truncated and "output truncated: 3000 bytes" in result.stdout
    assert result.stdout.startswith("x" * 1000)


def test_mapping_of_an_empty_execution() -> None:
    result = execution_to_result(Execution(), 0.0, LIMITS)
    assert result.ok and result.stdout == "" and result.stderr == "" and result.variables == {}


# --- backend life cycle (stand-in for the remote service) ----------------------------------------
class StandInSandbox:
    """Has the SDK's Sandbox shape; returns real SDK objects. Records the calls it got."""

    created: list[StandInSandbox] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.codes: list[str] = []
        self.killed = False

    @classmethod
    def create(cls, **kwargs: Any) -> StandInSandbox:
        sandbox = cls(**kwargs)
        cls.created.append(sandbox)
        return sandbox

    def run_code(
        self, code: str, timeout: float | None = None, request_timeout: float | None = None
    ) -> Execution:
        assert not self.killed
        self.codes.append(code)
        if code == "hang":
            raise TimeoutException("execution timed out")
        if code == "boom":
            raise RuntimeError("connection reset")
        return Execution(logs=Logs(stdout=[f"ran {len(self.codes)}\n"]))

    def kill(self) -> bool:
        self.killed = True
        return True


@pytest.fixture()
def e2b_tool() -> Any:
    StandInSandbox.created = []
    tool = PythonCoderTool(
        backend="e2b",
        e2b_api_key="e2b_test_key",
        timeout_s=3,
        e2b_options={"sandbox_cls": StandInSandbox},
    )
    yield tool
    tool.close()


def test_sandbox_is_reused_until_reset(e2b_tool: PythonCoderTool) -> None:
    assert e2b_tool.execute(code="print(1)").data["stdout"] == "ran 1\n"
    assert e2b_tool.execute(code="```python\nprint(2)\n```").data["stdout"] == "ran 2\n"
    assert len(StandInSandbox.created) == 1
    first = StandInSandbox.created[0]
    assert first.codes == ["print(1)", "print(2)"]
    assert first.kwargs["api_key"] == "e2b_test_key" and first.kwargs["envs"] == {}
    assert first.kwargs["allow_internet_access"] is False
    e2b_tool.reset()
    assert first.killed
    assert e2b_tool.execute(code="print(3)").data["stdout"] == "ran 1\n"
    assert len(StandInSandbox.created) == 2


def test_close_kills_the_sandbox(e2b_tool: PythonCoderTool) -> None:
    e2b_tool.execute(code="print(1)")
    e2b_tool.close()
    assert StandInSandbox.created[0].killed
    result = e2b_tool.execute(code="print(1)")
    assert not result.ok and "closed" in (result.error or "")


def test_timeouts_and_sdk_errors_become_results(e2b_tool: PythonCoderTool) -> None:
    timed_out = e2b_tool.execute(code="hang")
    assert not timed_out.ok and timed_out.data["exit_reason"] == "timeout"
    assert StandInSandbox.created[0].killed  # a busy remote kernel is not reused
    failed = e2b_tool.execute(code="boom")
    assert not failed.ok and failed.data["exit_reason"] == "sandbox_error"
    assert "connection reset" in (failed.error or "")
    assert e2b_tool.execute(code="print(1)").ok
    assert len(StandInSandbox.created) == 3


def test_backend_direct_use() -> None:
    backend = E2BBackend(LIMITS, api_key="k", sandbox_cls=StandInSandbox)
    result = backend.run("x = 1")
    assert result.ok and result.isolation == "e2b"
    backend.close()


# --- live (never runs here: no key, no internet) -------------------------------------------------
@pytest.mark.e2b_live
@pytest.mark.skipif(not os.environ.get("E2B_API_KEY"), reason="E2B_API_KEY is not set")
def test_live_e2b_round_trip() -> None:
    with PythonCoderTool(backend="e2b", timeout_s=30) as tool:
        first = tool.execute(code="x = 20 + 22\nprint(x)")
        assert first.ok and first.data["stdout"].strip() == "42"
        error = tool.execute(code="1 / 0")
        assert not error.ok and error.data["exception"]["type"] == "ZeroDivisionError"
