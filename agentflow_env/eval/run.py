"""Running an evaluation: episodes through the vector env, records streamed, the report built.

Each step calls the planner once on the batch of live observations; sub-envs are refilled as
episodes end. Every finished episode is an :class:`~agentflow_env.trajectory.EpisodeRecord`,
streamed to the trajectory file at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from agentflow_env.eval.build import build_envs, build_setup, make_planner, select_tasks
from agentflow_env.eval.config import EvalConfig, validate_config
from agentflow_env.eval.passk import sample_summary
from agentflow_env.eval.report import episode_rows, summarize
from agentflow_env.planners.batch import BatchPlanner, ScriptedBatchPlanner
from agentflow_env.tasks.base import Task
from agentflow_env.trajectory import EpisodeRecord, TrajectoryBuilder, info_at, write_jsonl

__all__ = ["run"]

logger = logging.getLogger(__name__)


def _turn_errors(info: Mapping[str, Any]) -> Counter[str]:
    """Error kinds of one step's info (parse, executor, tool, verifier, generator, score)."""
    kinds: Counter[str] = Counter()
    if info.get("error_kind"):
        kinds[info["error_kind"]] += 1
    for kind in ("verifier", "generator", "score"):
        if info.get(f"{kind}_error"):
            kinds[kind] += 1
    return kinds


@dataclass
class _Running:
    """The episode a sub-env is running."""

    index: int
    builder: TrajectoryBuilder
    errors: Counter[str]

    def started(self, info: Mapping[str, Any]) -> None:
        self.errors["query_analysis"] += bool(info.get("query_analysis_error"))


def _run_episodes(
    envs: Any,
    planner: BatchPlanner,
    tasks: Sequence[Task],
    cfg: EvalConfig,
    on_done: Callable[[EpisodeRecord], None],
) -> None:
    """Drive ``tasks`` through the vector env, refilling sub-envs as episodes end."""
    n = envs.num_envs
    queue = deque(enumerate(tasks))
    slots: list[_Running | None] = [None] * n

    def assign(indices: list[int]) -> dict[int, Task]:
        chosen = {}
        for i in indices:
            k, task = queue.popleft()
            slots[i] = _Running(k, TrajectoryBuilder(f"ep{k}", task, episode_index=k), Counter())
            planner.start(i, task, k)
            chosen[i] = task
        return chosen

    chosen = assign(list(range(n)))
    obs, infos = envs.reset(seed=cfg.seed, options={"tasks": [chosen[i] for i in range(n)]})
    for i in range(n):
        slots[i].started(info_at(infos, i))  # type: ignore[union-attr]
    while any(s is not None for s in slots):
        live = [i for i in range(n) if slots[i] is not None]
        turns = [len(slots[i].builder.record.turns) + 1 for i in live]  # type: ignore[union-attr]
        acted = planner.act(live, [obs[i] for i in live], [slots[i].index for i in live], turns)  # type: ignore[union-attr]
        actions = [""] * n
        for i, action in zip(live, acted, strict=True):
            actions[i] = action
        obs, rewards, terms, truncs, infos = envs.step(actions)
        finished = []
        for i in live:
            slot, info = slots[i], info_at(infos, i)
            assert slot is not None
            slot.builder.add(actions[i], float(rewards[i]), bool(terms[i]), bool(truncs[i]), info)
            slot.errors.update(_turn_errors(info))
            if terms[i] or truncs[i]:
                if planner.errors.get(slot.index):
                    slot.errors["planner"] += planner.errors.pop(slot.index)
                record = slot.builder.record
                record.metadata["errors"] = {k: v for k, v in slot.errors.items() if v}
                on_done(record)
                slots[i] = None
                finished.append(i)
        refill = finished[: len(queue)]
        if refill:
            chosen = assign(refill)
            mask = np.zeros(n, dtype=bool)
            mask[refill] = True
            obs, infos = envs.reset(
                options={"tasks": [chosen.get(i) for i in range(n)], "reset_mask": mask}
            )
            for i in refill:
                slots[i].started(info_at(infos, i))  # type: ignore[union-attr]


def _recorder(
    records: list[EpisodeRecord], stream: TextIO | None
) -> Callable[[EpisodeRecord], None]:
    """Keep each finished episode; stream it to the trajectory file at once (a crash keeps it)."""

    def done(record: EpisodeRecord) -> None:
        records.append(record)
        if stream is not None:
            write_jsonl([record], stream)
            stream.flush()

    return done


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Run an evaluation; returns the report (config, tools, notes, summary, per-episode rows).

    Raises:
        EvaluateError: bad arguments or inputs (unknown env id, missing file, bad planner spec...).
    """
    started = time.perf_counter()
    validate_config(cfg)
    setup = build_setup(cfg)
    planner: BatchPlanner | None = None
    envs: Any = None
    records: list[EpisodeRecord] = []
    stream: TextIO | None = None
    try:
        planner = make_planner(cfg)
        envs = build_envs(cfg, setup)
        tasks = select_tasks(envs.tasks, cfg)
        tools = list(envs.flow.tools)
        if isinstance(planner, ScriptedBatchPlanner):
            planner.bind_tools(tools)
        setup_s = time.perf_counter() - started
        start = time.perf_counter()
        if cfg.trajectories:  # closed in the finally below
            Path(cfg.trajectories).parent.mkdir(parents=True, exist_ok=True)
            stream = open(cfg.trajectories, "w", encoding="utf-8")  # noqa: SIM115
        _run_episodes(envs, planner, tasks, cfg, _recorder(records, stream))
        wall = time.perf_counter() - start
    finally:
        for resource in (stream, envs, planner):
            if resource is not None:
                resource.close()
        for engine, spec in (
            (setup.module_engine, cfg.module_engine),
            (setup.judge.engine if setup.judge else None, cfg.judge),
        ):
            if engine is not None and isinstance(
                spec, str
            ):  # built here from a spec: ours to close
                engine.close()
    records.sort(key=lambda r: r.metadata["episode_index"])
    config = {
        k: v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else repr(v)
        for k, v in asdict(cfg).items()
    }
    summary = summarize(records, planner, setup.module_engine, setup.judge, wall)
    if cfg.samples > 1:  # per-task success, mean@K, pass@k
        summary["samples"] = sample_summary(records, cfg.samples)
    report = {
        "config": config,
        "kind": setup.kind,
        "tools": tools,
        "notes": setup.notes,
        "setup_s": setup_s,
        "summary": summary,
        "episodes": episode_rows(records),
    }
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report, indent=2, allow_nan=False, default=str)
        Path(cfg.out).write_text(text + "\n", encoding="utf-8")
    return report
