"""Evaluation protocols: named presets of ``evaluate``'s settings (``--protocol rules|paper``).

A protocol fills every :class:`~agentflow_env.eval.config.EvalConfig` setting left ``None``;
a setting given explicitly (a CLI flag, a keyword) always wins (:func:`resolve`). Its env
settings go under ``--env-kwargs``, whose keys win over them.

``rules`` (the default) is this project's offline evaluation: rule scorers, the tools of the
data's kind, direct executor, the planner's own finish and answer.

``paper`` is the reference's evaluation (its ``test/*/run.sh`` and scoring script):

- planner ``vllm:AgentFlow/agentflow-planner-7b``, the released planner, loaded by name and
  prompted through its chat template;
- LLM executor, verifier and generator and query analysis on a fixed module engine (the
  reference used Qwen2.5-7B-Instruct behind an API): default
  ``openai:Qwen2.5-7B-Instruct@http://127.0.0.1:8001/v1``, a server such as
  ``vllm serve Qwen/Qwen2.5-7B-Instruct --port 8001``;
- the reference's tool set (toolset ``paper``, :mod:`tools.paper`) on every benchmark;
- 10 turns, 300 s per episode, planner temperature 0.0 and 2048 tokens per step (the
  reference's evaluation scripts pass ``--max_steps 10 --max_time 300 --temperature 0.0``;
  0.7 is its training rollouts' temperature, and its solver's default when not passed);
- the reference's prompt layout (``prompt_style="paper"``);
- scoring by an LLM judge on all ten sets with JSON verdicts, two-stage (extract the chosen
  option, then verify it) for tasks with choices (GPQA, MedQA); the judge defaults to the module
  engine (the reference used gpt-4o: ``--judge openai:gpt-4o@https://api.openai.com/v1``
  reproduces that). A judge failure is an infrastructure error of the episode, never a 0.

:func:`dry_run` checks a resolved configuration without loading weights or playing episodes and
says what is unavailable here (weights not in the local cache, vLLM, a CUDA GPU, an unreachable
server).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow_env.eval.config import SCRIPTED_PREFIX, EvalConfig, EvaluateError

__all__ = [
    "PAPER_ENV",
    "PAPER_MODULE_ENGINE",
    "PAPER_PLANNER",
    "PROTOCOLS",
    "Check",
    "DryRun",
    "check_engine",
    "dry_run",
    "resolve",
]

PAPER_PLANNER = "vllm:AgentFlow/agentflow-planner-7b"
"""the released planner (Hugging Face id), in-process vLLM with its chat template"""
PAPER_MODULE_ENGINE = "openai:Qwen2.5-7B-Instruct@http://127.0.0.1:8001/v1"
"""the reference's fixed module LLM, served locally (e.g. by vLLM on port 8001)"""
MODULE_ENGINE = "<module engine>"
"""a preset's judge that is whatever the module engine resolved to"""

PROTOCOLS: dict[str, dict[str, Any]] = {
    "rules": {
        "planner": "scripted:search-then-answer",
        "executor": "direct",
        "verifier": "planner",
        "generator": "planner",
        "module_engine": None,
        "query_analysis": False,
        "judge": None,
        "judge_verdict": "line",
        "judge_two_stage": False,
        "max_turns": 10,
        "temperature": 0.0,
        "max_tokens": 1024,
    },
    "paper": {
        "planner": PAPER_PLANNER,
        "executor": "llm",
        "verifier": "llm",
        "generator": "llm",
        "module_engine": PAPER_MODULE_ENGINE,
        "query_analysis": True,
        "judge": MODULE_ENGINE,
        "judge_verdict": "json",
        "judge_two_stage": True,
        "max_turns": 10,
        "temperature": 0.0,
        "max_tokens": 2048,
    },
}
"""each protocol's value of every setting it fills (``tools`` None: chosen per protocol and
data, :func:`agentflow_env.eval.build.choose_tools`)"""
PAPER_ENV: dict[str, Any] = {"prompt_style": "paper", "max_episode_s": 300.0}
"""the paper protocol's env settings (under ``env_kwargs``, which win)"""
PROTOCOL_ENV: dict[str, dict[str, Any]] = {"rules": {}, "paper": PAPER_ENV}


def resolve(cfg: EvalConfig) -> tuple[EvalConfig, dict[str, str]]:
    """``cfg`` with every None setting its protocol fills filled, and where each came from
    (``"protocol"`` or ``"explicit"``; env settings as ``env_kwargs.KEY``).

    Raises:
        EvaluateError: an unknown protocol.
    """
    if cfg.protocol not in PROTOCOLS:
        raise EvaluateError(
            f"--protocol {cfg.protocol!r}: unknown protocol; valid: {', '.join(PROTOCOLS)}"
        )
    preset = PROTOCOLS[cfg.protocol]
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, value in preset.items():
        given = getattr(cfg, name)
        explicit = given is not None
        values[name] = given if explicit else value
        source[name] = "explicit" if explicit else "protocol"
    if values["judge"] == MODULE_ENGINE:
        values["judge"] = values["module_engine"]
        source["judge"] = "protocol (the module engine)"
    env = PROTOCOL_ENV[cfg.protocol]
    given = cfg.env_kwargs
    if not env or not (given is None or isinstance(given, dict)):
        return dataclasses.replace(cfg, **values), source  # a bad env_kwargs is reported later
    for key in env:
        source[f"env_kwargs.{key}"] = "explicit" if given and key in given else "protocol"
    return dataclasses.replace(cfg, **values, env_kwargs={**env, **(given or {})}), source


