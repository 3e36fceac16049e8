"""Asynchronous rollouts with bounded staleness (``rollout.max_staleness = k > 0``).

The trainer's update and its rollouts share nothing but weights, so they can overlap: a
:class:`RolloutWorker` collects the rollouts of coming steps on its own threads while the trainer
updates. Generating with the trainer's own model while the optimizer changes the same parameters
would be a race, so every collector samples from **its own copy of the model**, loaded with a
snapshot of the trainer's weights taken when the job was submitted.

Lag: the rollout of step ``t`` always samples with *version* ``t - 1 - k`` of the weights (the
parameters after ``t - 1 - k`` updates; never older than the run's starting version). The lag is
fixed, not "whatever is newest", so a run is reproducible whatever the threads' timing, and
``k = 0`` through the worker samples exactly what the synchronous loop samples (a test).
Each trajectory record carries ``policy_version`` in its metadata.

The trainer submits the job of step ``t + 1 + k`` right after update ``t`` (it needs version
``t``), and takes the rollout of step ``t + 1`` before update ``t + 1``. After update ``t`` the
rollouts of steps ``t + 1 .. t + 1 + k`` all have their weights, so up to ``k + 1`` of them can
be in flight at once: the worker runs ``C`` (``rollout.collectors``, at most ``k + 1``) collector
threads, each with its own model copy and its own training vector env, taking jobs in step
order; rollouts come back to the trainer in step order. With ``C = 1`` one rollout overlaps one
update (a step costs at best ``max(rollout, update)``); with ``C = k + 1`` a rollout also
overlaps the next ones, which is what pays where a rollout mostly *waits* (LLM-module, engine
and tool latency: sleep and network cost no CPU), while generation competes with the update and
with the other collectors for the same cores (and for Python's GIL). A collection depends only
on its plan (queries, seed: the env is reset from the plan's generator), the job's weights and
the env's settings, never on which collector ran it or when: the same seed gives the same
parameters whatever ``C`` and the timing (a test). Collectors call no collective, so DDP ranks
stay in lock-step through the update's all-reduces.

Memory: each collector holds a second instance of the policy (and a copy of its tokenizer: fast
tokenizers are not safe to share between threads) and a training vector env set (its tools,
e.g. a search index and a sandbox pool; the first collector uses the trainer's own envs, which
the trainer no longer steps itself); each queued job holds a copy of the weights it samples with
(at most ``k + 1`` copies, on the model's device).

Queries and seeds are drawn in step order from the trainer's generator, as the synchronous loop
draws them; each :class:`StepPlan` keeps the generator's state after its draw, which is what a
checkpoint at that step stores. A resumed run starts a new pipeline: its first ``k`` steps sample
from the resumed weights (older versions are not checkpointed).
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from learners.policy import HFGenerator, Policy
from learners.rollout import RolloutBatch

logger = logging.getLogger(__name__)

__all__ = [
    "Rollout",
    "RolloutWorker",
    "StepPlan",
    "WorkerError",
    "resolve_collectors",
    "weights_snapshot",
]


class WorkerError(RuntimeError):
    """The rollout worker failed (its exception is the cause), stopped or timed out."""


@dataclass(frozen=True)
class StepPlan:
    """What one training step samples: its queries and seed, drawn in step order."""

    step: int
    """1-based training step"""
    queries: np.ndarray
    """indices into the training tasks, for all ranks"""
    seed: int
    rng_state: dict[str, Any]
    """the trainer generator's state right after this plan was drawn (checkpoints store it)"""


@dataclass
class Rollout:
    """A finished collection: the batch, the generator it used, and which weights sampled it."""

    plan: StepPlan
    version: int
    """updates the sampling weights had seen"""
    batch: RolloutBatch
    rng: np.random.Generator
    """the step's generator after collection (the update draws its mini-batch order from it)"""
    seconds: float
    """the collector's own collection time"""
    collector: int = 0
    """which collector thread made it"""


Collect = Callable[[Policy, Any, StepPlan, int], tuple[RolloutBatch, np.random.Generator]]
"""``collect(policy, envs, plan, version)``: the collector's policy and vector env"""


