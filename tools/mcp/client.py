"""One connection to one MCP server, usable from any thread: :class:`MCPConnection`.

The SDK (``mcp``) is async (anyio); tools are called synchronously from several threads of the
environment's tool pool. So each connection runs an event loop in a background thread (anyio's
blocking portal) and holds one SDK session there, opened by a task that keeps it until the
connection closes; calls from any thread are submitted to that loop and run concurrently over
the one session. Every wait is bounded:

- connecting (spawn or HTTP, the handshake, listing the tools) by ``connect_timeout_s``;
- each call by ``timeout_s`` (the SDK's request timeout, which also tells the server to cancel),
  with a short grace for the SDK to give up before the calling thread stops waiting;
- closing: the SDK closes a stdio server's stdin, then terminates and kills its process group,
  each step with its own timeout; a session that does not finish its exit in time is cancelled.

A server that exits or drops the connection makes the session dead: the call that saw it gets an
error result, and the next call opens a new session (a stdio server is started again). A stdio
server gets only the SDK's short list of inherited variables (``HOME``, ``PATH``, ...) plus
``env``: the caller's API keys do not leak to it. Its standard error goes to a log file whose
excerpt explains a crash.

Failures are returned as values (:class:`CallFailure`), never raised from :meth:`call`;
:class:`MCPConnectionError` is raised only by the constructor (a server that cannot start fails
where it is configured, not mid-episode).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import logging
import math
import os
import shlex
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import mcp_types
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tools.log_excerpt import read_log_excerpt

__all__ = ["CallFailure", "MCPConnection", "MCPConnectionError", "ServerTarget", "parse_server"]

logger = logging.getLogger(__name__)

_CALL_GRACE_S = 5.0
"""after the SDK's own request timeout, how long a caller still waits for it to give up"""
_CLOSE_TIMEOUT_S = 10.0
"""a session's exit (stdin closed, then SIGTERM, then SIGKILL: ~6.5 s at most in the SDK)"""
_LISTING_PAGES = 100
"""tools/list pages read at most (a server whose cursor never ends cannot hang a connect)"""


class MCPConnectionError(ConnectionError):
    """The MCP server could not be started, reached or initialized (or did not list tools)."""


@dataclass(frozen=True)
class ServerTarget:
    """Where a server is: a stdio command or a streamable-HTTP URL."""

    command: tuple[str, ...] = ()
    url: str | None = None

    def describe(self) -> str:
        return self.url if self.url is not None else shlex.join(self.command)


def parse_server(server: str | Sequence[str]) -> ServerTarget:
    """A stdio command (a list of strings or a shell-like string) or an ``http(s)://`` URL."""
    if isinstance(server, str):
        text = server.strip()
        if text.startswith(("http://", "https://")):
            return ServerTarget(url=text)
        try:
            command = shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"cannot read the MCP server command {server!r}: {exc}") from exc
    elif isinstance(server, Sequence) and all(isinstance(part, str) for part in server):
        command = list(server)
    else:
        raise ValueError(
            "server must be a command (list of strings or a string) or an http(s):// URL, "
            f"got {server!r}"
        )
    if not command or not command[0]:
        raise ValueError("the MCP server command is empty: give e.g. 'python my_server.py'")
    return ServerTarget(command=tuple(command))


@dataclass(frozen=True)
class CallFailure:
    """A call that produced no tool result; ``kind`` says why."""

    kind: Literal["timeout", "crash", "connect", "closed", "protocol"]
    message: str
    server_log: str = ""
    """an excerpt of a stdio server's standard error (a crash's or a failed start's)"""


@dataclass(eq=False)
class _Session:
    """One live SDK session and what its owner task needs to end it."""

    client: Client | None = None
    stop: anyio.Event | None = None
    scope: anyio.CancelScope | None = None
    owner: cf.Future[None] | None = None
    alive: bool = True
    log_path: str | None = None
    listing: list[mcp_types.Tool] = field(default_factory=list)


class _WatchedStream:
    """The transport's read stream, reporting its end: the server exited or hung up."""

    def __init__(self, inner: Any, session: _Session) -> None:
        self._inner, self._session = inner, session

    @property
    def last_context(self) -> Any:  # the SDK reads it when the transport provides it
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._session.alive = False
            raise

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError):
            self._session.alive = False
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._inner.__aexit__(*exc_info)


_OPEN: weakref.WeakSet[MCPConnection] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # the portal thread is a daemon: reap servers the caller forgot
    for connection in list(_OPEN):
        connection.close()


