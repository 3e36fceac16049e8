"""Run every benchmark in benchmarks/, print one combined table, write JSON.

Each benchmark runs as its own process (``--quick`` in CI), writes its JSON under
``--results-dir``, and contributes its headline numbers and targets to the combined table.

    python -m benchmarks [--quick] [--only search_throughput,sandbox_latency] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
Row = tuple[str, str, str, str]  # metric, value, target, met


def _search(d: dict[str, Any]) -> list[Row]:
    best = {(r["backend"], r["mode"]): r["qps"] for r in d["rows"] if r["level"] == "tool"}
    rows = [(f"queries/s {b} {m} ({d['passages']:,} passages)", f"{q:,.0f}", "", "") for (b, m), q in best.items()]
    rows.append(("best batched queries/s", f"{d['best_tool_batched_qps']:,.0f}", f">= {d['target_batched_qps']:,.0f}",
                 _ok(d["target_met"])))
    rows.append(("index build s", f"{d['build']['build_s']:.2f}", "", ""))
    return rows


def _sandbox(d: dict[str, Any]) -> list[Row]:
    rows = []
    for r in d["rows"]:
        target = f"<= {d['target_median_ms']:g}" if "strict" in r["setup"] and r["callers"] == 1 else ""
        met = _ok(r["median_ms"] <= d["target_median_ms"]) if target else ""
        rows.append((f"{r['setup']} x{r['callers']} median/p95 ms", f"{r['median_ms']:.1f} / {r['p95_ms']:.1f}", target, met))
    return rows


def _vector(d: dict[str, Any]) -> list[Row]:
    rows = []
    targets = {"callable-50ms": 5.0, "hf-tiny": 3.0}
    for r in d["throughput"]:
        target = targets.get(r["engine"]) if r["N"] == 16 else None
        rows.append((f"{r['engine']} N={r['N']} vector/serial episodes/s", f"{r['vector_over_serial']:.1f}x",
                     f">= {target:g}x" if target else "", _ok(r["vector_over_serial"] >= target) if target else ""))
    for o in d["offline_overhead"]:
        rows.append((f"offline env overhead per step ({o['family']})", f"{100 * o['overhead_frac']:.1f}% "
                     f"({o['overhead_ms']:.2f} ms)", "<= 10%", _ok(o["overhead_frac"] <= 0.10)))
    return rows


def _generic(d: dict[str, Any]) -> list[Row]:
    summary = d.get("summary", {})
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v), "", "") for k, v in summary.items()]
    if "target_met" in d:
        rows.append(("target met", str(d["target_met"]), str(d.get("target", "")), _ok(bool(d["target_met"]))))
    return rows or [("(see JSON)", "", "", "")]


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


# name -> (script, summarizer, extra quick args)
BENCHMARKS: dict[str, tuple[str, Callable[[dict[str, Any]], list[Row]], list[str]]] = {
    "search_throughput": ("search_throughput.py", _search, []),
    "sandbox_latency": ("sandbox_latency.py", _sandbox, []),
    "vector_throughput": ("vector_throughput.py", _vector, []),
    "learning": ("learning.py", _generic, []),
    "update_throughput": ("update_throughput.py", _generic, []),
}


def run_one(name: str, quick: bool, results_dir: Path, timeout_s: float) -> dict[str, Any]:
    script, summarize, extra = BENCHMARKS[name]
    path = ROOT / script
    out = results_dir / f"{name}.json"
    if not path.exists():
        return {"name": name, "status": "missing", "rows": [("(script not present)", "", "", "")]}
    cmd = [sys.executable, str(path), "--out", str(out), *(["--quick", *extra] if quick else [])]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT.parent, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"name": name, "status": f"timeout after {timeout_s:g} s", "rows": []}
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"name": name, "status": f"failed ({proc.returncode})", "seconds": elapsed,
                "rows": [("error", " | ".join(tail)[:300], "", "NO")]}
    data = json.loads(out.read_text())
    return {"name": name, "status": "ok", "seconds": elapsed, "json": str(out), "rows": summarize(data)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (what CI and the README table use)")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results")
    parser.add_argument("--out", type=Path, default=None, help="combined JSON (default: RESULTS_DIR/all.json)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    console = Console()
    results = []
    for name in names:
        console.log(f"running {name} ...")
        results.append(run_one(name, args.quick, args.results_dir, args.timeout))
    table = Table(title=f"agentflow-gym benchmarks ({'quick' if args.quick else 'full'}; "
                        f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()})")
    for col in ("benchmark", "metric", "value", "target", "met"):
        table.add_column(col)
    for res in results:
        rows = res["rows"] or [("", "", "", "")]
        for i, (metric, value, target, met) in enumerate(rows):
            label = f"{res['name']} [{res['status']}]" if i == 0 else ""
            table.add_row(label, metric, value, target, met)
    console.print(table)
    combined = args.out or args.results_dir / "all.json"
    combined.write_text(json.dumps({"quick": args.quick, "machine": {"cpus": os.cpu_count(),
                                    "platform": platform.platform()}, "benchmarks": results}, indent=2))
    console.print(f"wrote {combined}")
    return 0 if all(r["status"] in ("ok", "missing") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
