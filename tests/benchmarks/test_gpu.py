"""The GPU check (``python -m benchmarks.gpu``): its dry run on this CPU measures every section
with the code the GPU runs; budgets turn into ``skipped: over budget`` rows, never overruns; the
wheel helper's pins, size check and download."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu, gpu_wheels
from benchmarks.gpu_common import Recorder
from benchmarks.gpu_sections import SECTIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_dry_run_measures_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and not report["gpu_figures"]
    assert report["plan"]["device"] == "cpu" and report["device_info"]["device"] == "cpu"
    sections = report["sections"]
    assert list(sections) == list(SECTIONS)
    has_trl = importlib.util.find_spec("trl") is not None
    for name, sec in sections.items():
        expected = "ok" if name != "trl" or has_trl else "skipped: trl is not importable"
        assert sec["status"].startswith(expected), (name, sec)
        assert sec["seconds"] <= sec["budget_s"]

    gen = sections["generation"]["rows"]
    assert [(r["model"], r["batch"]) for r in gen] == [
        (m, b) for m in ("qwen2.5-0.5b", "qwen2.5-1.5b") for b in (1, 16, 64)
    ]
    for r in gen:
        assert 0 < r["new_tokens"] <= r["batch"] * 8 and r["tokens_per_s"] > 0
        assert r["peak_memory_mb"] > 0
    assert gen[3]["params_m"] > gen[0]["params_m"]

    upd = sections["update"]["rows"]
    assert {r["variant"] for r in upd} == {
        "recompute old log-probs (no-grad forward)",
        "packed, gradient checkpointing off",
        "packed, gradient checkpointing on",
        "per_turn, gradient checkpointing off",
    }
    packed = next(r for r in upd if r["variant"] == "packed, gradient checkpointing off")
    per_turn = next(r for r in upd if r["variant"] == "per_turn, gradient checkpointing off")
    assert packed["action_tokens"] == per_turn["action_tokens"] == 6 * 2 * 8
    assert packed["sequence_tokens"] < per_turn["sequence_tokens"]  # packing scores turns once

    steps = sections["tiny_step"]["rows"]
    assert [(r["step"], r["recompute_old_logprobs"]) for r in steps] == [(1, False), (2, True)]
    assert all(r["time/rollout_s"] > 0 and r["time/update_s"] > 0 for r in steps)
    # fp32 on the CPU: the trainer's recomputed old log-probs are the sampler's
    assert steps[1]["train/old_logprob_max_abs_diff"] <= 1e-5
    assert abs(steps[1]["train/ratio"] - 1.0) <= 1e-5
    assert "train/old_logprob_max_abs_diff" not in steps[0]

    dist = sections["distributed"]
    by_mode = {r["mode"]: r for r in dist["rows"]}
    assert not by_mode["none"]["process_group"]
    assert by_mode["ddp"]["process_group"] and not by_mode["ddp"]["sharded"]
    assert by_mode["fsdp"]["process_group"] and by_mode["fsdp"]["sharded"]
    assert by_mode["ddp"]["backend"] == by_mode["fsdp"]["backend"] == "gloo"
    assert dist["parameters_moved"] > 100 * dist["atol"]
    assert all(c["equal"] for c in dist["comparisons"].values())
    assert set(dist["comparisons"]) == {"ddp", "fsdp"}

    if has_trl:
        [trl_row] = sections["trl"]["rows"]
        assert trl_row["action_tokens"] == packed["action_tokens"] and trl_row["tokens_per_s"] > 0
    table = out.with_suffix(".md").read_text()
    assert "DRY RUN" in table and "| section | measure | value | status |" in table
    assert table.count("\n|") >= 2 + len(gen) + len(upd) + len(steps)


def test_sections_without_time_left_are_skipped_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu.json"
    start = time.perf_counter()
    assert gpu.main(["--dry-run", "--budget-s", "5", "--out", str(out)]) == 0
    assert time.perf_counter() - start < 30
    report = json.loads(out.read_text())
    assert {n: s["status"] for n, s in report["sections"].items()} == {
        n: "skipped: over budget" for n in SECTIONS
    }
    assert "skipped: over budget" in out.with_suffix(".md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_a_section_past_its_budget_is_killed_and_recorded(tmp_path: Path) -> None:
    start = time.perf_counter()
    sec = gpu.run_one("distributed", 2.0, True, tmp_path)
    assert time.perf_counter() - start < 20  # killed at 2 s, its process group with it
    assert sec["status"].startswith("skipped: over budget (killed after 2 s")
    assert "log_excerpt" in sec


def test_unknown_sections_and_a_missing_gpu_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as exc:
        gpu.main(["--sections", "generation,warp_drive", "--dry-run"])
    assert exc.value.code == 2
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exc:
            gpu.main([])
        assert exc.value.code == 2


def test_recorder_keeps_rows_on_disk_and_skips_what_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "section.json"
    rec = Recorder(path, deadline=time.time() + 60)
    calls = []
    took = rec.measure({"row": 1}, 0.0, lambda: calls.append(1) or {"value": 3})
    assert took >= 0 and json.loads(path.read_text())["rows"] == [
        {"row": 1, "status": "ok", "value": 3}
    ]
    rec.measure({"row": 2}, 120.0, lambda: calls.append(2) or {})  # 120 s do not fit in 60
    assert calls == [1]
    assert json.loads(path.read_text())["rows"][1] == {"row": 2, "status": "skipped: over budget"}
    rec.measure({"row": 3}, 0.0, lambda: {"status": "failed (exit 1)"})
    assert json.loads(path.read_text())["rows"][2]["status"] == "failed (exit 1)"
    assert gpu._rows_status(rec.data["rows"]) == "failed: 1 of 3 rows failed"
    assert gpu._rows_status(rec.data["rows"][:2]) == "partial: 1 of 2 rows skipped over budget"


# ------------------------------------------------------------------------------------- wheels
def test_wheel_pins_are_the_tested_versions() -> None:
    pinned = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.strip().split("==")
            pinned[gpu_wheels.normalize(name)] = version
    pins = gpu_wheels.pins()
    assert len(pins) == len(gpu_wheels.REQUIRED) + len(gpu_wheels.TRL_EXTRA)
    for pin in pins:
        name, version = pin.split("==")
        assert pinned[gpu_wheels.normalize(name)] == version
    assert len(gpu_wheels.pins(with_trl=False)) == len(gpu_wheels.REQUIRED)
    bad = Path(os.devnull)
    with pytest.raises(KeyError, match="pins no version"):
        gpu_wheels.pins(constraints=bad)


def _fake_wheels(folder: Path, names: tuple[str, ...], size: int = 1000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name.replace('-', '_')}-1.0-py3-none-any.whl").write_bytes(b"x" * size)


def test_size_check_needs_every_wheel_and_at_most_64_mib(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "code.py").write_bytes(b"y" * 5000)
    wheels = tmp_path / "whl"
    _fake_wheels(wheels, gpu_wheels.REQUIRED)
    ok, lines = gpu_wheels.check(wheels, with_trl=False, root=project)
    assert ok and lines[-1] == "OK"
    ok, lines = gpu_wheels.check(wheels, with_trl=True, root=project)
    assert not ok and any(line.startswith("missing wheels: trl") for line in lines)
    with open(wheels / "huge-1.0-py3-none-any.whl", "wb") as fh:  # 64 MiB, sparse
        fh.truncate(gpu_wheels.LIMIT_BYTES)
    ok, lines = gpu_wheels.check(wheels, with_trl=False, root=project)
    assert not ok and lines[-1] == "NOT OK"


def test_wheel_cli_lists_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_wheels.main(["--list", "--no-trl"]) == 0
    assert capsys.readouterr().out.splitlines() == gpu_wheels.pins(with_trl=False)
    assert gpu_wheels.main(["--check", str(tmp_path)]) == 1  # no wheels at all
    assert "missing wheels" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        gpu_wheels.main(["--check", str(tmp_path / "absent")])


@pytest.mark.slow
def test_the_wheels_download_for_python_3_12_and_fit(tmp_path: Path) -> None:
    """Needs the package registry (as CI has): every pin exists for cp312 manylinux x86_64."""
    assert gpu_wheels.main(["--dest", str(tmp_path / "whl")]) == 0
    names = {gpu_wheels.wheel_name(w) for w in (tmp_path / "whl").glob("*.whl")}
    expected = gpu_wheels.REQUIRED + gpu_wheels.TRL_EXTRA
    assert names == {gpu_wheels.normalize(n) for n in expected}
    binary = [w.name for w in (tmp_path / "whl").glob("*.whl") if "none-any" not in w.name]
    assert binary and all("cp312" in n and "x86_64" in n for n in binary)
