"""RetrievalServerSearchTool against real HTTP servers on 127.0.0.1 (Search-R1 /retrieve protocol).

The servers are the package's own ``make_retrieval_server`` over a real BM25 index; fault
injection (HTTP 500, hanging, malformed bodies) wraps that real handler.
"""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tools.base import Tool
from tools.search import (
    BM25Index,
    RetrievalServerSearchTool,
    RetrieveHandler,
    RetryPolicy,
    SearchTool,
    make_retrieval_server,
    serve_in_thread,
)

DOCS = [
    {
        "id": "c1",
        "title": "Varnok Industries",
        "text": "Varnok Industries was founded by Elira Tosk.",
    },
    {"id": "c2", "title": "Elira Tosk", "text": "Elira Tosk was born in Mardale in 1931."},
    {"id": "c3", "title": "Mardale", "text": "Mardale is a town on the Orvessa river."},
    {"id": "c4", "title": "Orvessa", "text": "The Orvessa river flows into Lake Quen."},
    {"id": "c5", "title": "Lake Quen", "text": "Lake Quen lies in Belvaria."},
]
REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(timeout=2.0, max_retries=2, backoff=0.01)


class ScriptedHandler(RetrieveHandler):
    """The real /retrieve handler, preceded by scripted faults (one per request)."""

    script: list[str] = []
    requests: list[dict[str, Any]] = []
    release = threading.Event()
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        with self.lock:
            action = self.script.pop(0) if self.script else "ok"
        if action == "ok":
            super().do_POST()
            return
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).requests.append({"fault": action})
        if action == "500":
            self._send(500, {"error": "transient"})
        elif action == "400":
            self._send(400, {"error": "bad request"})
        elif action == "hang":
            self.release.wait(timeout=10)  # far longer than the client's timeout
            self._send(200, {"result": []})
        elif action == "garbage":
            data = b"<html>not json</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif action == "wrong-shape":
            self._send(200, {"results": "nope"})
        elif action == "contents-only":
            # a dense Search-R1 server: documents carry only "contents", no scores
            out = [
                [{"id": h.id, "contents": f'"{h.title}"\n{h.text}'} for h in hits]
                for hits in self.index.search(["Orvessa river"], 2)
            ]
            self._send(200, {"result": out})

    def _validate(self, request: Any) -> tuple[list[str], int, bool]:
        type(self).requests.append(request)
        return super()._validate(request)


@pytest.fixture(scope="module")
def index() -> Iterator[BM25Index]:
    idx = BM25Index.build(DOCS, backend="numpy")
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def running(index: BM25Index) -> Iterator[tuple[str, type[ScriptedHandler]]]:
    handler = type("H", (ScriptedHandler,), {"script": [], "requests": []})
    srv = make_retrieval_server(index, port=0, handler=handler)
    serve_in_thread(srv)
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def server(running: tuple[str, Any]) -> Iterator[tuple[str, type[ScriptedHandler]]]:
    url, handler = running
    handler.script.clear()
    handler.requests.clear()
    handler.release = threading.Event()
    yield url, handler
    handler.release.set()  # frees any handler thread still hanging


def _ask(url: str, query: str, retry: RetryPolicy = FAST) -> Any:
    with RetrievalServerSearchTool(url, retry=retry) as tool:
        return tool.execute(query=query)


