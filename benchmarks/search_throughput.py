"""Search benchmark: BM25 index time, memory and queries/s (single vs batched).

Builds a deterministic synthetic corpus (pseudo-words with Zipf-distributed frequencies, titled
passages of 30-60 words), indexes it with ``tools.search.BM25Index``, saves and memory-maps
it, then measures retrieval throughput per bm25s backend (numpy; numba when installed):

- ``engine``: ``BM25Index.search`` (tokenize + score + top-k + passage lookup);
- ``tool``: ``SearchTool.execute`` / ``batch_execute`` (adds validation and formatting).

"single" sends one query per call, "batched" sends ``--batch-size`` queries per call. Queries
are 3-5 words of a randomly chosen passage; recall@k (the source passage is in the top k) is
reported as a sanity check that the numbers come from real retrieval.

    python benchmarks/search_throughput.py            # 100k passages
    python benchmarks/search_throughput.py --quick    # 10k passages (CI)

Target (issue 3): >= 1,500 queries/s batched at 100k passages.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from tools.search import BM25Index, IndexSettings, Passage, SearchTool, numba_available
from tools.search.bm25 import Backend

if __package__ in (
    None,
    "",
):  # run as a script (python benchmarks/x.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info

TARGET_BATCHED_QPS = 1500.0
_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ren",
    "tor",
    "vak",
    "sel",
    "dun",
    "pri",
    "zo",
    "gal",
    "fen",
    "ith",
    "or",
    "bel",
    "mar",
    "quo",
    "sta",
    "ny",
    "wex",
    "ul",
    "dra",
    "shi",
    "pen",
)


def make_corpus(n_passages: int, seed: int, vocab_size: int = 30_000) -> list[Passage]:
    """Deterministic synthetic passages (same seed and sizes -> same corpus)."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < vocab_size:
        word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 6))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    probs = 1.0 / np.arange(1, vocab_size + 1) ** 1.05
    probs /= probs.sum()
    lengths = rng.integers(30, 61, size=n_passages)
    body_ids = rng.choice(vocab_size, size=int(lengths.sum()), p=probs)
    title_ids = rng.integers(vocab_size // 10, vocab_size, size=(n_passages, 2))
    passages, pos = [], 0
    for i in range(n_passages):
        body = body_ids[pos : pos + lengths[i]]
        pos += lengths[i]
        title = " ".join(words[j].capitalize() for j in title_ids[i])
        passages.append(Passage(id=str(i), title=title, text=" ".join(words[j] for j in body)))
    return passages


def make_queries(passages: list[Passage], n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` queries of 3-5 words drawn from random passages, and each query's source id."""
    rng = np.random.default_rng(seed + 1)
    queries, sources = [], []
    for doc in rng.integers(0, len(passages), size=n):
        passage = passages[int(doc)]
        words = passage.title.split() + passage.text.split()
        picks = rng.choice(len(words), size=int(rng.integers(3, 6)), replace=False)
        queries.append(" ".join(words[i] for i in sorted(picks)))
        sources.append(str(passage.id))
    return queries, sources


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_build(passages: list[Passage], out_dir: Path) -> dict[str, Any]:
    """Index time, memory and save/load time."""
    rss0 = _rss()
    index, build_s = _timed(lambda: BM25Index.build(passages, IndexSettings(), backend="numpy"))
    rss_build = _rss() - rss0
    _, save_s = _timed(lambda: index.save(out_dir))
    arrays = index.memory_bytes()
    index.close()
    loaded, load_s = _timed(lambda: BM25Index.load(out_dir, backend="numpy"))
    loaded.close()
    disk = sum(f.stat().st_size for f in out_dir.iterdir())
    return {
        "build_s": build_s,
        "save_s": save_s,
        "load_mmap_s": load_s,
        "score_array_bytes": arrays,
        "rss_delta_build_bytes": rss_build,
        "index_dir_bytes": disk,
    }


def bench_backend(
    index_dir: Path,
    backend: Backend,
    queries: list[str],
    sources: list[str],
    n_single: int,
    batch_size: int,
    top_k: int,
) -> list[dict[str, Any]]:
    """Throughput rows (engine/tool x single/batched) for one backend."""
    tool, open_s = _timed(lambda: SearchTool(index_dir=index_dir, backend=backend, top_k=top_k))
    index = tool.index
    rows: list[dict[str, Any]] = []

    def row(level: str, mode: str, n: int, seconds: float, **extra: Any) -> None:
        rows.append(
            {
                "backend": backend,
                "level": level,
                "mode": mode,
                "queries": n,
                "seconds": seconds,
                "qps": n / seconds,
                "open_s": open_s,
                **extra,
            }
        )

    single = queries[:n_single]
    _, s = _timed(lambda: [index.search([q], top_k) for q in single])
    row("engine", "single", len(single), s)
    hits, s = _timed(
        lambda: [
            h
            for i in range(0, len(queries), batch_size)
            for h in index.search(queries[i : i + batch_size], top_k)
        ]
    )
    recall = float(
        np.mean([src in {h.id for h in hs} for hs, src in zip(hits, sources, strict=False)])
    )
    row("engine", "batched", len(queries), s, recall_at_k=recall)
    _, s = _timed(lambda: [tool.execute(query=q) for q in single])
    row("tool", "single", len(single), s)
    results, s = _timed(
        lambda: [
            r
            for i in range(0, len(queries), batch_size)
            for r in tool.batch_execute(queries[i : i + batch_size])
        ]
    )
    assert all(r.ok for r in results)
    row("tool", "batched", len(queries), s)
    tool.close()
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10k passages, fewer queries (CI)")
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--single", type=int, default=1000, help="queries timed one by one")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="numpy,numba")
    parser.add_argument("--out", default="benchmarks/results/search_throughput.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.passages, args.queries, args.single = 10_000, 2000, 500
    console = Console()
    passages, gen_s = _timed(lambda: make_corpus(args.passages, args.seed))
    queries, sources = make_queries(passages, args.queries, args.seed)
    console.print(f"generated {len(passages):,} passages in {gen_s:.1f} s")
    backends: list[Backend] = []
    for name in args.backends.split(","):
        if name not in ("numpy", "numba"):
            parser.error(f"unknown backend {name!r}: choose numpy and/or numba")
        if name == "numba" and not numba_available():
            console.print("[yellow]numba is not installed: skipping the numba backend[/yellow]")
            continue
        backends.append(name)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        build = bench_build(passages, Path(tmp))
        rows = [
            r
            for b in backends
            for r in bench_backend(
                Path(tmp), b, queries, sources, args.single, args.batch_size, args.top_k
            )
        ]
    best_batched = max(r["qps"] for r in rows if r["mode"] == "batched" and r["level"] == "tool")
    report = {
        "benchmark": "search_throughput",
        "quick": args.quick,
        "passages": args.passages,
        "queries": args.queries,
        "top_k": args.top_k,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "build": build,
        "rows": rows,
        "target_batched_qps": TARGET_BATCHED_QPS,
        "best_tool_batched_qps": best_batched,
        "target_met": best_batched >= TARGET_BATCHED_QPS,
        "machine": machine_info(numba=numba_available()),
    }
    _print(console, report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {out}")
    return report


def _print(console: Console, report: dict[str, Any]) -> None:
    b = report["build"]
    table = Table(title=f"BM25 index, {report['passages']:,} passages")
    for col in (
        "build (tokenize+index)",
        "save",
        "load (mmap)",
        "score arrays",
        "RSS delta",
        "on disk",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        f"{b['build_s']:.2f} s",
        f"{b['save_s']:.2f} s",
        f"{b['load_mmap_s']:.3f} s",
        f"{b['score_array_bytes'] / 2**20:.1f} MiB",
        f"{b['rss_delta_build_bytes'] / 2**20:.0f} MiB",
        f"{b['index_dir_bytes'] / 2**20:.1f} MiB",
    )
    console.print(table)
    table = Table(
        title=f"Retrieval throughput (top-{report['top_k']}, batch {report['batch_size']})"
    )
    for col in ("backend", "level", "mode", "queries", "q/s", "open", "recall@k"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        recall = f"{r['recall_at_k']:.3f}" if "recall_at_k" in r else ""
        table.add_row(
            r["backend"],
            r["level"],
            r["mode"],
            str(r["queries"]),
            f"{r['qps']:,.0f}",
            f"{r['open_s']:.2f} s",
            recall,
        )
    console.print(table)
    verdict = "[green]met[/green]" if report["target_met"] else "[red]NOT met[/red]"
    console.print(
        f"target >= {report['target_batched_qps']:,.0f} q/s batched: {verdict} "
        f"(best {report['best_tool_batched_qps']:,.0f} q/s)"
    )


if __name__ == "__main__":
    main()
