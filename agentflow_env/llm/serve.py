"""Run a local model behind a real OpenAI-compatible server in a subprocess: ``transformers serve``
(:func:`serve_transformers`) or the project's own server (:func:`serve_hf`).

:func:`serve_transformers` is a context manager for tests, examples and quick local benchmarks::

    with serve_transformers("learners/assets/tiny-warmstart") as server:
        engine = make_engine(server.spec)          # openai:MODEL@http://127.0.0.1:PORT/v1
        ...

It starts ``python -m transformers.cli.transformers serve MODEL_DIR --device cpu`` on 127.0.0.1
(the running interpreter's transformers, so no PATH surprises), offline (``HF_HUB_OFFLINE=1``,
an empty private hub cache: ``GET /v1/models`` answers 500 without one), with ``threads`` torch
threads, polls ``/health`` until it answers or ``timeout_s`` passes, and yields a
:class:`TransformersServer`. On exit (normal, exception, Ctrl-C) the server's whole process group
gets SIGTERM, then SIGKILL after ``stop_timeout_s``, and is reaped: no process is left behind
(unless this Python process itself is SIGKILLed, which no cleanup code can see).

Failures raise typed errors carrying an excerpt of the server's log (the lines that name the error,
then the tail): :class:`ServeStartError` (the
server exited), :class:`ServeTimeoutError` (not ready in time), :class:`EngineDependencyError`
(``transformers[serving]`` missing), :class:`EngineConfigError` (bad arguments).

Behaviour of ``transformers serve`` worth knowing (measured with transformers 5.23): requests run
one at a time; ``temperature`` is ignored unless the model's ``generation_config.json`` sets
``do_sample``; ``n``, ``logprobs`` and ``response_format`` are ignored (the last with a warning
in its log: a constrained request comes back unconstrained, which the openai engine detects);
an unknown field such as vLLM's ``structured_outputs`` is refused with HTTP 422; the served
model's name is the path it was started with (:attr:`TransformersServer.model`).

:func:`serve_hf` runs ``python -m agentflow_env.llm serve hf:MODEL`` the same way: the project's
own server (:mod:`agentflow_env.llm.server`), which honours constraints (vLLM's
``structured_outputs`` and ``response_format``), ``n`` and ``logprobs``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentflow_env.llm.common import EngineConfigError, EngineDependencyError, EngineError
from tools.log_excerpt import read_log_excerpt

__all__ = [
    "SERVING_MODULES",
    "ServeError",
    "ServeStartError",
    "ServeTimeoutError",
    "TransformersServer",
    "free_port",
    "serve_hf",
    "serve_transformers",
]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVING_MODULES = ("fastapi", "uvicorn")
"""modules ``transformers serve`` imports beyond transformers
(``pip install 'transformers[serving]'``)"""
_LOG_EXCERPT_CHARS = 3000
"""bound on the log excerpt an error carries (whole lines: the ones naming the error, then the
tail)"""
_POLL_S = 0.25
# A free port is picked by binding port 0, then released for the server: another process can grab
# it in between. If the server then fails with "address already in use", retry on a new port.
_PORT_ATTEMPTS = 3


class ServeError(EngineError):
    """The server could not be started; ``log_tail`` holds an excerpt of its output.

    The excerpt keeps whole lines: the first lines that name the failure (a usage error, a
    traceback) and the last lines, within a bound (:func:`tools.log_excerpt.log_excerpt`).
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- server log (tail) ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


class ServeStartError(ServeError):
    """The server process exited before it answered ``/health``."""


class ServeTimeoutError(ServeError, TimeoutError):
    """The server did not answer ``/health`` within the timeout (it has been stopped)."""


@dataclass(frozen=True)
class TransformersServer:
    """A running server process, ``transformers serve`` or the project's own (valid inside the
    ``with`` block only)."""

    url: str
    """OpenAI base URL, ``http://127.0.0.1:PORT/v1``"""
    model: str
    """the served model's name: the path it was started with (use it as the request's model)"""
    port: int
    pid: int
    """process id of the server (the leader of its own process group)"""
    log_path: Path
    """the server's combined stdout/stderr"""
    startup_s: float
    """seconds from launch until ``/health`` answered"""

    @property
    def spec(self) -> str:
        """Engine spec for :func:`agentflow_env.llm.make_engine` (``openai:MODEL@URL``)."""
        return f"openai:{self.model}@{self.url}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (chosen by the OS)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path) -> str:
    return read_log_excerpt(path, max_chars=_LOG_EXCERPT_CHARS)