def test_results_match_local_search(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, handler = server
    remote = RetrievalServerSearchTool(url, top_k=2, retry=FAST)
    local = SearchTool(DOCS, top_k=2)
    assert isinstance(remote, Tool)
    assert remote.card.name == "Retrieval_Search_Tool"
    for query in ("who founded Varnok Industries", "Mardale town", "Lake Quen Belvaria"):
        got, want = remote.execute(query=query), local.execute(query=query)
        assert got.ok, got.error
        assert got.output == want.output
        assert [h["id"] for h in got.data["hits"]] == [h["id"] for h in want.data["hits"]]
        assert got.data["hits"][0]["score"] == pytest.approx(want.data["hits"][0]["score"])
    assert handler.requests[0] == {
        "queries": ["who founded Varnok Industries"],
        "topk": 2,
        "return_scores": True,
    }
    remote.close()


def test_batch_is_one_request(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, handler = server
    remote = RetrievalServerSearchTool(url + "/retrieve", name="Search_Tool", retry=FAST)
    assert remote.card.name == "Search_Tool"
    results = remote.batch_execute(["Elira Tosk", "", "Orvessa river", 5])
    remote.close()
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[0].data["hits"][0]["title"] == "Elira Tosk"
    assert results[2].output.startswith("Doc 1 (Title: Orvessa)")
    assert len(handler.requests) == 1 and handler.requests[0]["queries"] == [
        "Elira Tosk",
        "Orvessa river",
    ]


def test_contents_only_documents_without_scores(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, handler = server
    handler.script.extend(["contents-only"])
    result = _ask(url, "Orvessa river", FAST)
    assert result.ok, result.error
    assert result.data["hits"][0]["title"] == "Orvessa"
    assert result.data["hits"][0]["text"] == "The Orvessa river flows into Lake Quen."
    assert (
        result.output.splitlines()[0]
        == "Doc 1 (Title: Orvessa) The Orvessa river flows into Lake Quen."
    )


def test_retries_5xx_then_succeeds(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, handler = server
    handler.script.extend(["500", "500"])
    result = _ask(url, "Elira Tosk", FAST)
    assert result.ok, result.error
    assert [r.get("fault") for r in handler.requests] == ["500", "500", None]


def test_gives_up_after_bounded_retries(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, handler = server
    handler.script.extend(["500"] * 5)
    result = _ask(url, "Elira Tosk", FAST)
    assert not result.ok
    assert "after 3 attempt(s)" in (result.error or "") and "HTTP 500" in (result.error or "")
    assert len(handler.requests) == 3


def test_client_error_is_not_retried(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, handler = server
    handler.script.extend(["400"])
    result = _ask(url, "Elira Tosk", FAST)
    assert not result.ok and "HTTP 400" in (result.error or "")
    assert len(handler.requests) == 1


def test_hanging_server_times_out_cleanly(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, handler = server
    handler.script.extend(["hang", "hang"])
    policy = RetryPolicy(timeout=0.3, max_retries=1, backoff=0.01)
    start = time.monotonic()
    result = _ask(url, "Elira Tosk", policy)
    elapsed = time.monotonic() - start
    assert not result.ok and "timed out" in (result.error or "")
    assert elapsed < 3.0  # 2 attempts x 0.3 s, never the server's 10 s
    handler.release.set()


@pytest.mark.parametrize("fault", ["garbage", "wrong-shape"])
def test_malformed_responses_are_errors(
    server: tuple[str, type[ScriptedHandler]], fault: str
) -> None:
    url, handler = server
    handler.script.extend([fault])
    result = _ask(url, "Elira Tosk", FAST)
    assert not result.ok
    assert "not JSON" in (result.error or "") or "malformed" in (result.error or "")


def test_server_down_is_a_clean_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tool = RetrievalServerSearchTool(
        f"http://127.0.0.1:{port}", retry=RetryPolicy(timeout=1.0, max_retries=2, backoff=0.01)
    )
    start = time.monotonic()
    results = tool.batch_execute(["a", "b"])
    assert time.monotonic() - start < 5
    for result in results:
        assert not result.ok and "ConnectError" in (result.error or "")
        assert result.infra == "backend"  # the backend failed, not the query
    tool.close()
    assert "closed" in (tool.execute(query="a").error or "")


def test_server_validates_requests(server: tuple[str, type[ScriptedHandler]]) -> None:
    url, _ = server
    with httpx.Client(timeout=5) as client:
        assert client.get(url + "/health").json() == {"status": "ok", "num_passages": len(DOCS)}
        assert client.post(url + "/retrieve", json={"queries": "x"}).status_code == 400
        assert (
            client.post(url + "/retrieve", json={"queries": ["x"], "topk": -1}).status_code == 400
        )
        assert client.post(url + "/nope", json={}).status_code == 404
        plain = client.post(url + "/retrieve", json={"queries": ["Mardale"], "topk": 1}).json()
    doc = plain["result"][0][0]
    assert doc["title"] == "Mardale" and doc["contents"].startswith('"Mardale"\n')


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="http"):
        RetrievalServerSearchTool("127.0.0.1:8000")
    with pytest.raises(ValueError, match="top_k"):
        RetrievalServerSearchTool("http://127.0.0.1:1", top_k=0)


def test_cli_serve_end_to_end(tmp_path: Path, sigint_caught: None) -> None:
    """`python -m tools.search index` then `serve`, queried by the client, as a user would."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    run = [sys.executable, "-m", "tools.search"]
    subprocess.run(
        [*run, "index", str(corpus), "--out", str(tmp_path / "idx")],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with subprocess.Popen(
        [*run, "serve", str(tmp_path / "idx"), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "server did not announce its address"
            line = proc.stdout.readline()
            url = re.search(r"http://\S+/retrieve", line)
            assert url, line
            result = _ask(url.group(0), "Lake Quen Belvaria")
            assert result.ok, result.error
            assert result.data["hits"][0]["id"] == "c5"
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the CLI stops cleanly with exit code 0
            try:  # generous: a loaded CI machine (the CLI's clean stop took >10 s once there)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]


def test_many_clients_connecting_at_once_all_get_answers(index: BM25Index) -> None:
    """64 clients open a fresh connection per request at the same moment: none is refused or
    reset (socketserver's default backlog of 5 lost some; the load figures are in
    benchmarks/reliability.py)."""
    srv = make_retrieval_server(index, port=0)
    serve_in_thread(srv)
    url = f"http://127.0.0.1:{srv.server_address[1]}/retrieve"
    start = threading.Barrier(64)
    failures: list[str] = []

    def client(c: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection every request
        with httpx.Client(timeout=30, limits=limits) as http:
            start.wait()
            for j in range(5):
                try:
                    http.post(url, json={"queries": [f"Lake Quen {c} {j}"]}).raise_for_status()
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(64)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        srv.shutdown()
        srv.server_close()
    assert failures == []


def test_cli_bad_paths_and_a_taken_port_are_one_line_errors(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    run = [sys.executable, "-m", "tools.search"]

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*run, *argv], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )

    under_a_file = cli("index", str(corpus), "--out", str(corpus / "idx"))
    assert under_a_file.returncode == 2 and "Traceback" not in under_a_file.stderr
    assert cli("index", str(corpus), "--out", str(tmp_path / "idx")).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = cli("serve", str(tmp_path / "idx"), "--port", port)
    assert busy.returncode == 2 and "Traceback" not in busy.stderr
    assert "in use" in busy.stderr
    missing = cli("serve", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not a search index" in missing.stderr
