"""``python -m learners.flow_grpo --dry-run``: show what would run, then check what it needs.

:func:`describe` is the fully resolved configuration (every value, as ``config.json`` records it)
followed by what those values amount to: the training and validation data, the reward, the tools
and the update schedule. :func:`run_checks` then looks for each resource without loading weights
or starting a run. A check ends in one of three states:

- ``ok``: present;
- ``unavailable``: a heavy resource this machine lacks (model weights not downloaded, vLLM or a
  GPU, an engine server not answering, an API key, a Hugging Face dataset offline). The
  configuration may still be right for the machine that will run it: exit 0, unless ``--strict``;
- ``error``: the configuration itself cannot work here or anywhere (a local model directory or data
  file that does not exist or is not in its schema, an environment that cannot be built, a
  ``python:`` engine that does not import): exit 1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from learners.config import resolve_model_path
from learners.flow_grpo.config import FlowGRPOConfig

__all__ = ["Check", "Status", "describe", "exit_status", "run_checks"]

Status = Literal["ok", "unavailable", "error"]
PROBE_TIMEOUT_S = 3.0
"""seconds to wait for a server (an engine, the Hugging Face Hub) before calling it unavailable"""


@dataclass(frozen=True)
class Check:
    """One resource the run needs, and whether this machine has it."""

    name: str
    status: Status
    detail: str


def exit_status(checks: list[Check], strict: bool) -> int:
    """0 when nothing is wrong with the configuration (and, with ``strict``, nothing missing)."""
    bad = {"error", "unavailable"} if strict else {"error"}
    return 1 if any(c.status in bad for c in checks) else 0


# ------------------------------------------------------------------------------------ describe
def _data_lines(cfg: FlowGRPOConfig) -> list[str]:
    d = cfg.data
    limit = lambda n: f" (first {n})" if n else ""  # noqa: E731 - a one-line formatter
    parts = [f"nq {d.nq}{limit(d.nq_limit)}"] if d.nq else []
    parts += [f"deepmath {d.deepmath}{limit(d.deepmath_limit)}"] if d.deepmath else []
    if parts:
        train = f"{' + '.join(parts)}, concatenated and shuffled with seed {d.shuffle_seed}"
    else:
        source = cfg.env.tasks if cfg.env.tasks is not None else "generated"
        train = f"the env's task set ({source}, family {cfg.env.family})"
    val = (
        f"{d.val}{limit(d.val_limit)}"
        if d.val
        else f"the last {cfg.env.eval_tasks} training tasks, held out"
    )
    return [f"training data: {train}", f"validation: {val}"]


def _reward_line(cfg: FlowGRPOConfig) -> str:
    a = cfg.algo
    if a.reward == "rules":
        return "reward: each task's rule scorer (exact, f1, math, mc, game24)"
    engine = a.judge_engine if a.judge_engine is not None else f"env.engine {cfg.env.engine}"
    return (
        f"reward: LLM judge {engine}, JSON verdict {{analysis, true_false}}, greedy, "
        f"{a.judge_max_tokens} tokens; a judge failure is an infrastructure failure (excluded)"
    )


def _tools_line(cfg: FlowGRPOConfig) -> str:
    from agentflow_env.config import FAMILY_TOOLS
    from agentflow_env.tool_registry import expand_toolsets

    tools = cfg.env.tools
    if tools is None:
        return f"tools: {', '.join(FAMILY_TOOLS[cfg.env.family])} (the family's)"
    names = expand_toolsets(tools) if not isinstance(tools, str) else expand_toolsets([tools])
    return f"tools: {', '.join(str(getattr(t, 'name', t)) for t in names)}"


def _update_line(cfg: FlowGRPOConfig) -> str:
    a, r = cfg.algo, cfg.rollout
    rows = (
        f"one optimizer step per {a.mini_batch_rows} shuffled turn rows"
        if a.mini_batch_rows
        else f"{a.mini_batches} optimizer steps (by trajectory)"
    )
    old = "recomputed by the trainer" if cfg.recomputes_old_logprobs else "the sampler's"
    return (
        f"update: {r.queries_per_step} queries x {r.group_size} samples per step; {a.epochs} "
        f"epoch(s) of {rows}; old log-probs {old}; clip [{1 - a.clip_low:g}, {1 + a.clip_high:g}]"
        f"{f', dual-clip c = {a.dual_clip:g}' if a.dual_clip else ''}; KL {a.kl_coef:g}; "
        f"zero-variance groups {'dropped' if a.skip_zero_variance_groups else 'kept'}"
    )


def describe(cfg: FlowGRPOConfig) -> str:
    """Every resolved value (JSON), then the data, reward, tools and update they amount to."""
    summary = [*_data_lines(cfg), _reward_line(cfg), _tools_line(cfg), _update_line(cfg)]
    return json.dumps(cfg.to_dict(), indent=2) + "\n\n" + "\n".join(summary)


# -------------------------------------------------------------------------------------- checks
def _reachable(url: str) -> str | None:
    """None if a TCP connection to ``url``'s host opens within the timeout, else why not."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{parsed.hostname}:{port} not reachable ({type(exc).__name__}: {exc})"


