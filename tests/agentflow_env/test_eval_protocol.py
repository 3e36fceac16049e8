"""``evaluate --protocol rules|paper``: preset resolution, the dry run, the paper's judge scoring
end to end (callable engine and the real SmolLM2), and judge outages as infrastructure errors."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow_env.eval import EvalConfig, EvaluateError, RunStopped, run
from agentflow_env.eval.cli import build_parser, main
from agentflow_env.eval.protocol import PAPER_MODULE_ENGINE, PAPER_PLANNER, dry_run, resolve
from agentflow_env.format.paper import PAPER_TASK
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.prompts import EXECUTOR_TASK, GENERATOR_TASK, VERIFIER_TASK
from tests.agentflow_env.helpers import finish_action


def _cli_config(*argv: str) -> EvalConfig:
    args = vars(build_parser().parse_args(list(argv)))
    args.pop("dry_run")
    return EvalConfig(**args)


# ------------------------------------------------------------------------------- resolution
def test_rules_is_the_default_and_keeps_the_previous_defaults() -> None:
    cfg, source = resolve(_cli_config())
    assert cfg.protocol == "rules"
    assert (cfg.planner, cfg.executor, cfg.verifier, cfg.generator) == (
        "scripted:search-then-answer",
        "direct",
        "planner",
        "planner",
    )
    assert cfg.module_engine is None and cfg.judge is None and cfg.query_analysis is False
    assert (cfg.max_turns, cfg.temperature, cfg.max_tokens) == (10, 0.0, 1024)
    assert (cfg.judge_verdict, cfg.judge_two_stage) == ("line", False)
    assert cfg.env_kwargs is None and set(source.values()) == {"protocol"}


def test_paper_fills_every_unset_setting() -> None:
    cfg, source = resolve(_cli_config("--protocol", "paper"))
    assert cfg.planner == PAPER_PLANNER == "vllm:AgentFlow/agentflow-planner-7b"
    assert (cfg.executor, cfg.verifier, cfg.generator, cfg.query_analysis) == (
        "llm",
        "llm",
        "llm",
        True,
    )
    assert cfg.module_engine == PAPER_MODULE_ENGINE and cfg.judge == PAPER_MODULE_ENGINE
    assert (cfg.max_turns, cfg.temperature, cfg.max_tokens) == (10, 0.0, 2048)
    assert (cfg.judge_verdict, cfg.judge_two_stage) == ("json", True)
    assert cfg.env_kwargs == {"prompt_style": "paper", "max_episode_s": 300.0}
    assert cfg.tools is None  # chosen per protocol: the paper toolset
    assert source["judge"] == "protocol (the module engine)" and source["max_turns"] == "protocol"


def test_explicit_flags_win_over_the_paper_preset() -> None:
    cfg, source = resolve(
        _cli_config(
            "--protocol",
            "paper",
            "--planner",
            "hf:AgentFlow/agentflow-planner-7b",
            "--module-engine",
            "hf:smollm2-135m-instruct",
            "--max-turns",
            "3",
            "--temperature",
            "0.7",
            "--no-query-analysis",
            "--no-judge-two-stage",
            "--executor",
            "direct",
            "--env-kwargs",
            '{"max_episode_s": 60.0}',
        )
    )
    assert cfg.planner == "hf:AgentFlow/agentflow-planner-7b"
    assert cfg.judge == "hf:smollm2-135m-instruct"  # the judge follows the module engine
    assert (cfg.max_turns, cfg.temperature, cfg.query_analysis) == (3, 0.7, False)
    assert (cfg.executor, cfg.verifier, cfg.judge_two_stage) == ("direct", "llm", False)
    assert cfg.env_kwargs == {"prompt_style": "paper", "max_episode_s": 60.0}
    assert source["max_turns"] == source["executor"] == "explicit"
    assert source["env_kwargs.max_episode_s"] == "explicit"
    assert source["env_kwargs.prompt_style"] == source["verifier"] == "protocol"
    # an explicit judge is not replaced by the module engine
    cfg, source = resolve(_cli_config("--protocol", "paper", "--judge", "openai:gpt-4o"))
    assert cfg.judge == "openai:gpt-4o" and source["judge"] == "explicit"


def test_an_unknown_protocol_is_a_bad_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(
        EvaluateError, match="--protocol 'papers': unknown protocol; valid: rules, paper"
    ):
        resolve(EvalConfig(protocol="papers"))
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--protocol", "papers"])
    assert exited.value.code == 2 and "invalid choice: 'papers'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- dry run
@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def models_server() -> Iterator[str]:
    """A real local HTTP server answering ``GET /v1/models`` as an OpenAI-compatible one."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = json.dumps({"data": [{"id": "Qwen2.5-7B-Instruct"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_the_paper_dry_run_prints_settings_and_what_is_unavailable(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    dead = f"openai:Qwen2.5-7B-Instruct@http://127.0.0.1:{closed_port}/v1"
    assert main(["--protocol", "paper", "--module-engine", dead, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "protocol paper: configuration valid" in out
    assert re.search(r"planner\s+vllm:AgentFlow/agentflow-planner-7b\s+\(protocol\)", out)
    assert re.search(r"max_turns\s+10\s+\(protocol\)", out)
    assert re.search(r"env_kwargs.max_episode_s\s+300.0\s+\(protocol\)", out)
    assert re.search(r"module_engine\s+openai:\S+\s+\(explicit\)", out)
    assert "Generalist_Solution_Generator_Tool" in out and "Wikipedia_RAG_Search_Tool" in out
    assert re.search(rf"unavailable\s+module engine: .*127.0.0.1:{closed_port}/v1 does not", out)
    assert "judge: shares the module engine" in out
    # the released planner: weights (the local cache) and vLLM + GPU are each reported
    assert re.search(r"(ok|unavailable)\s+planner weights: .*agentflow-planner-7b", out)
    assert re.search(r"(ok|unavailable)\s+planner backend: ", out)
    # generated math tasks bring no corpus: the search tools are left out, and the run says so
    assert main(["--protocol", "paper", "--env", "AgentFlow-Math-v0", "--dry-run",
                 "--module-engine", dead]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "['Generalist_Solution_Generator_Tool', 'Python_Code_Generator_Tool']" in out
    assert "note: Wikipedia_RAG_Search_Tool left out: no corpus for this data" in out


def test_a_reachable_server_and_a_local_model_are_reported_available(
    capsys: pytest.CaptureFixture[str], models_server: str, smollm2_dir: Path
) -> None:
    argv = [
        "--protocol",
        "paper",
        "--planner",
        "hf:smollm2-135m-instruct",
        "--module-engine",
        f"openai:Qwen2.5-7B-Instruct@{models_server}",
        "--judge",
        "hf:smollm2-135m-instruct",
        "--dry-run",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(rf"ok\s+module engine: .*{models_server} answers", out)
    assert re.search(r"ok\s+planner weights: .*llama, with its chat template", out)
    assert re.search(r"ok\s+judge weights: ", out)
    assert "unavailable" not in out  # no vllm: spec, nothing missing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "missing.json"], "--data 'missing.json': no such file"),
        (["--module-engine", "nonsense"], "--module-engine: "),
        (["--env-kwargs", '{"prompt_stile": "paper"}'], "unknown key 'prompt_stile'"),
        (["--max-turns", "0"], "--max-turns and --concurrency must be >= 1"),
    ],
)
def test_an_invalid_configuration_fails_the_dry_run(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--protocol", "paper", *argv, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_the_dry_run_plans_a_benchmark(shared_benchmarks_dir: Path, closed_port: int) -> None:
    checked = dry_run(
        EvalConfig(
            protocol="paper",
            data=str(shared_benchmarks_dir / "gpqa.json"),
            module_engine=f"openai:M@http://127.0.0.1:{closed_port}/v1",
        )
    )
    assert checked.kind == "science" and checked.tasks == 300
    # no corpus: the two local search tools are left out, and the table says so
    assert checked.tools == ["Generalist_Solution_Generator_Tool", "Python_Code_Generator_Tool"]
    assert any("Ground_Google_Search_Tool left out: no corpus" in n for n in checked.notes)
    assert checked.checks[0].detail == "300 task(s) with choices: two-stage"
    assert {c.name for c in checked.unavailable} >= {"module engine"}
    # a web backend for the search name keeps it without a corpus
    web = dry_run(
        EvalConfig(
            protocol="paper",
            data=str(shared_benchmarks_dir / "bamboogle.json"),
            module_engine=f"openai:M@http://127.0.0.1:{closed_port}/v1",
            env_kwargs={"tool_kwargs": {"Ground_Google_Search_Tool": {"backend": "web"}}},
        )
    )
    assert "Ground_Google_Search_Tool" in (web.tools or [])
    assert "Wikipedia_RAG_Search_Tool" not in (web.tools or [])


# ---------------------------------------------------------------------- the judge, end to end
def _field(prompt: str, name: str) -> str:
    match = re.search(rf"^{name}: (.*)$", prompt, re.MULTILINE)
    assert match, prompt
    return match.group(1)


class Grader:
    """A judge engine speaking the paper judge's JSON protocol by rule (case-insensitive
    containment for one stage; the first letter for extraction and verification); records the
    stage of every request."""

    def __init__(self) -> None:
        self.stages: list[str] = []

    def __call__(self, request: GenerationRequest) -> str:
        prompt = request.messages[-1].content  # type: ignore[index]
        if "extracted_option" in prompt:
            self.stages.append("extract")
            found = re.search(r"\b([A-E])\b", _field(prompt, "Model response"))
            option = found.group(1) if found else "NONE"
            return json.dumps({"analysis": "found it", "extracted_option": option})
        if "Chosen option" in prompt:
            self.stages.append("verify")
            same = _field(prompt, "Correct answer")[0] == _field(prompt, "Chosen option")[0]
            return json.dumps({"analysis": "compared", "true_false": same})
        self.stages.append("single")
        truth, response = _field(prompt, "Ground truth").lower(), _field(prompt, "Model response")
        accepted = re.split(r" \(also accepted: |; ", truth.rstrip(")"))
        same = any(a.strip() and a.strip() in response.lower() for a in accepted)
        return json.dumps({"analysis": "compared", "true_false": same})


def _paper_cfg(data: Path, judge: Any, planner: Any = "scripted:oracle", **kw: Any) -> EvalConfig:
    """The paper protocol with its modules off (the judge is what is under test) and no tools."""
    settings: dict[str, Any] = {
        "protocol": "paper",
        "data": str(data),
        "planner": planner,
        "module_engine": judge,
        "executor": "direct",
        "verifier": "planner",
        "generator": "planner",
        "query_analysis": False,
        "tools": [],
        "episodes": 2,
        "concurrency": 2,
        "max_errors": 1.0,
        **kw,
    }
    return EvalConfig(**settings)


def _answers_d(request: GenerationRequest) -> str:
    return finish_action("D")


@pytest.mark.parametrize("name", ["gpqa", "medqa"])
def test_choice_sets_are_judged_in_two_stages(shared_benchmarks_dir: Path, name: str) -> None:
    grader = Grader()
    report = run(
        _paper_cfg(
            shared_benchmarks_dir / f"{name}.json",
            CallableEngine(grader),
            CallableEngine(_answers_d),
        )
    )
    rows = report["episodes"]
    assert [r["ground_truth"] for r in rows] == (["A", "D"] if name == "gpqa" else ["C", "D"])
    assert [r["score"] for r in rows] == [0.0, 1.0]
    assert report["summary"]["errored"] == 0 and report["config"]["judge_two_stage"] is True
    assert sorted(grader.stages) == ["extract", "extract", "verify", "verify"]


def test_free_form_sets_are_judged_in_one_stage(shared_benchmarks_dir: Path) -> None:
    grader = Grader()
    report = run(_paper_cfg(shared_benchmarks_dir / "bamboogle.json", CallableEngine(grader)))
    assert [r["score"] for r in report["episodes"]] == [1.0, 1.0]  # the oracle's gold answers
    assert grader.stages == ["single", "single"]
    assert report["config"]["judge_verdict"] == "json"


def test_the_paper_protocol_runs_every_llm_module_then_the_judge(
    shared_benchmarks_dir: Path, tmp_path: Path
) -> None:
    """Nothing switched off: query analysis, the paper prompt, the LLM executor calling a
    reference tool (whose LLM is the module engine), the LLM verifier and generator, then the
    judge, each engine a callable speaking its part."""
    prompts: list[str] = []
    planner_prompts: list[str] = []

    def modules(request: GenerationRequest) -> str:
        prompts.append(request.messages[-1].content)  # type: ignore[index]
        return (
            "Conclusion: STOP\n<answer>james madison</answer>\nGenerated Command:\n"
            '```python\nexecution = tool.execute(query="When was Citibank founded?")\n```'
        )

    def planner(request: GenerationRequest) -> str:
        planner_prompts.append(request.messages[-1].content)  # type: ignore[index]
        return (
            "Justification: look it up\nContext: none\nSub-Goal: find the founding year\n"
            "Tool Name: Generalist_Solution_Generator_Tool"
        )

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"title": "Citibank", "text": "Founded in 1812."}) + "\n")
    grader = Grader()
    report = run(
        EvalConfig(
            protocol="paper",
            data=str(shared_benchmarks_dir / "bamboogle.json"),
            planner=CallableEngine(planner),
            module_engine=CallableEngine(modules),
            judge=CallableEngine(grader),
            corpus=str(corpus),
            episodes=1,
        )
    )
    assert report["tools"] == [
        "Generalist_Solution_Generator_Tool",
        "Python_Code_Generator_Tool",
        "Ground_Google_Search_Tool",
        "Wikipedia_RAG_Search_Tool",
    ]
    assert report["notes"] == [] and report["summary"]["errored"] == 0
    [row] = report["episodes"]
    assert row["score"] == 1.0 and row["answer"] == "james madison"
    assert report["summary"]["tool_calls"] == {"Generalist_Solution_Generator_Tool": 1}
    assert planner_prompts[0].startswith(PAPER_TASK)  # the reference's layout
    kinds = [
        "Analyze the query",
        EXECUTOR_TASK,
        "When was Citibank founded?",
        VERIFIER_TASK,
        GENERATOR_TASK,
    ]
    assert len(prompts) == len(kinds)
    assert all(k in p for k, p in zip(kinds, prompts, strict=True)), prompts
    assert grader.stages == ["single"]