def _check_args(
    model_dir: str | os.PathLike[str], port: int, timeout_s: float, threads: int
) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise EngineConfigError(
            f"model_dir {str(model_dir)!r} is not a local model directory (no config.json)"
        )
    if not 0 <= port <= 65535:
        raise EngineConfigError(f"port must be in [0, 65535] (0: a free one), got {port}")
    if not timeout_s > 0:
        raise EngineConfigError(f"timeout_s must be > 0, got {timeout_s}")
    if threads < 1:
        raise EngineConfigError(f"threads must be >= 1, got {threads}")
    missing = [m for m in SERVING_MODULES if importlib.util.find_spec(m) is None]
    if missing or importlib.util.find_spec("transformers") is None:
        raise EngineDependencyError(
            f"transformers serve needs {missing or ['transformers']}: "
            "pip install 'transformers[serving]'"
        )
    return path


def _stop(
    proc: subprocess.Popen[bytes], stop_timeout_s: float, name: str = "transformers serve"
) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers, and reap the server."""
    for sig, wait_s in ((signal.SIGTERM, stop_timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)  # the group: anything the server spawned goes too
        except ProcessLookupError:  # the whole group is gone already
            pass
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored %s for %.0f s", name, proc.pid, sig.name, wait_s)
            continue
        # The leader is reaped; a child it left could still hold the group: make sure it is gone.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    raise ServeError(f"{name} (pid {proc.pid}) survived SIGKILL")  # pragma: no cover


def _wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    deadline: float,
    timeout_s: float,
    log_path: Path,
    name: str = "transformers serve",
) -> None:
    url = f"http://{HOST}:{port}/health"
    while True:
        if proc.poll() is not None:
            raise ServeStartError(
                f"{name} exited with code {proc.returncode} before it was ready",
                _log_tail(log_path),
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:  # not listening yet (refused), or busy loading
            pass
        if time.monotonic() >= deadline:
            raise ServeTimeoutError(
                f"{name} did not answer {url} within {timeout_s:g} s", _log_tail(log_path)
            )
        time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))


def _command(model: Path, port: int, device: str, extra_args: tuple[str, ...]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(model),
        "--device",
        device,
        "--host",
        HOST,
        "--port",
        str(port),
        *extra_args,
    ]


@contextmanager
def serve_transformers(
    model_dir: str | os.PathLike[str],
    *,
    port: int = 0,
    timeout_s: float = 120.0,
    threads: int = 1,
    env: Mapping[str, str] | None = None,
    device: str = "cpu",
    extra_args: tuple[str, ...] = (),
    log_path: str | os.PathLike[str] | None = None,
    stop_timeout_s: float = 15.0,
) -> Iterator[TransformersServer]:
    """Serve ``model_dir`` with ``transformers serve`` on 127.0.0.1 while the block runs.

    Args:
        model_dir: a local model directory (with ``config.json``); its path is the served model
            name.
        port: TCP port; 0 picks a free one (retried on a new port if it was taken meanwhile).
        timeout_s: seconds to wait for ``/health`` (loading a model takes ~10 s on 2 busy cores).
        threads: torch/OpenMP threads of the server (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``).
        env: extra environment variables, applied last (e.g. ``{"HF_HUB_OFFLINE": "0"}``).
        device: ``--device`` of the server.
        extra_args: more ``transformers serve`` options, e.g. ``("--continuous-batching",)``.
        log_path: where the server's output goes; default: a temporary file removed on exit
            (errors carry its tail either way).
        stop_timeout_s: seconds between SIGTERM and SIGKILL on exit.

    Yields:
        The running server (URL, model name, pid, log path).

    Raises:
        EngineConfigError: bad arguments. EngineDependencyError: ``transformers[serving]`` missing.
        ServeStartError: the server exited early. ServeTimeoutError: not ready within ``timeout_s``.
    """
    model = _check_args(model_dir, port, timeout_s, threads)
    with _run(
        lambda chosen: _command(model, chosen, device, tuple(extra_args)),
        "transformers serve",
        str(model),
        port=port,
        timeout_s=timeout_s,
        threads=threads,
        env=env,
        log_path=log_path,
        stop_timeout_s=stop_timeout_s,
    ) as server:
        yield server


@contextmanager
def serve_hf(
    model: str | os.PathLike[str],
    *,
    name: str | None = None,
    port: int = 0,
    timeout_s: float = 120.0,
    threads: int = 1,
    env: Mapping[str, str] | None = None,
    device: str = "cpu",
    max_batch_size: int = 16,
    log_path: str | os.PathLike[str] | None = None,
    stop_timeout_s: float = 15.0,
) -> Iterator[TransformersServer]:
    """Serve a local model with the project's own server (``python -m agentflow_env.llm serve``,
    :mod:`agentflow_env.llm.server`: constraints, ``n`` and ``logprobs`` honoured) on 127.0.0.1
    while the block runs. Same process handling, arguments and errors as
    :func:`serve_transformers`.

    Args:
        model: a local model directory or a fetched model's name (``hf:`` is optional).
        name: the served model name (default: ``model`` without ``hf:``).
        max_batch_size: rows per ``generate`` call of the server's engine.
    """
    spec = str(model) if str(model).startswith("hf:") else f"hf:{model}"
    served = name or spec[len("hf:") :]
    if not 0 <= port <= 65535 or not timeout_s > 0 or threads < 1 or max_batch_size < 1:
        raise EngineConfigError(
            f"need 0 <= port <= 65535, timeout_s > 0, threads >= 1, max_batch_size >= 1; got "
            f"{port}, {timeout_s}, {threads}, {max_batch_size}"
        )
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise EngineDependencyError(
            f"the server needs {missing}: pip install 'agentflow-gym[serve]'"
        )
    command = [sys.executable, "-m", "agentflow_env.llm", "serve", spec, "--name", served]
    command += ["--device", device, "--max-batch-size", str(max_batch_size), "--host", HOST]
    with _run(
        lambda chosen: [*command, "--port", str(chosen)],
        "agentflow_env.llm serve",
        served,
        port=port,
        timeout_s=timeout_s,
        threads=threads,
        env=env,
        log_path=log_path,
        stop_timeout_s=stop_timeout_s,
    ) as server:
        yield server


@contextmanager
def _run(
    command: Callable[[int], list[str]],
    name: str,
    model: str,
    *,
    port: int,
    timeout_s: float,
    threads: int,
    env: Mapping[str, str] | None,
    log_path: str | os.PathLike[str] | None,
    stop_timeout_s: float,
) -> Iterator[TransformersServer]:
    """Start ``command(port)`` offline in its own process group, wait for ``/health``, yield the
    server, stop it on exit (see the module docstring)."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llm-serve-")))
        (tmp / "hf-cache").mkdir()
        log = Path(log_path) if log_path is not None else tmp / "serve.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        child_env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(tmp / "hf-cache"),
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            **(env or {}),
        }
        started = time.monotonic()
        deadline = started + timeout_s
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            chosen = port or free_port()
            with log.open("wb") as out:  # the child keeps its own descriptor
                # New session: the server leads its own process group, so stopping it reaches any
                # process it spawned, and a Ctrl-C in our terminal does not hit it mid-cleanup.
                proc = subprocess.Popen(
                    command(chosen),
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                _wait_ready(proc, chosen, deadline, timeout_s, log, name)
            except ServeStartError:
                _stop(proc, stop_timeout_s, name)
                taken = "address already in use" in _log_tail(log).lower()
                if port == 0 and taken and attempt < _PORT_ATTEMPTS:
                    logger.info("port %d was taken before the server bound it; retrying", chosen)
                    continue
                raise
            except BaseException:
                _stop(proc, stop_timeout_s, name)
                raise
            break
        stack.callback(_stop, proc, stop_timeout_s, name)
        server = TransformersServer(
            url=f"http://{HOST}:{chosen}/v1",
            model=model,
            port=chosen,
            pid=proc.pid,
            log_path=log,
            startup_s=time.monotonic() - started,
        )
        logger.info(
            "%s ready at %s (pid %d) after %.1f s", name, server.url, proc.pid, server.startup_s
        )
        yield server