# ------------------------------------------------------------------------------------- dry run
@dataclass(frozen=True)
class Check:
    """One line of a dry run: ``ok`` False means unavailable here (not an invalid config)."""

    name: str
    ok: bool
    detail: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def _weights(target: str) -> tuple[bool, str]:
    """A model's config and tokenizer (with its chat template) from disk or the local Hugging
    Face cache, without loading weights or touching the network."""
    from agentflow_env.llm.models import resolve_model

    try:
        path = resolve_model(target)
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - reported as unavailable with its reason
        return False, f"{target} is not available offline ({_first_line(exc)})"
    template = "with its chat template" if tokenizer.chat_template else "NO chat template"
    where = "" if Path(path).is_dir() else " (local Hugging Face cache)"
    return True, f"{path}: {config.model_type}, {template}{where}"


def _reachable(url: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Whether an OpenAI-compatible server answers ``GET {url}/models`` (any HTTP status)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=timeout_s):
            return True, f"{url} answers"
    except urllib.error.HTTPError as exc:  # it answered, if only with an error (e.g. 401)
        return True, f"{url} answers (HTTP {exc.code} on /models)"
    except (OSError, ValueError) as exc:
        return False, f"{url} does not answer ({_first_line(exc)}); start the server first"


def _gpu() -> tuple[bool, str]:
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install vllm on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    return True, f"vllm and {torch.cuda.get_device_name(0)}"


def check_engine(role: str, spec: object) -> list[Check]:
    """What an engine spec needs and whether it is here (no weights loaded, no generation)."""
    if spec is None:
        return []
    if not isinstance(spec, str):
        return [Check(role, True, f"engine object {spec!r}")]
    if spec.startswith(SCRIPTED_PREFIX):
        return [Check(role, True, f"{spec} (scripted, no model)")]
    from agentflow_env.llm import parse_spec

    parsed = parse_spec(spec)  # validate_config has checked it parses
    if parsed.kind == "openai":
        if parsed.base_url is None:
            return [Check(role, True, f"{spec}: the default OpenAI endpoint (needs its API key)")]
        ok, detail = _reachable(parsed.base_url)
        return [Check(role, ok, f"{spec}: {detail}")]
    if parsed.kind == "python":
        from agentflow_env.llm.spec import _import_callable

        try:
            _import_callable(parsed.target, spec)
        except Exception as exc:  # noqa: BLE001 - reported as unavailable with its reason
            return [Check(role, False, f"{spec}: {_first_line(exc)}")]
        return [Check(role, True, f"{spec}: importable")]
    ok, detail = _weights(parsed.target)
    checks = [Check(f"{role} weights", ok, detail)]
    if parsed.kind == "vllm":
        ok, detail = _gpu()
        checks.append(Check(f"{role} backend", ok, detail))
    return checks


@dataclass
class DryRun:
    """A configuration checked without running: the resolved config, where each protocol
    setting came from, what the run would play with, and what is unavailable here."""

    config: EvalConfig
    source: dict[str, str]
    kind: str
    tasks: int | None
    tools: list[str] | None
    notes: list[str]
    env_settings: dict[str, Any]
    checks: list[Check]

    @property
    def unavailable(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def dry_run(cfg: EvalConfig) -> DryRun:
    """Resolve and validate ``cfg`` and plan its run, building no engine and playing nothing.

    Raises:
        EvaluateError: the configuration is invalid (what a run would refuse before any work).
    """
    from agentflow_env.eval.build import plan
    from agentflow_env.eval.config import validate_config

    resolved, source = resolve(cfg)
    validate_config(resolved)
    planned = plan(resolved)
    checks: list[Check] = []
    if planned.tasks is not None and resolved.judge is not None and resolved.judge_two_stage:
        staged = sum(1 for t in planned.tasks if t.choices)
        if staged:
            checks.append(Check("scoring", True, f"{staged} task(s) with choices: two-stage"))
    checks += check_engine("planner", resolved.planner)
    checks += check_engine("module engine", resolved.module_engine)
    if resolved.judge is not None and resolved.judge == resolved.module_engine:
        checks.append(Check("judge", True, "shares the module engine"))
    else:
        checks += check_engine("judge", resolved.judge)
    env = {k: v for k, v in planned.env_kwargs.items() if k not in ("tasks", "tool_kwargs")}
    if planned.env_kwargs.get("tool_kwargs"):
        env["tool_kwargs"] = planned.env_kwargs["tool_kwargs"]
    tasks = len(planned.tasks) if planned.tasks is not None else None
    return DryRun(resolved, source, planned.kind, tasks, planned.tools, planned.notes, env, checks)
