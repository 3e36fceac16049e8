"""Reliability: what ``evaluate`` does against a broken planner server, and what the retrieval
server holds, side by side in one run.

(a) ``python -m agentflow_env.evaluate`` (in-process ``main``) with its planner behind the fault
    server of ``tests/faults.py`` (a real OpenAI-compatible HTTP server on loopback), one row per
    failure mode, twice: with the defaults (preflight, ``--max-errors 0.1``) and played through
    (``--no-preflight --max-errors 1.0``). Each row: episodes recorded, errored (by kind), scored,
    wall seconds, exit status. No mode may score an episode it could not play.
(b) The retrieval server (``tools.search.serve``) under 64 concurrent clients x 40 requests on
    loopback, each client on one kept-alive connection and each on a fresh connection per
    request; and, for comparison, the same server with socketserver's default listen backlog
    (5), which reset connections. Each row: failed requests, p50/p99 latency, requests/s.

    python -m benchmarks.reliability [--quick] [--out benchmarks/results/reliability.json]

Targets: every failing mode ends with exit 3 (defaults) and errored == episodes, scored == 0
(played through) in bounded time; the retrieval server fails 0 of 2,560 requests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info

REQUEST_TIMEOUT_S, MAX_RETRIES = 1.0, 1


def _evaluate(planner: str, episodes: int, extra: list[str], tmp: Path) -> dict[str, Any]:
    from agentflow_env.evaluate import main

    out = tmp / "report.json"
    out.unlink(missing_ok=True)
    argv = ["--env", "AgentFlow-Math-v0", "--tools", "", "--planner", planner]
    argv += ["--episodes", str(episodes), "--concurrency", "4", "--out", str(out)]
    argv += ["--request-timeout", str(REQUEST_TIMEOUT_S), "--max-retries", str(MAX_RETRIES)]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main([*argv, *extra])
    wall = time.perf_counter() - start
    summary = json.loads(out.read_text())["summary"] if out.exists() else {}
    return {
        "episodes": summary.get("episodes", 0),
        "errored": summary.get("errored", 0),
        "errored_by_kind": summary.get("errored_by_kind", {}),
        "scored": summary.get("scored", 0),
        "wall_s": wall,
        "exit": code,
    }


def fault_table(episodes: int) -> list[dict[str, Any]]:
    """(a): every mode of the fault server as the planner, with and without the safeguards."""
    from tests.faults import MODES, FaultServer

    rows = []
    runs = {"defaults": [], "played through": ["--no-preflight", "--max-errors", "1.0"]}
    with FaultServer(retry_after=0.5) as server, tempfile.TemporaryDirectory() as tmp:
        _evaluate(server.spec("ok"), 1, [], Path(tmp))  # warm-up: imports, first env build
        for mode in [m for m in MODES if m != "mixed"]:
            for run, extra in runs.items():
                row = _evaluate(server.spec(mode), episodes, extra, Path(tmp))
                rows.append({"mode": mode, "run": run, **row})
    return rows


STDLIB_BACKLOG = 5
"""socketserver's default listen backlog, for the comparison row"""


def _serve(index: Any, backlog: int | None) -> Any:
    from tools.search.server import RetrievalHTTPServer, RetrieveHandler, serve_in_thread

    bound = type("H", (RetrieveHandler,), {"index": index, "default_top_k": 3})
    server_cls = RetrievalHTTPServer
    if backlog is not None:
        server_cls = type("Server", (RetrievalHTTPServer,), {"request_queue_size": backlog})
    server = server_cls(("127.0.0.1", 0), bound)
    serve_in_thread(server)
    return server


