"""``serve_transformers``: a real ``transformers serve`` subprocess serving the shipped tiny
planner,
readiness, typed errors with the server's log, and no process left behind on any exit path."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from agentflow_env.llm import (
    EngineConfigError,
    EngineDependencyError,
    GenerationRequest,
    make_engine,
)
from agentflow_env.llm.serve import (
    SERVING_MODULES,
    ServeError,
    ServeStartError,
    ServeTimeoutError,
    TransformersServer,
    serve_transformers,
)
from tests.conftest import REPO_ROOT

MODEL = REPO_ROOT / "learners" / "assets" / "tiny-warmstart"
MISSING = [m for m in SERVING_MODULES if importlib.util.find_spec(m) is None]
needs_serve = pytest.mark.skipif(
    bool(MISSING),
    reason=f"transformers serve needs {MISSING} (pip install 'transformers[serving]')",
)


def _server_children() -> set[int]:
    """Our live child processes running ``transformers serve`` (zombies count: not reaped)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if (
                "transformers.cli.transformers" in " ".join(child.cmdline())
                or child.status() == "zombie"
            ):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@contextmanager
def _no_server_left() -> Iterator[None]:
    before = _server_children()
    yield
    assert _server_children() - before == set()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Boom(Exception):
    pass


@needs_serve
def test_serves_the_model_then_stops_and_reaps_it_even_when_the_block_raises() -> None:
    seen: TransformersServer | None = None
    with (
        _no_server_left(),
        pytest.raises(_Boom),
        serve_transformers(MODEL, timeout_s=120) as server,
    ):
        seen = server
        assert server.url == f"http://127.0.0.1:{server.port}/v1" and server.model == str(MODEL)
        assert psutil.Process(server.pid).is_running() and 0 < server.startup_s < 120
        # 500 unless HF_HUB_CACHE exists (it lists cached hub models: none here, offline)
        with urllib.request.urlopen(f"{server.url}/models", timeout=10) as resp:
            assert resp.status == 200 and isinstance(json.load(resp)["data"], list)
        with make_engine(server.spec) as engine:  # the served model answers under its name
            (result,) = engine.generate(
                [
                    GenerationRequest(
                        prompt="Question: Where was Ada born?\n", sampling={"max_tokens": 8}
                    )
                ]
            )
        assert result.error is None and result.completion_tokens and result.completion_tokens > 0
        assert server.log_path.is_file()
        raise _Boom
    assert seen is not None
    assert not psutil.pid_exists(seen.pid)  # terminated and reaped (a zombie would still exist)
    assert not _listening(seen.port) and not seen.log_path.exists()  # the temp log went with it


@needs_serve
def test_a_server_not_ready_in_time_is_stopped_and_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "serve.log"
    with (
        _no_server_left(),
        pytest.raises(ServeTimeoutError, match=r"did not answer .*/health within 0.05 s"),
        serve_transformers(MODEL, timeout_s=0.05, log_path=log),
    ):
        pytest.fail("the block must not run")
    assert log.is_file()  # a caller-given log is kept for post-mortems


@needs_serve
def test_a_server_that_exits_raises_start_error_with_the_log_tail() -> None:
    with (
        _no_server_left(),
        pytest.raises(ServeStartError, match="exited with code") as info,
        serve_transformers(MODEL, timeout_s=120, extra_args=("--no-such-option",)),
    ):
        pytest.fail("the block must not run")
    assert "no-such-option" in info.value.log_tail and "server log (tail)" in str(info.value)
    assert isinstance(info.value, ServeError)
    # The line that names the mistake is kept whole, however long the option list printed after
    # it (transformers 5.25 prints every valid option), and the excerpt stays bounded.
    lines = info.value.log_tail.splitlines()
    assert any("no such option" in line.lower() and "--no-such-option" in line for line in lines), (
        lines
    )
    assert len(info.value.log_tail) <= 3000


@needs_serve
def test_an_explicit_port_already_taken_is_a_start_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            _no_server_left(),
            pytest.raises(ServeStartError) as info,
            serve_transformers(MODEL, port=port, timeout_s=150),
        ):
            pytest.fail("the block must not run")
    assert "address already in use" in info.value.log_tail.lower()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_dir": "/no/such/model"}, "not a local model directory"),
        ({"port": 70000}, "port must be in"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"threads": 0}, "threads must be >= 1"),
    ],
)
def test_bad_arguments_raise_config_errors_before_launching(kwargs: dict, message: str) -> None:
    args = {"model_dir": MODEL, **kwargs}
    with (
        _no_server_left(),
        pytest.raises(EngineConfigError, match=message),
        serve_transformers(args.pop("model_dir"), **args),
    ):
        pytest.fail("the block must not run")


def test_missing_serving_dependencies_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.modules[name] = None is how Python marks a module as not importable: find_spec -> None
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with (
        pytest.raises(EngineDependencyError, match=r"needs \['uvicorn'\].*transformers\[serving\]"),
        serve_transformers(MODEL),
    ):
        pytest.fail("the block must not run")
