"""``python -m learners.flow_grpo --dry-run``: the resolved configuration, then the checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from learners.flow_grpo.dryrun import Check, exit_status
from tests.learners.test_paper_data import write_deepmath, write_nq

ROOT = Path(__file__).resolve().parents[2]
FAIR = "python:tests.learners.test_judge_reward:fair_judge"


def _dry_run(*args: str) -> tuple[int, str, dict[str, str]]:
    """Run the CLI offline (no Hub, no OpenAI key); (exit status, stdout, check name -> status)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "learners.flow_grpo", "--dry-run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    checks = {}
    for line in proc.stdout.split("\nchecks:\n", 1)[-1].splitlines():
        status, _, rest = line.strip().partition("  ")
        if ":" in rest:
            checks[rest.strip().split(":", 1)[0]] = status
    return proc.returncode, proc.stdout, checks


def test_exit_status() -> None:
    ok, gone, bad = Check("a", "ok", ""), Check("b", "unavailable", ""), Check("c", "error", "")
    assert exit_status([ok, gone], strict=False) == 0
    assert exit_status([ok, gone], strict=True) == 1
    assert exit_status([ok, bad], strict=False) == 1
    assert exit_status([ok], strict=True) == 0


@pytest.mark.slow
def test_the_paper_preset_shows_what_will_run_and_what_is_missing() -> None:
    code, out, checks = _dry_run("--preset", "paper")
    assert code == 0, out
    config = json.loads(out.split("\n\n", 1)[0])  # every resolved value first
    assert (
        config["algo"]["reward"] == "judge" and config["data"]["val"] == "hf:Maxwell-Jia/AIME_2024"
    )
    assert config["algo"]["mini_batch_rows"] == 64 and config["rollout"]["backend"] == "vllm"
    assert (
        "training data: nq hf:RUC-NLPIR/FlashRAG_datasets + deepmath hf:zwhe99/DeepMath-103K" in out
    )
    assert "reward: LLM judge openai:gpt-4o, JSON verdict" in out
    assert "tools: Generalist_Solution_Generator_Tool, Python_Code_Generator_Tool" in out
    assert "dual-clip c = 3; KL 0.001; zero-variance groups kept" in out
    assert checks["config"] == "ok" and checks["env"] == "ok"
    assert checks["algo.judge_engine"] == "UNAVAILABLE"  # no OPENAI_API_KEY here
    for name in ("model", "data.nq", "data.deepmath", "data.val", "backend"):
        assert checks[name] in ("ok", "UNAVAILABLE")  # present only where weights/GPU/cache are
    assert "configuration valid" in out


@pytest.mark.slow
def test_the_paper_preset_on_local_data_files(tmp_path: Path) -> None:
    """The data read, its search tools reported without a corpus (a resource, like weights),
    --strict failing on what is missing."""
    args = ["--preset", "paper", "--data.nq", str(write_nq(tmp_path / "nq.jsonl"))]
    args += ["--data.deepmath", str(write_deepmath(tmp_path / "m.parquet"))]
    val = tmp_path / "aime.jsonl"
    val.write_text(json.dumps({"ID": "a", "Problem": "Find 2+2.", "Answer": 4}))
    code, out, checks = _dry_run(*args, "--data.val", str(val), "--strict")
    assert code == 1, out  # the judge's key at least is missing
    assert [checks[f"data.{n}"] for n in ("nq", "deepmath", "val")] == ["ok"] * 3
    assert checks["search corpus"] == "UNAVAILABLE"
    assert checks["env"] == "ok" and "a stand-in search corpus" in out


@pytest.mark.slow
def test_a_wrong_configuration_fails_and_a_complete_one_passes_strict(tmp_path: Path) -> None:
    code, out, checks = _dry_run("--data.nq", str(tmp_path / "missing.jsonl"))
    assert code == 1 and checks["data.nq"] == "ERROR" and "configuration invalid" in out
    val = tmp_path / "aime.jsonl"
    val.write_text(json.dumps({"ID": "a", "Problem": "Find 2+2.", "Answer": 4}))
    code, out, checks = _dry_run(
        "--data.nq", str(write_nq(tmp_path / "nq.jsonl")),
        "--data.deepmath", str(write_deepmath(tmp_path / "m.parquet")),
        "--data.val", str(val),
        "--algo.reward", "judge",
        "--algo.judge-engine", FAIR,
        "--env.tools", "Python_Coder_Tool",  # the tiny Search_Tool's corpus is the generated one
        "--env.tool-kwargs", "{}",
        "--strict",
    )  # fmt: skip
    assert code == 0, out
    assert checks["algo.judge_engine"] == "ok" and "hub" not in checks  # nothing from the Hub
    assert "a sample of the data's tasks" in out and "reward: LLM judge python:tests" in out
    code, out, checks = _dry_run(
        "--algo.reward", "judge", "--algo.judge-engine", "python:no.such:f"
    )
    assert code == 1 and checks["algo.judge_engine"] == "ERROR"
