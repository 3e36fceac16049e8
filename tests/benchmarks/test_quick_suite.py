"""``python -m benchmarks --quick`` end to end: every benchmark script runs, writes its JSON and
contributes rows to the combined table (what CI runs; the saved full results are not touched)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run_all import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]
BENCH_DEPS = [m for m in ("psutil", "trl", "matplotlib") if importlib.util.find_spec(m) is None]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(
    bool(BENCH_DEPS), reason=f"the benchmarks need {BENCH_DEPS} (pip install -e '.[bench]')"
)
def test_quick_suite_runs_every_benchmark(tmp_path: Path) -> None:
    saved = {p.name: p.read_bytes() for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--results-dir",
            str(tmp_path),
            "--markdown",
            str(tmp_path / "table.md"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    combined = json.loads((tmp_path / "all.json").read_text())
    assert combined["mode"] == "quick"
    statuses = {b["name"]: b["status"] for b in combined["benchmarks"]}
    assert statuses == {name: "ok" for name in BENCHMARKS}
    for name in BENCHMARKS:
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["quick"] is True and data["machine"]["cpus"] >= 1, name
    rows = {b["name"]: b["rows"] for b in combined["benchmarks"]}
    assert any(
        r[0].startswith("target: flow_grpo") and "[quick run]" in r[0] for r in rows["learning"]
    )
    assert any("vector/serial" in r[0] for r in rows["vector_throughput"])
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {name} |" in table for name in BENCHMARKS)
    # the committed full results are left as they were
    assert {
        p.name: p.read_bytes() for p in (ROOT / "benchmarks" / "results").glob("*.json")
    } == saved
