"""Asynchronous rollouts with bounded staleness (``rollout.max_staleness = k > 0``).

The trainer's update and its rollouts share nothing but weights, so they can overlap: a
:class:`RolloutWorker` thread collects the rollouts of coming steps while the trainer updates.
Generating with the trainer's own model while the optimizer changes the same parameters would be
a race, so the worker samples from **its own copy of the model**, loaded with a snapshot of the
trainer's weights taken when the job was submitted.

Lag: the rollout of step ``t`` always samples with *version* ``t - 1 - k`` of the weights (the
parameters after ``t - 1 - k`` updates; never older than the run's starting version). The lag is
fixed, not "whatever is newest", so a run is reproducible whatever the threads' timing, and
``k = 0`` through the worker samples exactly what the synchronous loop samples (a test).
Each trajectory record carries ``policy_version`` in its metadata.

The trainer submits the job of step ``t + 1 + k`` right after update ``t`` (it needs version
``t``), and takes the rollout of step ``t + 1`` before update ``t + 1``: the rollout of step
``t + 1`` runs during update ``t``. What overlaps on a CPU is mostly *waiting*: LLM-module and
tool latency in the env (sleep, network) costs no CPU, while generation competes with the update
for the same cores. The worker uses the trainer's training envs (the trainer no longer steps
them itself), and calls no collective, so DDP ranks stay in lock-step through the update's
all-reduces.

Memory: the worker's model is a second instance of the policy, and each queued job holds a copy
of the weights it samples with (at most ``k + 1`` copies, on the model's device).

Queries and seeds are drawn in step order from the trainer's generator, as the synchronous loop
draws them; each :class:`StepPlan` keeps the generator's state after its draw, which is what a
checkpoint at that step stores. A resumed run starts a new pipeline: its first ``k`` steps sample
from the resumed weights (older versions are not checkpointed).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from learners.policy import HFGenerator, Policy
from learners.rollout import RolloutBatch

logger = logging.getLogger(__name__)

__all__ = ["Rollout", "RolloutWorker", "StepPlan", "WorkerError", "weights_snapshot"]


class WorkerError(RuntimeError):
    """The rollout worker failed (its exception is the cause) or stopped."""


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
    """the worker's own collection time"""


Collect = Callable[[Policy, StepPlan, int], tuple[RolloutBatch, np.random.Generator]]


def weights_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer (the job's weights)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class _Job:
    plan: StepPlan
    version: int
    weights: dict[str, torch.Tensor]


class RolloutWorker:
    """Collects the rollout of each step on a thread, ``lag`` updates behind the trainer.

    ``collect(policy, plan, version)`` runs on the worker thread with the worker's own
    :class:`Policy`; ``plan(step)`` draws a step's plan (on the trainer's thread, in step order).
    The trainer calls :meth:`take` before each update and :meth:`updated` after it. Errors in
    the worker come back from :meth:`take` as :class:`WorkerError`.
    """

    def __init__(
        self,
        policy: Policy,
        collect: Collect,
        plan: Callable[[int], StepPlan],
        lag: int,
        total_steps: int,
        poll_s: float = 0.5,
    ) -> None:
        if lag < 0:
            raise ValueError(f"lag must be >= 0, got {lag}")
        self.lag, self.total_steps, self._plan = lag, total_steps, plan
        self._primed = False
        self.policy = policy.frozen_copy()  # a second model instance: the snapshot's home
        if isinstance(policy.generator, HFGenerator) and isinstance(
            self.policy.generator, HFGenerator
        ):
            self.policy.generator.max_batch_size = policy.generator.max_batch_size
        self._collect = collect
        self._poll_s = poll_s
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._done: queue.Queue[Rollout | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-worker", daemon=True)
        self._thread.start()
        self.pending: list[int] = []
        """steps submitted and not yet taken, in order"""

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

    def take(self, step: int, model: nn.Module) -> Rollout:
        """The rollout of ``step``, waiting for it. The first call queues steps ``step`` ..
        ``step + lag``, all with ``model``'s weights (version ``step - 1``: the run's start)."""
        if not self._primed:
            self._primed = True
            for t in range(step, min(step + self.lag, self.total_steps) + 1):
                self.submit(self._plan(t), step - 1, model)
        if not self.pending or self.pending[0] != step:
            raise WorkerError(
                f"step {step} was not the next one submitted (pending {self.pending})"
            )
        while True:
            try:
                item = self._done.get(timeout=self._poll_s)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise WorkerError("the rollout worker stopped before finishing") from None
        if isinstance(item, BaseException):
            self._stop.set()
            raise WorkerError(f"the rollout worker failed at step {step}: {item}") from item
        self.pending.pop(0)
        return item

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            try:
                t0 = time.perf_counter()
                self.policy.model.load_state_dict(job.weights)
                del job.weights
                batch, rng = self._collect(self.policy, job.plan, job.version)
                self._done.put(Rollout(job.plan, job.version, batch, rng, time.perf_counter() - t0))
            except BaseException as exc:  # handed to the trainer's thread by take()
                self._done.put(exc)
                return

    def close(self, timeout_s: float = 600.0) -> None:
        """Stop after the job in progress (queued ones are dropped); waits up to ``timeout_s``."""
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("the rollout worker did not stop within %.0f s", timeout_s)
