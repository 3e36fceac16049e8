"""Running an evaluation: episodes through the vector env, records streamed, the report built.

Each step calls the planner once on the batch of live observations; sub-envs are refilled as
episodes end. Every finished episode is an :class:`~agentflow_env.trajectory.EpisodeRecord`,
streamed to the trajectory file at once (a kill loses at most a torn last line).

Infrastructure failures (:mod:`agentflow_env.infra`) are the third outcome: an episode whose
planner engine failed is ended here (the env ends those whose modules, tools or judge failed),
recorded with ``infra_error`` and not scored. More errored episodes than ``max_errors`` allows
stop the run: the partial report and trajectories are written and :class:`RunStopped` raised.

``resume`` continues from the trajectory file: every finished, scored episode is kept (matched
by its ``episode_index`` and task), errored ones and a torn last line are dropped and played
again, so each episode appears exactly once and a deterministic planner's report equals an
uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from agentflow_env.eval.build import build_envs, build_setup, make_planner, preflight, select_tasks
from agentflow_env.eval.config import (
    EvalConfig,
    EvaluateError,
    RunStopped,
    error_limit,
    parse_max_errors,
    validate_config,
)
from agentflow_env.eval.passk import sample_summary
from agentflow_env.eval.protocol import resolve
from agentflow_env.eval.report import episode_rows, summarize
from agentflow_env.planners.batch import BatchPlanner, EngineBatchPlanner, ScriptedBatchPlanner
from agentflow_env.runfiles import atomic_write_text, fsync_dir
from agentflow_env.tasks.base import Task
from agentflow_env.trajectory import (
    EpisodeRecord,
    TrajectoryBuilder,
    info_at,
    recover_jsonl,
    write_jsonl,
)

__all__ = ["run"]

logger = logging.getLogger(__name__)


def _turn_errors(info: Mapping[str, Any]) -> Counter[str]:
    """Error kinds of one step's info (parse, executor, tool, verifier, generator, score)."""
    kinds: Counter[str] = Counter()
    if info.get("error_kind") and info["error_kind"] != "infra":
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
    messages: Any = None
    """the episode's chat messages (``info["messages"]``) as of its latest reset or step"""

    def started(self, info: Mapping[str, Any]) -> None:
        self.errors["query_analysis"] += bool(info.get("query_analysis_error"))
        self.messages = info.get("messages")


class _Episodes:
    """Drives queued (episode index, task) pairs through the vector env, refilling sub-envs as
    episodes end; counts errored episodes against the run's limit."""

    def __init__(
        self,
        envs: Any,
        planner: BatchPlanner,
        todo: Sequence[tuple[int, Task]],
        on_done: Callable[[EpisodeRecord], None],
        limit: int,
    ) -> None:
        self.envs, self.planner, self.on_done, self.limit = envs, planner, on_done, limit
        self.queue = deque(todo)
        self.slots: list[_Running | None] = [None] * envs.num_envs
        self.errored = 0
        self.last_error = ""

    def _assign(self, indices: Sequence[int]) -> dict[int, Task]:
        chosen = {}
        for i in indices:
            k, task = self.queue.popleft()
            self.slots[i] = _Running(
                k, TrajectoryBuilder(f"ep{k}", task, episode_index=k), Counter()
            )
            self.planner.start(i, task, k)
            chosen[i] = task
        return chosen

    def _reset(self, indices: list[int]) -> tuple[str, ...]:
        n = self.envs.num_envs
        chosen = self._assign(indices)
        mask = np.zeros(n, dtype=bool)
        mask[indices] = True
        options = {"tasks": [chosen.get(i) for i in range(n)], "reset_mask": mask}
        obs, infos = self.envs.reset(options=options)
        for i in indices:
            self.slots[i].started(info_at(infos, i))  # type: ignore[union-attr]
        return obs

    def _done(self, i: int) -> None:
        slot = self.slots[i]
        assert slot is not None
        if self.planner.errors.get(slot.index):
            slot.errors["planner"] += self.planner.errors.pop(slot.index)
        record = slot.builder.record
        record.metadata["errors"] = {k: v for k, v in slot.errors.items() if v}
        if record.infra_error is not None:
            self.errored += 1
            self.last_error = str(record.infra_error)
        self.on_done(record)
        self.slots[i] = None

    def run(self, seed: int) -> str | None:
        """Play every queued episode; returns why the run stopped early, or None."""
        n = self.envs.num_envs
        first = min(n, len(self.queue))
        chosen = self._assign(range(first))
        obs, infos = self.envs.reset(
            seed=seed, options={"tasks": [chosen.get(i) for i in range(n)]}
        )
        for i in range(first):
            self.slots[i].started(info_at(infos, i))  # type: ignore[union-attr]
        if first < n:  # fewer episodes than sub-envs: the rest stay idle
            self.envs.abandon(range(first, n))
        while any(s is not None for s in self.slots):
            finished, obs = self._turn(obs)
            if self.errored > self.limit:
                return (
                    f"stopped after {self.errored} errored episodes (more than the {self.limit} "
                    f"--max-errors allows); the last: {self.last_error}"
                )
            refill = finished[: len(self.queue)]
            if refill:
                obs = self._reset(refill)
        return None

    def _turn(self, obs: tuple[str, ...]) -> tuple[list[int], tuple[str, ...]]:
        """One planner call and one env step for the live sub-envs: the sub-envs whose episode
        ended, and the new observations."""
        n, slots = self.envs.num_envs, self.slots
        live = [i for i in range(n) if slots[i] is not None]
        turns = [len(slots[i].builder.record.turns) + 1 for i in live]  # type: ignore[union-attr]
        acted = self.planner.act(
            live,
            [obs[i] for i in live],
            [slots[i].index for i in live],  # type: ignore[union-attr]
            turns,
            messages=[slots[i].messages for i in live],  # type: ignore[union-attr]
        )
        actions = [""] * n
        for i, action in zip(live, acted, strict=True):
            actions[i] = action
        failed = getattr(self.planner, "failed", {})
        lost = [i for i in live if slots[i].index in failed]  # type: ignore[union-attr]
        for i in lost:  # the planner's engine failed: the episode has no outcome
            slots[i].builder.fail(failed[slots[i].index])  # type: ignore[union-attr]
            self._done(i)
        if lost:
            self.envs.abandon(lost)
        finished = list(lost)
        stepping = [i for i in live if i not in lost]
        if not stepping:
            return finished, obs
        obs, rewards, terms, truncs, infos = self.envs.step(actions)
        for i in stepping:
            slot, info = slots[i], info_at(infos, i)
            assert slot is not None
            slot.builder.add(actions[i], float(rewards[i]), bool(terms[i]), bool(truncs[i]), info)
            slot.messages = info.get("messages")
            slot.errors.update(_turn_errors(info))
            if terms[i] or truncs[i]:
                self._done(i)
                finished.append(i)
        return finished, obs


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


