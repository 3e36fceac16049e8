"""The rollout worker's collector threads (learners.flow_grpo.async_rollout): rollouts come back
in step order however the collectors finish; each collector has its own policy copy and envs;
the first error reaches the trainer; close and take never hang."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from learners.flow_grpo.async_rollout import (
    RolloutWorker,
    StepPlan,
    WorkerError,
    resolve_collectors,
)
from learners.policy import Policy
from learners.rollout import RolloutBatch


@pytest.fixture(scope="module")
def policy(tiny_model_dir: Path) -> Policy:
    return Policy.from_pretrained(tiny_model_dir, device="cpu")


class Envs:
    """A collector's env set as the worker sees it: an object it hands over and may close."""

    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def close(self) -> None:
        self.closed = True


def _plan(step: int) -> StepPlan:
    return StepPlan(step, np.array([step]), step, {})


def _batch() -> RolloutBatch:
    return RolloutBatch(samples=[], trajectories=[], group_size=1)


def _worker(policy: Policy, collect: Any, lag: int, steps: int, **kw: Any) -> RolloutWorker:
    made: list[Envs] = []

    def make_envs() -> Envs:
        made.append(Envs(f"made{len(made)}"))
        return made[-1]

    worker = RolloutWorker(
        policy, collect, _plan, lag, steps, envs=Envs("trainer"), make_envs=make_envs, **kw
    )
    worker.made = made  # type: ignore[attr-defined]
    return worker


def test_rollouts_come_back_in_step_order_while_two_run_at_once(policy: Policy) -> None:
    running, peak, lock = set(), [0], threading.Lock()
    seen: dict[int, tuple[int, str]] = {}
    both = threading.Barrier(2, timeout=30)

    def collect(p: Policy, envs: Envs, plan: StepPlan, version: int) -> Any:
        with lock:
            running.add(plan.step)
            peak[0] = max(peak[0], len(running))
        seen[plan.step] = (id(p), envs.name)
        if plan.step <= 2:
            both.wait()  # steps 1 and 2 must be in flight together
            time.sleep(0.2 if plan.step == 1 else 0.0)  # step 2 finishes first
        with lock:
            running.discard(plan.step)
        return _batch(), np.random.default_rng(plan.seed)

    worker = _worker(policy, collect, lag=1, steps=4, collectors=2)
    try:
        assert len(worker.collectors) == 2
        order = []
        for step in range(1, 5):
            rollout = worker.take(step, policy.model, timeout_s=60)
            order.append((rollout.plan.step, rollout.version))
            worker.updated(step, policy.model)
        assert order == [(1, 0), (2, 0), (3, 1), (4, 2)]
        assert peak[0] == 2
        # each step ran on one collector with that collector's own policy and envs
        pairs = {(pid, name) for pid, name in seen.values()}
        assert {name for _, name in pairs} == {"trainer", "made0"}
        assert len({pid for pid, _ in pairs}) == 2 and id(policy) not in {p for p, _ in pairs}
    finally:
        worker.close(timeout_s=30)
    assert worker.made[0].closed  # type: ignore[attr-defined]
    assert not worker.collectors[0].envs.closed  # the trainer's envs are the trainer's to close
    with pytest.raises(WorkerError, match="closed"):
        worker.submit(_plan(5), 4, policy.model)


def test_collector_policies_sample_with_the_job_weights(policy: Policy) -> None:
    """Each job loads the weights submitted with it, into the collector's own model copy."""
    import torch

    first = next(iter(policy.model.state_dict()))
    got: dict[int, float] = {}

    def collect(p: Policy, envs: Envs, plan: StepPlan, version: int) -> Any:
        got[plan.step] = float(p.model.state_dict()[first].flatten()[0])
        return _batch(), np.random.default_rng(0)

    worker = _worker(policy, collect, lag=1, steps=3, collectors=2)
    original = policy.model.state_dict()[first].clone()
    try:
        worker.take(1, policy.model, timeout_s=60)
        with torch.no_grad():
            policy.model.state_dict()[first].fill_(7.0)  # "update 1"
        worker.updated(1, policy.model)
        worker.take(2, policy.model, timeout_s=60)
        worker.take(3, policy.model, timeout_s=60)
    finally:
        worker.close(timeout_s=30)
        with torch.no_grad():
            policy.model.state_dict()[first].copy_(original)
    assert got[1] == got[2] == float(original.flatten()[0])
    assert got[3] == 7.0


def test_an_error_in_any_collector_reaches_take(policy: Policy) -> None:
    release = threading.Event()

    def collect(p: Policy, envs: Envs, plan: StepPlan, version: int) -> Any:
        if plan.step == 2:
            raise OSError("search backend unreachable")
        release.wait(30)  # step 1 is still running when step 2 fails
        return _batch(), np.random.default_rng(0)

    worker = _worker(policy, collect, lag=1, steps=3, collectors=2)
    try:
        with pytest.raises(WorkerError, match="failed at step 2: search backend") as info:
            worker.take(1, policy.model, timeout_s=60)
        assert isinstance(info.value.__cause__, OSError)
    finally:
        release.set()
        worker.close(timeout_s=30)
    assert not any(c.thread.is_alive() for c in worker.collectors)  # type: ignore[union-attr]


def test_take_and_close_time_out_instead_of_hanging(policy: Policy) -> None:
    release = threading.Event()

    def collect(p: Policy, envs: Envs, plan: StepPlan, version: int) -> Any:
        release.wait(60)
        return _batch(), np.random.default_rng(0)

    worker = _worker(policy, collect, lag=1, steps=2, collectors=2, poll_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="step 1 took over 0.3 s"):
        worker.take(1, policy.model, timeout_s=0.3)
    t1 = time.monotonic()
    worker.close(timeout_s=0.3)  # both collectors are stuck in a job: it gives up, warns
    t2 = time.monotonic()
    assert t1 - t0 < 10 and t2 - t1 < 10
    assert not worker.made[0].closed  # type: ignore[attr-defined]  # still in use: left open
    release.set()
    for c in worker.collectors:
        c.thread.join(30)  # type: ignore[union-attr]
        assert not c.thread.is_alive()  # type: ignore[union-attr]


def test_bad_collector_counts_and_env_failures_are_refused(policy: Policy) -> None:
    assert resolve_collectors(0) == 1 and resolve_collectors(2) == 3
    assert resolve_collectors(2, 2) == 2
    for lag, count in ((0, 2), (1, 3), (1, -1)):
        with pytest.raises(ValueError, match=f"collectors={count} must be in"):
            resolve_collectors(lag, count)
    with pytest.raises(ValueError, match="lag must be >= 0"):
        resolve_collectors(-1)

    def collect(p: Policy, envs: Any, plan: StepPlan, version: int) -> Any:
        return _batch(), np.random.default_rng(0)

    with pytest.raises(ValueError, match="need make_envs"):
        RolloutWorker(policy, collect, _plan, 1, 2, collectors=2)
    built: list[Envs] = []

    def flaky() -> Envs:
        if built:
            raise OSError("no sandbox left")
        built.append(Envs("made0"))
        return built[0]

    with pytest.raises(OSError, match="no sandbox left"):
        RolloutWorker(policy, collect, _plan, 2, 3, collectors=3, envs=Envs("t"), make_envs=flaky)
    assert built[0].closed  # what was built before the failure is closed again
