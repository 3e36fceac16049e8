"""The retrieval server: a local BM25 index served over Search-R1's ``/retrieve`` protocol.

:func:`make_retrieval_server` answers ``POST /retrieve`` (the wire format is
:mod:`tools.search.protocol`'s) from a :class:`~tools.search.bm25.BM25Index`, plus
``GET /health``, on a threaded stdlib HTTP server; ``python -m tools.search serve DIR`` runs it.
Bad requests get HTTP 400/404/413 with a JSON ``{"error": ...}`` body.

Load: 64 concurrent clients x 40 requests on loopback complete with no failed request
(``benchmarks/reliability.py`` measures it). The one setting that matters is the listen backlog:
socketserver's default of 5 pending connections made clients connecting at once get
"connection reset" (the failures reported in issue 22), so :class:`RetrievalHTTPServer` keeps
1024; threads, one per connection, were never the limit.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tools.search.bm25 import BM25Index
from tools.search.protocol import RETRIEVE_PATH, parse_retrieve_request, retrieve_response

__all__ = ["RetrievalHTTPServer", "RetrieveHandler", "make_retrieval_server", "serve_in_thread"]

logger = logging.getLogger(__name__)


class RetrieveHandler(BaseHTTPRequestHandler):
    """``POST /retrieve`` over a BM25Index (Search-R1 protocol) and ``GET /health``."""

    index: BM25Index
    default_top_k: int = 3
    max_queries: int = 4096
    max_body_bytes: int = 16 * 2**20
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("retrieval server: " + format, *args)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            logger.debug("retrieval server: client disconnected before the response")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.rstrip("/") == "/health":
            self._send(200, {"status": "ok", "num_passages": self.index.num_passages})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= self.max_body_bytes:
            self.close_connection = True  # the body was not read: the stream cannot be reused
            self._send(413 if length > 0 else 400, {"error": "bad or too large Content-Length"})
            return
        body = self.rfile.read(length)  # read before routing, or keep-alive would desync
        if self.path.rstrip("/") != RETRIEVE_PATH:
            self._send(404, {"error": f"no route {self.path}"})
            return
        try:
            queries, k, with_scores = self._validate(json.loads(body or b"null"))
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": str(exc)})
            return
        self._send(200, {"result": self.retrieve(queries, k, with_scores)})

    def _validate(self, request: Any) -> tuple[list[str], int, bool]:
        return parse_retrieve_request(
            request, default_top_k=self.default_top_k, max_queries=self.max_queries
        )

    def retrieve(self, queries: list[str], k: int, with_scores: bool) -> list[list[Any]]:
        """The response's ``result``: one document list per query (see ``retrieve_response``)."""
        return retrieve_response(self.index.search(queries, k), with_scores=with_scores)["result"]


class RetrievalHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server with a listen backlog sized for many clients connecting at once."""

    daemon_threads = True
    request_queue_size = 1024  # the backlog passed to listen(); socketserver's default is 5


def make_retrieval_server(
    index: BM25Index,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    default_top_k: int = 3,
    handler: type[RetrieveHandler] = RetrieveHandler,
) -> RetrievalHTTPServer:
    """A threaded HTTP server answering Search-R1 ``/retrieve`` requests from ``index``.

    ``port=0`` picks a free port (read it from ``server.server_address``). Call
    ``serve_forever()`` (e.g. in a thread) and ``shutdown()`` / ``server_close()`` to stop.
    """
    bound = type("RetrieveHandler", (handler,), {"index": index, "default_top_k": default_top_k})
    return RetrievalHTTPServer((host, port), bound)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread and return the thread."""
    thread = threading.Thread(target=server.serve_forever, name="retrieval-server", daemon=True)
    thread.start()
    return thread