def load(
    index: Any, clients: int, requests: int, fresh: bool, backlog: int | None
) -> dict[str, Any]:
    """(b): ``clients`` threads, ``requests`` POST /retrieve each, all starting together."""
    server = _serve(index, backlog)
    url = f"http://127.0.0.1:{server.server_address[1]}/retrieve"
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    started: list[float] = []  # when the last client is ready and all of them start
    barrier = threading.Barrier(clients, action=lambda: started.append(time.perf_counter()))

    def client(c: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0 if fresh else 1)
        with httpx.Client(timeout=30.0, limits=limits) as http:
            barrier.wait()
            for j in range(requests):
                query = {"queries": [f"capital of country {(c * requests + j) % 97}"], "topk": 3}
                t0 = time.perf_counter()
                try:
                    http.post(url, json=query).raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(type(exc).__name__)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started[0]
    server.shutdown()
    server.server_close()
    cuts = quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "clients": clients,
        "requests": clients * requests,
        "connections": "fresh per request" if fresh else "kept alive",
        "backlog": backlog or _serve_backlog(),
        "failed": len(failures),
        "failure_kinds": sorted(set(failures)),
        "p50_ms": 1000 * cuts[49],
        "p99_ms": 1000 * cuts[98],
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
    }


def _serve_backlog() -> int:
    from tools.search.server import RetrievalHTTPServer

    return int(RetrievalHTTPServer.request_queue_size)


def retrieval_load(requests: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from agentflow_env.tasks.suite import make_suite
    from tools.search import BM25Index

    suite = make_suite("search", seed=0, num_tasks=3100)
    index = BM25Index.build([dict(d) for d in suite.documents], backend="numpy")
    corpus = {"passages": index.num_passages}
    rows = [
        load(index, 64, requests, fresh=False, backlog=None),
        load(index, 64, requests, fresh=True, backlog=None),
        load(index, 64, requests, fresh=True, backlog=STDLIB_BACKLOG),
    ]
    index.close()
    return corpus, rows


def _print(report: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"evaluate against a faulty planner server ({report['episodes']} episodes, "
        f"request timeout {REQUEST_TIMEOUT_S:g} s, {MAX_RETRIES} retry)",
        title_justify="left",
    )
    for col in ("mode", "run", "episodes", "errored", "scored", "wall s", "exit"):
        table.add_column(col, justify="left" if col in ("mode", "run") else "right")
    for r in report["faults"]:
        kinds = ", ".join(f"{k} {v}" for k, v in r["errored_by_kind"].items())
        errored = f"{r['errored']}" + (f" ({kinds})" if kinds else "")
        table.add_row(
            r["mode"],
            r["run"],
            str(r["episodes"]),
            errored,
            str(r["scored"]),
            f"{r['wall_s']:.1f}",
            str(r["exit"]),
        )
    console.print(table)
    load_table = Table(
        title=f"retrieval server under load ({report['corpus']['passages']:,} passages)",
        title_justify="left",
    )
    for col in ("clients x requests", "connections", "backlog", "failed", "p50 ms", "p99 ms"):
        load_table.add_column(col, justify="right")
    load_table.add_column("requests/s", justify="right")
    for r in report["retrieval"]:
        load_table.add_row(
            f"{r['clients']} x {r['requests'] // r['clients']}",
            r["connections"],
            str(r["backlog"]),
            str(r["failed"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['requests_per_s']:,.0f}",
        )
    console.print(load_table)


def run(quick: bool) -> dict[str, Any]:
    episodes = 4 if quick else 8
    faults = fault_table(episodes)
    corpus, retrieval = retrieval_load(5 if quick else 40)
    failing = [r for r in faults if r["mode"] not in ("ok", "flaky")]
    ours = [r for r in retrieval if r["backlog"] == _serve_backlog()]
    return {
        "quick": quick,
        "machine": machine_info(),
        "episodes": episodes,
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "max_retries": MAX_RETRIES,
        "faults": faults,
        "corpus": corpus,
        "retrieval": retrieval,
        "targets": {
            "failing_modes_stop_with_exit_3": all(
                r["exit"] == 3 for r in failing if r["run"] == "defaults"
            ),
            "failing_modes_never_scored": all(r["scored"] == 0 for r in failing),
            "retrieval_failed_requests": sum(r["failed"] for r in ours),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 episodes, 64 x 5 requests")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/reliability.json"),
        help="where to write the JSON report",
    )
    args = parser.parse_args(argv)
    report = run(args.quick)
    _print(report, Console(width=140))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    Console().print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