def _resumed(path: str, tasks: Sequence[Task]) -> list[EpisodeRecord]:
    """Finished, scored episodes of an earlier run of this evaluation; the file is rewritten
    (atomically) to hold just those, so new records append after them."""
    if not Path(path).is_file():
        return []
    try:
        records, torn = recover_jsonl(path)
    except (OSError, ValueError) as exc:
        raise EvaluateError(f"--resume: cannot read --trajectories {path!r}: {exc}") from exc
    kept: dict[int, EpisodeRecord] = {}
    for record in records:
        k = record.metadata.get("episode_index")
        if not isinstance(k, int) or not 0 <= k < len(tasks) or record.task_id != str(tasks[k].id):
            raise EvaluateError(
                f"--resume: {path!r} holds episode {record.episode_id} (task {record.task_id}) "
                "that this evaluation does not play: it was written by another configuration "
                "(use a new --trajectories file or --overwrite)"
            )
        if record.infra_error is None:
            kept.setdefault(k, record)
    dropped = len(records) - len(kept)
    if torn or dropped:
        logger.warning(
            "resuming %s: dropped %d errored or repeated record(s)%s; they are played again",
            path,
            dropped,
            " and a torn last line" if torn else "",
        )
    atomic_write_text(path, "".join(r.model_dump_json() + "\n" for r in kept.values()))
    return list(kept.values())


def _close(cfg: EvalConfig, setup: Any, resources: Sequence[Any]) -> None:
    for resource in resources:
        if resource is not None:
            resource.close()
    module = setup.module_engine
    judge = setup.judge.engine if setup.judge else None
    if module is not None and judge is module.engine:  # shared (make_judge): closed once
        judge = None
    for engine, spec in ((module, cfg.module_engine), (judge, cfg.judge)):
        if engine is not None and isinstance(spec, str):  # built here from a spec: ours to close
            engine.close()


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Run an evaluation; returns the report (config, tools, notes, summary, per-episode rows).

    ``cfg``'s protocol first fills the settings it leaves None
    (:func:`~agentflow_env.eval.protocol.resolve`); the report's config is the resolved one.

    Raises:
        EvaluateError: bad arguments or inputs (unknown env id, missing file, bad planner spec,
            an output that exists without ``resume``/``overwrite``...), before any episode.
        RunStopped: infrastructure failed: the preflight (nothing written), or more episodes
            errored than ``max_errors`` allows (the partial report and trajectories written).
    """
    started = time.perf_counter()
    cfg, _ = resolve(cfg)
    validate_config(cfg)
    max_errors = parse_max_errors(cfg.max_errors)
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
        if isinstance(planner, (ScriptedBatchPlanner, EngineBatchPlanner)):
            planner.bind_tools(tools)
        if cfg.resume:
            records = _resumed(str(cfg.trajectories), tasks)
        done = {r.metadata["episode_index"] for r in records}
        todo = [(k, task) for k, task in enumerate(tasks) if k not in done]
        if cfg.preflight and todo:
            preflight(planner, setup)
        setup_s = time.perf_counter() - started
        start = time.perf_counter()
        if cfg.trajectories:  # closed in the finally below
            Path(cfg.trajectories).parent.mkdir(parents=True, exist_ok=True)
            stream = open(cfg.trajectories, "a" if cfg.resume else "w", encoding="utf-8")  # noqa: SIM115
        stopped = None
        if todo:
            limit = error_limit(max_errors, len(tasks))
            stopped = _Episodes(envs, planner, todo, _recorder(records, stream), limit).run(
                cfg.seed
            )
        wall = time.perf_counter() - start
        if stream is not None:
            stream.flush()
            os.fsync(stream.fileno())
            fsync_dir(Path(cfg.trajectories).parent)  # type: ignore[arg-type]
    finally:
        _close(cfg, setup, (stream, envs, planner))
    records.sort(key=lambda r: r.metadata["episode_index"])
    config = {
        k: v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else repr(v)
        for k, v in asdict(cfg).items()
    }
    summary = summarize(records, planner, setup.module_engine, setup.judge, wall)
    summary.update(planned=len(tasks), stopped=stopped)
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
        atomic_write_text(
            cfg.out, json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"
        )
    if stopped is not None:
        raise RunStopped(stopped, report)
    return report