def test_a_judge_outage_is_an_infra_error_never_a_wrong_answer(shared_benchmarks_dir: Path) -> None:
    def down(request: GenerationRequest) -> str:
        raise ConnectionError("judge API is down")

    data = shared_benchmarks_dir / "gpqa.json"
    report = run(_paper_cfg(data, CallableEngine(down), CallableEngine(_answers_d)))
    summary = report["summary"]
    assert summary["errored"] == 2 and summary["errored_by_kind"] == {"engine": 2}
    assert summary["scored"] == 0 and summary["accuracy"] is None
    assert all(r["score"] is None for r in report["episodes"])
    # past --max-errors the run stops (exit 3 in the CLI), the partial report kept
    with pytest.raises(RunStopped, match="errored episodes") as stopped:
        run(_paper_cfg(data, CallableEngine(down), CallableEngine(_answers_d), max_errors=0))
    assert stopped.value.report is not None


def test_a_dead_judge_server_is_an_infra_error(
    shared_benchmarks_dir: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real OpenAI-compatible client against a port nobody listens on, as the judge (and the
    module engine it shares): the preflight stops the run (exit 3); without the preflight every
    episode is errored (engine_connection), none scored wrong."""
    dead = f"openai:M@http://127.0.0.1:{closed_port}/v1"
    data = str(shared_benchmarks_dir / "bamboogle.json")
    common = ["--protocol", "paper", "--data", data, "--planner", "scripted:oracle"]
    common += ["--executor", "direct", "--verifier", "planner", "--generator", "planner"]
    common += ["--no-query-analysis", "--tools", "", "--episodes", "2"]
    common += ["--module-engine", dead, "--max-retries", "0", "--request-timeout", "2"]
    assert main(common) == 3  # the judge is the module engine's (dead) server
    assert "preflight: the module engine" in capsys.readouterr().err
    assert main([*common, "--no-preflight", "--max-errors", "1.0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"errored \(no outcome\)\s+│\s+2: engine_connection 2", out), out


@pytest.mark.slow
def test_the_real_smollm2_judges_benchmark_tasks(
    shared_benchmarks_dir: Path, smollm2_dir: Path
) -> None:
    """SmolLM2-135M as the paper protocol's judge (the module engine's spec, shared) on one
    free-form and one multiple-choice task: each episode is scored by its verdict or, when the
    small model writes no valid JSON, errored as ``judge`` (never scored 0 for it)."""
    for name, planner in (("bamboogle", "scripted:oracle"), ("gpqa", CallableEngine(_answers_d))):
        report = run(
            _paper_cfg(
                shared_benchmarks_dir / f"{name}.json",
                "hf:smollm2-135m-instruct",
                planner,
                episodes=1,
                judge_max_tokens=48,  # a verdict fits; bounds the CPU time
            )
        )
        [row] = report["episodes"]
        summary = report["summary"]
        if row["infra_error"] is None:
            assert row["score"] in (0.0, 1.0) and summary["scored"] == 1
        else:
            assert row["score"] is None and summary["errored_by_kind"] == {"judge": 1}
        assert summary["tokens"]["judge"]["completion"] > 0
