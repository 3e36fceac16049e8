"""The async benchmark's remote services (benchmarks/async_rollout.py): a server's slots are
shared by every caller, so concurrent collectors cannot get more capacity than it has; the
remote search returns exactly the local search's results."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pytest

from benchmarks.async_rollout import UNLIMITED, RemoteSearch, RemoteServer, _config


def _two_callers(server: RemoteServer, n: int) -> float:
    """Two threads send ``n`` requests each at the same moment; the seconds until both are done."""
    start = threading.Barrier(3, timeout=30)

    def caller() -> None:
        start.wait()
        server.call(n)

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(60)
    return time.perf_counter() - t0


def test_a_servers_slots_are_shared_by_all_callers() -> None:
    server = RemoteServer((0.1, 0.1), slots=2)
    try:
        took = _two_callers(server, 3)
    finally:
        server.close()
    assert server.requests == 6
    assert server.peak == 2  # never more requests in service than slots, whoever sends them
    assert took >= 0.29  # 6 requests of 0.1 s through 2 slots: 3 rounds at least
    assert server.waited_s >= 2 * 0.1


def test_an_unlimited_server_serves_every_caller_at_once() -> None:
    server = RemoteServer((1.0, 1.0), slots=UNLIMITED)
    _two_callers(server, 3)
    assert server.requests == 6 and server.peak == 6
    server.call(0)
    assert server.requests == 6


def _args(**kw: object) -> argparse.Namespace:
    base = {
        "eval_samples": 1,
        "threads": 1,
        "queries": 2,
        "eval_tasks": 8,
        "latency_ms": 50.0,
        "tool_latency_ms": "10-20",
    }
    return argparse.Namespace(**{**base, **kw})


def test_the_remote_search_gives_the_local_results(tmp_path: Path) -> None:
    cfg, remotes = _config("remote-all+search-4", 1, 0, 2, _args(), tmp_path, 2)
    try:
        assert cfg.rollout.max_staleness == 1 and cfg.rollout.collectors == 2
        (tool,) = cfg.env.tools
        assert isinstance(tool, RemoteSearch) and tool.card.name == "Search_Tool"
        assert remotes.engine is not None and remotes.engine.slots == UNLIMITED
        assert remotes.search is not None and remotes.search.slots == 4
        queries = ["capital", "founder of", ""]
        got = tool.batch_execute(queries)
        assert [r.model_dump() for r in got] == [
            r.model_dump() for r in tool.inner.batch_execute(queries)
        ]
        assert got[-1].ok is False  # bad input stays the tool's own error result
        assert tool.execute(query="capital").model_dump() == got[0].model_dump()
        assert remotes.search.requests == 4
        tool.close()  # the envs close it: the wrapped tool must survive for the other envs
        assert tool.inner.batch_execute(["capital"])[0].ok
    finally:
        remotes.close()
    with pytest.raises(ValueError, match="unknown setting part 'remote8'"):
        _config("remote8", 0, 0, 1, _args(), tmp_path, 0)