class MCPConnection:
    """One MCP server, one session at a time, shared by every tool it lists.

    Args:
        server: a stdio command (``["python", "server.py"]`` or ``"python server.py"``) or a
            streamable-HTTP URL (``"http://127.0.0.1:8765/mcp"``).
        env: extra environment variables of a stdio server (over the SDK's short inherited list).
        cwd: working directory of a stdio server.
        headers: HTTP headers for every request to an HTTP server (e.g. ``Authorization``).
        timeout_s: per call; a longer call is an error result (and the server is told to
            cancel it).
        connect_timeout_s: starting or reaching the server, its handshake and tool listing.

    Raises:
        MCPConnectionError: the server did not start, answer or list its tools in time.
    """

    def __init__(
        self,
        server: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 60.0,
    ) -> None:
        if not (timeout_s > 0 and connect_timeout_s > 0):
            raise ValueError(
                f"timeout_s and connect_timeout_s must be > 0, got {timeout_s}, {connect_timeout_s}"
            )
        self.target = parse_server(server)
        if self.target.url is None and shutil.which(self.target.command[0]) is None:
            raise MCPConnectionError(
                f"cannot start the MCP server {self.target.describe()!r}: "
                f"{self.target.command[0]!r} is not an executable on PATH"
            )
        if self.target.url is not None and (env or cwd):
            raise ValueError("env and cwd apply to a stdio server, not to an HTTP URL")
        if self.target.url is None and headers:
            raise ValueError("headers apply to an HTTP server, not to a stdio command")
        self.env = dict(env or {})
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.headers = dict(headers or {})
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self._lock = threading.Lock()
        self._closed = False
        self._users = 0
        self._session: _Session | None = None
        self._portal_cm = start_blocking_portal(backend="asyncio", name="mcp-client")
        self._portal: BlockingPortal = self._portal_cm.__enter__()
        _OPEN.add(self)
        try:
            session = self._open()
        except BaseException:
            self.close()
            raise
        self._session = session
        self.listing: list[mcp_types.Tool] = list(session.listing)
        """the tools the server listed when this connection was made"""

    # ----------------------------------------------------------------------------- sessions
    @contextlib.asynccontextmanager
    async def _transport(self, session: _Session) -> AsyncIterator[tuple[Any, Any]]:
        """The SDK transport's streams, the read stream watched for the server's exit."""
        async with AsyncExitStack() as stack:
            if self.target.url is not None:
                import httpx2  # the SDK's HTTP client (a dependency of mcp)

                http = await stack.enter_async_context(
                    httpx2.AsyncClient(
                        headers=self.headers,
                        timeout=httpx2.Timeout(self.connect_timeout_s, read=self.timeout_s + 30),
                    )
                )
                transport: Any = streamable_http_client(self.target.url, http_client=http)
            else:
                fd, session.log_path = tempfile.mkstemp(prefix="mcp-server-", suffix=".log")
                errlog = stack.enter_context(os.fdopen(fd, "w", encoding="utf-8"))
                params = StdioServerParameters(
                    command=self.target.command[0],
                    args=list(self.target.command[1:]),
                    env=self.env or None,
                    cwd=self.cwd,
                )
                transport = stdio_client(params, errlog=errlog)
            read, write = await stack.enter_async_context(transport)
            yield _WatchedStream(read, session), write

    async def _hold(self, session: _Session, ready: cf.Future[None]) -> None:
        """Owner task: open the session, publish it, keep it until asked to stop."""
        session.stop = anyio.Event()
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self.connect_timeout_s) as scope:
                session.scope = scope
                async with Client(
                    self._transport(session), read_timeout_seconds=self.timeout_s
                ) as client:
                    session.listing = await _list_tools(client)
                    session.client = client
                    scope.deadline = math.inf  # connected: only a stop ends the session now
                    ready.set_result(None)
                    await session.stop.wait()
            if scope.cancelled_caught and not ready.done():
                ready.set_exception(
                    TimeoutError(f"no answer within connect_timeout_s={self.connect_timeout_s:g}")
                )
        except Exception as exc:  # reported to the thread waiting for the connection
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.warning(
                    "MCP session of %s ended: %s", self.target.describe(), _describe(exc)
                )
        finally:
            session.alive = False
            session.client = None
            if not ready.done():
                ready.set_exception(ConnectionError("the session ended before it was ready"))

    def _open(self) -> _Session:
        session = _Session()
        ready: cf.Future[None] = cf.Future()
        session.owner = self._portal.start_task_soon(self._hold, session, ready)
        try:
            ready.result(timeout=self.connect_timeout_s + _CALL_GRACE_S)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # e.g. KeyboardInterrupt: stop, then let it go
                self._end(session)
                raise
            log = self._log_excerpt(session)
            note = f"\nserver stderr:\n{log}" if log else ""
            self._end(session)
            detail = _describe(exc)
            raise MCPConnectionError(
                f"cannot connect to the MCP server {self.target.describe()!r}: {detail}{note}"
            ) from exc
        return session

    @staticmethod
    async def _signal_stop(session: _Session) -> None:
        if session.stop is not None:
            session.stop.set()
        if session.client is None and session.scope is not None:
            session.scope.cancel()  # still connecting: give up now

    def _end(self, session: _Session) -> None:
        """Stop a session's owner task and wait (bounded) for its server to be gone."""
        owner = session.owner
        if owner is not None:
            with contextlib.suppress(RuntimeError):  # the portal already stopped
                self._portal.call(self._signal_stop, session)
            try:
                owner.result(timeout=_CLOSE_TIMEOUT_S)
            except cf.TimeoutError:
                logger.warning("the MCP session of %s did not end in time", self.target.describe())
                owner.cancel()
            except BaseException:  # its own error was reported when it happened
                pass
        if session.log_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(session.log_path)
            session.log_path = None

    @staticmethod
    def _log_excerpt(session: _Session) -> str:
        if session.log_path is None or not os.path.exists(session.log_path):
            return ""
        return read_log_excerpt(session.log_path, max_chars=2000).strip()

    def _live_session(self) -> _Session | CallFailure:
        with self._lock:
            if self._closed:
                return CallFailure("closed", "the MCP connection is closed")
            session = self._session
            if session is not None and session.alive and session.client is not None:
                return session
            if session is not None:
                self._end(session)
                self._session = None
            logger.info("reconnecting to the MCP server %s", self.target.describe())
            try:
                self._session = self._open()
            except MCPConnectionError as exc:
                return CallFailure("connect", str(exc))
            return self._session

    # --------------------------------------------------------------------------------- calls
    def call(
        self, name: str, arguments: Mapping[str, Any]
    ) -> mcp_types.CallToolResult | CallFailure:
        """Call tool ``name``; the server's result, or why there is none. Never raises."""
        session = self._live_session()
        if isinstance(session, CallFailure):
            return session
        client = session.client
        if client is None:  # closed between the check and here
            return CallFailure("closed", "the MCP session ended")
        try:
            future = self._portal.start_task_soon(
                client.call_tool, name, dict(arguments), self.timeout_s
            )
        except RuntimeError as exc:  # the portal stopped: the connection is closing
            return CallFailure("closed", f"the MCP connection is closed ({exc})")
        try:
            return future.result(timeout=self.timeout_s + _CALL_GRACE_S)
        except cf.TimeoutError:
            future.cancel()
            return self._timeout()
        except MCPError as exc:
            return self._failure(session, exc)
        except cf.CancelledError:
            return CallFailure("closed", "the call was cancelled: the MCP connection is closing")
        except Exception as exc:  # e.g. a result that is not valid MCP: the server's fault
            if isinstance(exc, (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)):
                session.alive = False
            return CallFailure("protocol", f"the MCP call failed: {_describe(exc)}")

    def _timeout(self) -> CallFailure:
        return CallFailure(
            "timeout", f"the MCP tool call timed out after {self.timeout_s:g} s (it was cancelled)"
        )

    def _failure(self, session: _Session, exc: MCPError) -> CallFailure:
        if exc.code == mcp_types.REQUEST_TIMEOUT:
            return self._timeout()
        if exc.code == mcp_types.CONNECTION_CLOSED or not session.alive:
            session.alive = False
            log = self._log_excerpt(session)
            logger.warning(
                "the MCP server %s closed the connection during a call%s",
                self.target.describe(),
                f"; its stderr:\n{log}" if log else "",
            )
            again = "reconnected" if self.target.url is not None else "restarted"
            return CallFailure(
                "crash",
                f"the MCP server {self.target.describe()!r} closed the connection during the "
                f"call (it exited or crashed); it is {again} on the next call",
                log,
            )
        return CallFailure("protocol", f"the MCP server answered with an error: {exc}")

    # ------------------------------------------------------------------------------- closing
    def acquire(self) -> None:
        """Count one more user (a tool); :meth:`release` by the last one closes."""
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        """Whether a session is up now (False once the server exited, until a call reconnects)."""
        session = self._session
        return session is not None and session.alive and session.client is not None

    def close(self) -> None:
        """End the session (a stdio server is stopped and reaped) and the loop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            self._end(session)
        with contextlib.suppress(RuntimeError):
            self._portal.call(self._portal.stop, True)
        with contextlib.suppress(Exception):
            self._portal_cm.__exit__(None, None, None)
        _OPEN.discard(self)

    def __enter__(self) -> MCPConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _list_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(_LISTING_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools
    raise MCPConnectionError(f"the tool listing did not end within {_LISTING_PAGES} pages")


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the first leaf of an exception group (the SDK's task groups wrap
    a refused connection in one)."""
    inner = getattr(exc, "exceptions", None)  # duck-typed: BaseExceptionGroup is 3.11+
    while isinstance(inner, (list, tuple)) and inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