def _model_check(cfg: FlowGRPOConfig) -> Check:
    name = cfg.model.name_or_path
    path = resolve_model_path(name)
    local = name.startswith(("asset:", "/", "./", "../", "~"))
    if local and not Path(path).expanduser().is_dir():
        return Check("model", "error", f"{name}: no model directory at {path}")
    try:
        from transformers import AutoConfig, AutoTokenizer

        mcfg = AutoConfig.from_pretrained(path, local_files_only=True)
        AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - reported with its reason
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        return Check("model", "unavailable", f"{path}: weights not on this machine ({reason})")
    where = "" if Path(path).is_dir() else " (local Hugging Face cache)"
    size = getattr(mcfg, "hidden_size", "?")
    return Check("model", "ok", f"{path}: {mcfg.model_type}, hidden {size}{where}")


def _engine_check(role: str, spec: Any) -> Check:
    """Whether an engine spec can be served here: its server answers, key, weights, import."""
    if spec is None:
        return Check(role, "ok", "not used")
    if not isinstance(spec, str):
        return Check(role, "ok", f"{type(spec).__name__} object")
    from agentflow_env.llm.spec import parse_spec

    parsed = parse_spec(spec)
    if parsed.kind == "openai":
        url = parsed.base_url or os.environ.get("OPENAI_BASE_URL")
        if url is None and not os.environ.get("OPENAI_API_KEY"):
            return Check(role, "unavailable", f"{spec}: api.openai.com needs OPENAI_API_KEY")
        why = _reachable(url or "https://api.openai.com/v1")
        return Check(role, "unavailable", f"{spec}: {why}") if why else Check(role, "ok", spec)
    if parsed.kind == "vllm":
        return _gpu_check(role, f"{spec} needs")
    if parsed.kind == "python":
        module = parsed.target.rsplit(":", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        status: Status = "ok" if found else "error"
        return Check(role, status, spec if found else f"{spec}: module {module} not found")
    from agentflow_env.llm.models import fetched_path

    target = parsed.target
    if Path(target).expanduser().is_dir() or fetched_path(target) is not None:
        return Check(role, "ok", spec)
    return Check(role, "unavailable", f"{spec}: no local model directory or fetched model")


def _gpu_check(name: str, what: str) -> Check:
    import torch

    found = {"vllm": importlib.util.find_spec("vllm") is not None}
    found["a CUDA GPU"] = torch.cuda.is_available()
    missing = [m for m, ok in found.items() if not ok]
    if missing:
        return Check(name, "unavailable", f"{what} {' and '.join(missing)}, missing here")
    return Check(name, "ok", "vllm and a CUDA GPU found")


def _data_checks(cfg: FlowGRPOConfig) -> tuple[list[Check], list[Any]]:
    """One check per data source (its first records read), and a few tasks for the env check."""
    from learners.flow_grpo.data import (
        DatasetUnavailableError,
        load_deepmath,
        load_nq,
        load_validation,
    )

    d = cfg.data
    checks, sample = [], []
    sources = (("nq", d.nq, load_nq), ("deepmath", d.deepmath, load_deepmath))
    for name, source, load in (*sources, ("val", d.val, load_validation)):
        if source is None:
            continue
        where = f"data.{name}"
        try:
            tasks = load(source, limit=2)
        except DatasetUnavailableError as exc:
            checks.append(Check(where, "unavailable", str(exc)))
            continue
        except (OSError, ValueError) as exc:  # a missing file, records not in the schema
            checks.append(Check(where, "error", f"{type(exc).__name__}: {exc}"))
            continue
        checks.append(
            Check(where, "ok", f"{source}: records read, e.g. {tasks[0].question[:60]!r}")
        )
        sample += tasks
    return checks, sample


_SEARCH_TOOLS = ("Search_Tool", "Ground_Google_Search_Tool", "Wikipedia_RAG_Search_Tool")
_OWN_CORPUS = ("documents", "corpus_path", "index_dir")


def _corpusless_search_tools(cfg: FlowGRPOConfig) -> list[str]:
    """Search tools left without a corpus: loaded tasks bring no documents (a generated task
    set does), so each needs env.documents, its own corpus, or a web backend."""
    from agentflow_env.config import FAMILY_TOOLS
    from agentflow_env.tool_registry import expand_toolsets

    e = cfg.env
    if e.documents is not None or (e.tasks is None and not cfg.data.used):
        return []
    tools = e.tools if e.tools is not None else list(FAMILY_TOOLS[e.family])
    names = [str(t) for t in expand_toolsets([tools] if isinstance(tools, str) else tools)]
    out = []
    for name in names:
        settings = e.tool_kwargs.get(name) or {}
        if name in _SEARCH_TOOLS and settings.get("backend") != "web":
            if not any(k in settings for k in _OWN_CORPUS):
                out.append(name)
    return out


def _env_check(cfg: FlowGRPOConfig, sample: list[Any]) -> list[Check]:
    """Build one env (tools, modules, judge engine objects) and reset it. A search tool without a
    corpus is reported unavailable (a Wikipedia dump or a web-search key is a resource, like
    weights) and the env is checked with a stand-in corpus of the sampled questions."""
    from learners.envs import make_vector_env

    update: dict[str, Any] = {"tasks": sample} if sample else {}
    checks = []
    corpusless = _corpusless_search_tools(cfg)
    if corpusless:
        hint = (
            "give env.documents, tool_kwargs {NAME: {corpus_path: ...}} (e.g. the Wikipedia dump "
            "FlashRAG's NQ retrieval uses) or, for Ground_Google_Search_Tool, {backend: web} "
            "with a search API key"
        )
        checks.append(
            Check("search corpus", "unavailable", f"{', '.join(corpusless)}: no corpus; {hint}")
        )
        update["documents"] = [{"title": t.id, "text": t.question} for t in sample] or [
            {"title": "stand-in", "text": "a stand-in document"}
        ]
    env = cfg.env.model_copy(update=update) if update else cfg.env
    try:
        envs = make_vector_env(env, 1)
        try:
            obs, _ = envs.reset(seed=0, options={"tasks": [envs.tasks[0]]})
            tools = ", ".join(envs.flow.tools)
        finally:
            envs.close()
    except Exception as exc:  # noqa: BLE001 - reported as the configuration's error
        return [*checks, Check("env", "error", f"{type(exc).__name__}: {exc}")]
    tasks = "a sample of the data's tasks" if sample else f"{len(envs.tasks)} tasks"
    if cfg.data.used and not sample:
        tasks += " (its own set: the data section's sources are unavailable)"
    if corpusless:
        tasks += ", a stand-in search corpus"
    detail = f"{cfg.env.env_id}: {tasks}; tools {tools}; first prompt {len(obs[0])} chars"
    return [*checks, Check("env", "ok", detail)]


def _hub_check() -> Check:
    """Whether the Hugging Face Hub answers. If not, ``HF_HUB_OFFLINE=1`` is set for this process
    (read when transformers and datasets are first imported, so this runs before them): weights
    and datasets then come from the local cache at once, without the libraries' retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return Check("hub", "ok", "HF_HUB_OFFLINE=1: the local Hugging Face cache only")
    why = _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if why is None:
        return Check("hub", "ok", "the Hugging Face Hub answers")
    os.environ["HF_HUB_OFFLINE"] = "1"
    return Check("hub", "unavailable", f"the Hugging Face Hub: {why}; the local cache only")


def run_checks(cfg: FlowGRPOConfig) -> list[Check]:
    """Every resource of the run, without loading weights or calling an engine (query analysis,
    if on, is asked once by the env's reset: its failure is the env's infrastructure error)."""
    checks = [Check("config", "ok", f"preset {cfg.preset}, valid")]
    d = cfg.data
    hub_data = any(str(s).startswith("hf:") for s in (d.nq, d.deepmath, d.val) if s is not None)
    if hub_data or not Path(resolve_model_path(cfg.model.name_or_path)).is_dir():
        checks.append(_hub_check())
    checks.append(_model_check(cfg))
    data_checks, sample = _data_checks(cfg)
    checks += data_checks
    e = cfg.env
    engines = {"env.engine": e.engine}
    engines |= {f"env.{n}_engine": getattr(e, f"{n}_engine") for n in ("executor", "verifier")}
    engines["env.generator_engine"] = e.generator_engine
    if cfg.algo.reward == "judge":
        engines["algo.judge_engine"] = cfg.algo.judge_engine or e.engine
    checks += [_engine_check(role, spec) for role, spec in engines.items() if spec is not None]
    checks += _env_check(cfg, sample)
    if cfg.rollout.backend == "vllm":
        checks.append(_gpu_check("backend", "rollout.backend='vllm' needs"))
    else:
        checks.append(Check("backend", "ok", "transformers generate"))
    return checks
