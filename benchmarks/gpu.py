"""The prepared GPU check: one command, at most 8 minutes on one H100/H200-class GPU.

Measures, on random-initialized Qwen2.5-shaped models (no weights needed; see
:mod:`benchmarks.gpu_common` and :mod:`benchmarks.gpu_sections`):

(a) ``generation``: the hf engine's sampler (HFBackend), bf16, batch 1/16/64, 0.5B and 1.5B
    shapes;
(b) ``update``: one Flow-GRPO update's action tokens/s and peak GPU memory, gradient checkpointing
    on and off (and per-turn layout, and the old log-probs' recomputation);
(c) ``tiny_step``: the tiny preset's rollout + update steps on the GPU;
(d) ``distributed``: DDP and FSDP2 on one rank with nccl; parameters equal to one process;
(e) ``trl``: TRL's GRPO loss on (b)'s batch when trl is importable, else reported as skipped.

Each section runs in its own process with its own time budget (440 s in all, or ``--budget-s``):
a section that fails or runs out of memory is recorded as such in the JSON and the others still
run; one that overruns its budget is killed, and one with too little time left not started, both
recorded as ``skipped: over budget``. Writes ``--out`` (JSON; default
``benchmarks/results/gpu.json``, or ``gpu_dry_run.json``) and a Markdown table beside it (same
name, ``.md``). ``--dry-run`` runs the
same plan on the CPU with tiny shapes (gloo instead of nccl): what CI tests. Exit status: 0 when
no section failed, 1 otherwise, 2 for bad arguments (e.g. no CUDA device without ``--dry-run``).

    python -m benchmarks.gpu [--dry-run] [--out PATH] [--sections update,trl] [--budget-s 440]

Packages beyond torch and transformers: ``python -m benchmarks.gpu_wheels`` (README, "GPU check").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info
from benchmarks.gpu_common import make_plan
from benchmarks.gpu_sections import SECTIONS, run_section
from tools.log_excerpt import log_excerpt

ROOT = Path(__file__).resolve().parents[1]
MIN_SECTION_S = 10.0
"""a section is not started with less time than this left"""
KILL_GRACE_S = 5.0
"""a section gets this long past its deadline to finish the row in hand before it is killed"""


def run_one(name: str, timeout_s: float, dry_run: bool, workdir: Path) -> dict[str, Any]:
    """Run one section in its own process (its own process group, killed whole on overrun)."""
    result, log = workdir / f"{name}.json", workdir / f"{name}.log"
    deadline = time.time() + timeout_s - KILL_GRACE_S
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--child", name, "--result", str(result)]
    cmd += ["--deadline", f"{deadline:.3f}"] + (["--dry-run"] if dry_run else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its torchrun workers too
            proc.wait()
            code = None
    seconds = time.perf_counter() - start
    data: dict[str, Any] = {}
    if result.is_file():
        try:
            data = json.loads(result.read_text())
        except json.JSONDecodeError:
            data = {}
    text = log.read_text(errors="replace") if log.is_file() else ""
    declared = data.pop("status", None)  # a section may declare its own (trl: skipped)
    if code is None:  # a hang reads the same: the log excerpt tells
        status = f"skipped: over budget (killed after {timeout_s:.0f} s; earlier rows kept)"
    elif code != 0:
        status = f"failed (exit {code})"
    else:
        status = declared or _rows_status(data.get("rows", []))
    out = {"status": status, "seconds": round(seconds, 1), "budget_s": round(timeout_s, 1)}
    out.update(data)
    if code != 0:
        out["log_excerpt"] = log_excerpt(text, max_chars=3000)
    return out


def _rows_status(rows: list[dict[str, Any]]) -> str:
    """A finished section's status from its rows: failed rows fail it, skipped ones make it
    partial."""
    failed = [r for r in rows if str(r.get("status", "")).startswith("failed")]
    skipped = [r for r in rows if str(r.get("status", "")).startswith("skipped")]
    if failed:
        return f"failed: {len(failed)} of {len(rows)} rows failed"
    if skipped:
        return f"partial: {len(skipped)} of {len(rows)} rows skipped over budget"
    return "ok"


def plan_summary(dry_run: bool) -> dict[str, Any]:
    plan = make_plan(dry_run)
    return {
        "device": plan.device,
        "dtype": plan.dtype,
        "shapes": plan.shapes,
        "generation": {
            "batches": list(plan.gen_batches),
            "prompt_tokens": plan.gen_prompt_tokens,
            "new_tokens": plan.gen_new_tokens,
        },
        "update_models": list(plan.update_models),
        "budgets_s": plan.budgets,
    }


# ------------------------------------------------------------------------------------ report
def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def section_rows(name: str, sec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, status) rows of one section for the table."""
    rows: list[tuple[str, str, str]] = []
    for r in sec.get("rows", []):
        status = r.get("status", "")
        if name == "generation":
            label = f"{r.get('model')} batch {r.get('batch', '')}: new tokens/s | ms/step | peak MB"
            value = " | ".join(
                _fmt(r.get(k)) for k in ("tokens_per_s", "ms_per_step", "peak_memory_mb")
            )
        elif name in ("update", "trl"):
            label = f"{r.get('model')} {r.get('variant', '')}: action tokens/s | peak MB"
            value = f"{_fmt(r.get('tokens_per_s'))} | {_fmt(r.get('peak_memory_mb'))}"
        elif name == "tiny_step":
            label = (
                f"step {r.get('step')} (recompute {r.get('recompute_old_logprobs')}): "
                "rollout s | update s | |old logp diff| max"
            )
            value = " | ".join(
                _fmt(r.get(k), 3)
                for k in ("time/rollout_s", "time/update_s", "train/old_logprob_max_abs_diff")
            )
        else:
            label = f"{r.get('mode')}: backend | update s"
            value = f"{r.get('backend', '')} | {_fmt(r.get('update_seconds'))}"
        rows.append((label, value, status))
    if name == "distributed" and "comparisons" in sec:
        for mode, c in sec["comparisons"].items():
            rows.append(
                (
                    f"{mode} vs one process: max |param diff| (<= {sec.get('atol')})",
                    f"{c.get('max_abs_diff', 'n/a')}",
                    "equal" if c.get("equal") else "DIFFERENT",
                )
            )
    return rows or [("", "", "")]