def weights_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer (the job's weights)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def resolve_collectors(lag: int, collectors: int = 0) -> int:
    """Collector threads for ``lag``: ``collectors``, or ``lag + 1`` for 0 (every rollout that
    has its weights in flight). More than ``lag + 1`` is refused: they would have nothing to do."""
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    if not 0 <= collectors <= lag + 1:
        raise ValueError(
            f"collectors={collectors} must be in [0, lag + 1 = {lag + 1}] (0: lag + 1): at most "
            "lag + 1 rollouts have their weights at once"
        )
    return collectors or lag + 1


@dataclass
class _Job:
    plan: StepPlan
    version: int
    weights: dict[str, torch.Tensor]


@dataclass
class _Collector:
    index: int
    policy: Policy
    envs: Any
    owned: bool
    """the worker built ``envs`` and closes them"""
    thread: threading.Thread | None = field(default=None, repr=False)


def _collector_policy(policy: Policy) -> Policy:
    """A frozen copy of ``policy`` with its own tokenizer and the same generation batch size."""
    frozen = policy.frozen_copy()
    own = Policy(
        frozen.model,
        copy.deepcopy(policy.tokenizer),
        device=policy.device,
        chat_template=policy.chat_template,
    )
    if isinstance(policy.generator, HFGenerator) and isinstance(own.generator, HFGenerator):
        own.generator.max_batch_size = policy.generator.max_batch_size
    return own


class RolloutWorker:
    """Collects the rollout of each step on ``collectors`` threads, ``lag`` updates behind.

    ``collect(policy, envs, plan, version)`` runs on a collector thread with that collector's
    own :class:`Policy` and vector env: the first collector gets ``envs``, each further one
    ``make_envs()`` (built here, closed by :meth:`close`). ``plan(step)`` draws a step's plan
    (on the trainer's thread, in step order). The trainer calls :meth:`take` before each update
    and :meth:`updated` after it. Errors in any collector come back from :meth:`take` as
    :class:`WorkerError`.
    """

    def __init__(
        self,
        policy: Policy,
        collect: Collect,
        plan: Callable[[int], StepPlan],
        lag: int,
        total_steps: int,
        *,
        collectors: int = 1,
        envs: Any = None,
        make_envs: Callable[[], Any] | None = None,
        poll_s: float = 0.5,
    ) -> None:
        count = resolve_collectors(lag, collectors)
        if count > 1 and make_envs is None:
            raise ValueError("collectors > 1 need make_envs: each collector steps its own envs")
        self.lag, self.total_steps, self._plan = lag, total_steps, plan
        self._primed = False
        self._collect = collect
        self._poll_s = poll_s
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._done: dict[int, Rollout] = {}
        self._errors: dict[int, BaseException] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.collectors: list[_Collector] = []
        try:
            for i in range(count):
                built = envs if i == 0 else make_envs()  # type: ignore[misc]
                self.collectors.append(_Collector(i, _collector_policy(policy), built, i > 0))
        except BaseException:
            self._close_envs(self.collectors)
            raise
        for c in self.collectors:
            c.thread = threading.Thread(
                target=self._run, args=(c,), name=f"rollout-collector-{c.index}", daemon=True
            )
            c.thread.start()
        self.pending: list[int] = []
        """steps submitted and not yet taken, in order"""

    @property
    def policy(self) -> Policy:
        """The first collector's policy."""
        return self.collectors[0].policy

    def submit(self, plan: StepPlan, version: int, model: nn.Module) -> None:
        """Queue ``plan`` to be sampled with ``model``'s current weights (copied now)."""
        if self._stop.is_set():
            raise WorkerError("the rollout worker is closed")
        self.pending.append(plan.step)
        self._jobs.put(_Job(plan, version, weights_snapshot(model)))

    def updated(self, step: int, model: nn.Module) -> None:
        """Update ``step`` is done: queue the step that samples with its weights (``step + 1 +
        lag``), if the run has it."""
        if step + 1 + self.lag <= self.total_steps:
            self.submit(self._plan(step + 1 + self.lag), step, model)

    def take(self, step: int, model: nn.Module, timeout_s: float | None = None) -> Rollout:
        """The rollout of ``step``, waiting for it (at most ``timeout_s``; None: until it comes
        or every collector has stopped). The first call queues steps ``step`` .. ``step + lag``,
        all with ``model``'s weights (version ``step - 1``: the run's start)."""
        if not self._primed:
            self._primed = True
            for t in range(step, min(step + self.lag, self.total_steps) + 1):
                self.submit(self._plan(t), step - 1, model)
        if not self.pending or self.pending[0] != step:
            raise WorkerError(
                f"step {step} was not the next one submitted (pending {self.pending})"
            )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while step not in self._done and not self._errors:
                if not any(c.thread is not None and c.thread.is_alive() for c in self.collectors):
                    raise WorkerError("the rollout worker stopped before finishing")
                if deadline is not None and time.monotonic() >= deadline:
                    raise WorkerError(f"the rollout of step {step} took over {timeout_s:g} s")
                self._cond.wait(self._poll_s)
            if step in self._done:
                self.pending.pop(0)
                return self._done.pop(step)
            failed = step if step in self._errors else min(self._errors)
            exc = self._errors[failed]
        raise WorkerError(f"the rollout worker failed at step {failed}: {exc}") from exc

    def _run(self, collector: _Collector) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            try:
                t0 = time.perf_counter()
                collector.policy.model.load_state_dict(job.weights)
                del job.weights
                batch, rng = self._collect(collector.policy, collector.envs, job.plan, job.version)
                took = time.perf_counter() - t0
                done = Rollout(job.plan, job.version, batch, rng, took, collector.index)
            except BaseException as exc:  # handed to the trainer's thread by take()
                with self._cond:
                    self._errors[job.plan.step] = exc
                    self._stop.set()  # the others stop after their job in progress
                    self._cond.notify_all()
                return
            with self._cond:
                self._done[job.plan.step] = done
                self._cond.notify_all()

    def close(self, timeout_s: float = 600.0) -> None:
        """Stop after the jobs in progress (queued ones are dropped) and close the envs this
        worker built; waits up to ``timeout_s`` in all."""
        self._stop.set()
        for _ in self.collectors:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout_s
        stopped = []
        for c in self.collectors:
            if c.thread is not None:
                c.thread.join(max(0.0, deadline - time.monotonic()))
                if c.thread.is_alive():
                    logger.warning(
                        "rollout collector %d did not stop within %.0f s; its envs stay open",
                        c.index,
                        timeout_s,
                    )
                    continue
            stopped.append(c)
        self._close_envs(stopped)

    @staticmethod
    def _close_envs(collectors: list[_Collector]) -> None:
        for c in collectors:
            if c.owned and c.envs is not None:
                try:
                    c.envs.close()
                except Exception as exc:  # closing must not mask the caller's own error
                    logger.warning("closing rollout collector %d's envs failed: %s", c.index, exc)