def render_markdown(report: dict[str, Any]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    dev = report["device_info"]
    where = (
        f"{dev.get('name')} ({dev.get('memory_gib')} GiB), CUDA {dev.get('cuda')}, "
        f"NCCL {dev.get('nccl')}"
        if report["gpu_figures"]
        else "DRY RUN on the CPU with tiny stand-in shapes: these are not GPU figures"
    )
    lines = [
        f"GPU check, {report['machine']['timestamp']}: {where}; torch {dev.get('torch')}, "
        f"transformers {dev.get('transformers')}, trl {dev.get('trl')}; "
        f"{report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget.",
        "",
        "| section | measure | value | status |",
        "| --- | --- | --- | --- |",
    ]
    for name, sec in report["sections"].items():
        head = f"{SECTIONS[name]} [{sec['status']}]"
        for i, (measure, value, status) in enumerate(section_rows(name, sec)):
            lines.append(
                "| "
                + " | ".join(cell(c) for c in (head if i == 0 else "", measure, value, status))
                + " |"
            )
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="the same plan on the CPU with tiny shapes"
    )
    parser.add_argument("--out", type=Path, default=None, help="the JSON (a .md goes beside it)")
    parser.add_argument(
        "--sections", default="", help="comma-separated subset of: " + ", ".join(SECTIONS)
    )
    parser.add_argument(
        "--budget-s", type=float, default=None, help="total seconds (default: the plan's sum)"
    )
    parser.add_argument("--child", choices=list(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_section(args.child, args.result, args.deadline, args.dry_run)
        return 0
    names = [n for n in args.sections.split(",") if n] or list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device is visible: run on a GPU machine, or use --dry-run")
    plan = make_plan(args.dry_run)
    budget = sum(plan.budgets.values()) if args.budget_s is None else args.budget_s
    out = args.out or ROOT / "benchmarks" / "results" / (
        "gpu_dry_run.json" if args.dry_run else "gpu.json"
    )
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "gpu_figures": not args.dry_run,
        # read by the sections' processes: this one must not hold a CUDA context of its own
        "device_info": {"device": plan.device, "torch": torch.__version__},
        "machine": machine_info(),
        "plan": plan_summary(args.dry_run),
        "budget_s": budget,
        "wall_s": 0.0,
        "sections": {},
    }
    start, device_seen = time.perf_counter(), False
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name in SECTIONS:
            if name not in names:
                continue
            left = budget - (time.perf_counter() - start)
            timeout = min(plan.budgets[name], left)
            if timeout < MIN_SECTION_S:
                sec: dict[str, Any] = {"status": "skipped: over budget", "rows": []}
            else:
                print(f"[gpu check] {name}: up to {timeout:.0f} s ...", file=sys.stderr, flush=True)
                sec = run_one(name, timeout, args.dry_run, Path(tmp))
            print(f"[gpu check] {name}: {sec['status']}", file=sys.stderr, flush=True)
            report["sections"][name] = sec
            if isinstance(sec.get("device"), dict) and not device_seen:
                report["device_info"], device_seen = sec["device"], True
            report["wall_s"] = round(time.perf_counter() - start, 1)
            _write(out, json.dumps(report, indent=2, default=str))  # a killed run keeps the rest
    markdown = render_markdown(report)
    _write(out.with_suffix(".md"), markdown)
    sys.stdout.write(markdown)
    sys.stdout.write(f"\nwrote {out} and {out.with_suffix('.md')}\n")
    failed = [n for n, s in report["sections"].items() if not _passed(s["status"])]
    return 1 if failed else 0


def _passed(status: str) -> bool:
    """ok, or not (fully) run for want of time or of trl; failures and overruns do not pass."""
    return status == "ok" or status.startswith(("skipped", "partial"))


if __name__ == "__main__":
    raise SystemExit(main())
