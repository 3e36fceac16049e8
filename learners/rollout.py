"""Collect complete groups of trajectories from a vector env with a policy.

For each of B queries, G sub-envs get the same task (``reset(options={"tasks": ...})``), the
policy samples every live sub-env's action in one batched call per turn, and the env steps all
of them at once. Every planner turn becomes a :class:`TurnSample` (prompt ids, response ids,
old log-probs, trajectory, group, turn); every trajectory an
:class:`~agentflow_env.trajectory.EpisodeRecord` built from the env's step outputs (the record
evaluation and the viewer use), with ``group``, ``index`` and ``sampling`` in its metadata. Its
return (:attr:`~agentflow_env.trajectory.EpisodeRecord.total_reward`) is the learner's reward; the
token data stays in the samples, out of the record.

Prompts are tracked as token ids. In raw-prompt mode, when the next observation equals the
previous one + the action text + a suffix (the env's append-only contract), the next prompt is
*the previous prompt ids + the sampled response ids + the suffix's ids*: the policy conditions
on exactly the tokens it produced, and all turns of a trajectory can later be scored in one
sequence (:mod:`learners.packing`). With the policy's chat template, prompts are the env's
``info["messages"]`` rendered by the template; the next prompt is used as the continuation only
when the previous prompt ids + the sampled response ids are a prefix of it (the template's
end-of-turn tokens and the next user message follow). Either way, if the property does not hold
(a template that rewrites earlier turns or trims the action, an action that re-tokenizes
differently, an action cut by the env), the next prompt is the fresh rendering (a new segment:
never packed with the turns before it), the break is counted in ``rollout/prefix_breaks`` and
its reason logged once per kind (:class:`PrefixBreakLog`); nothing is lost but the packing.

A trajectory whose outcome infrastructure lost (``infra_error`` on its record: an engine failed
after its retries, a tool could not run, the judge failed) has no reward. It is marked invalid
(:attr:`RolloutBatch.valid`), and :func:`resample_failed` plays its query again in its place (a
bounded number of times); the records it replaced are kept in :attr:`RolloutBatch.replaced`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agentflow_env.format import finish_action
from agentflow_env.tasks.base import Task
from agentflow_env.trajectory import EpisodeRecord, TrajectoryBuilder, info_at
from learners.groups import AdvantageInputs
from learners.policy import Policy, SamplingSettings

logger = logging.getLogger(__name__)

__all__ = [
    "PrefixBreak",
    "PrefixBreakLog",
    "RolloutBatch",
    "TurnSample",
    "collect",
    "collect_groups",
    "next_chat_context",
    "next_context",
    "observation_key",
    "resample_failed",
]

# Sent to padding sub-envs on their first step so that they finish at once and cost nothing.
_IDLE_ACTION = finish_action("idle")


@dataclass
class TurnSample:
    """One planner turn: what the policy saw and what it sampled."""

    traj: int
    group: int
    turn: int
    """0-based turn index within the trajectory"""
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    """log-probs of ``response_ids`` under the sampling policy (the PPO 'old' log-probs)"""
    finish_reason: str
    action_text: str
    state: str = ""
    """digest of the observation this turn acted on: equal for identical observations (the
    anchor states of step-level credit, :func:`learners.flow_grpo.advantages.gigpo`)"""


@dataclass(frozen=True)
class PrefixBreak:
    """A turn whose prompt does not extend the previous prompt + the sampled response."""

    traj: int
    turn: int
    """0-based turn whose prompt starts a new segment"""
    kind: str
    """why, one of :data:`BREAK_KINDS`' values"""
    detail: str


BREAK_KINDS = {
    "raw": "the observation does not extend the previous one by the action as sampled "
    "(e.g. the env cut a long action)",
    "earlier-turns": "the chat template renders earlier turns differently once a turn is added, "
    "e.g. a generation prompt that history does not keep (the previous prompt is not a prefix "
    "of the next)",
    "action": "the chat template keeps the earlier text but the action's tokens differ from the "
    "sampled ones (the template trims or rewrites the action, its text re-tokenizes "
    "differently, e.g. leading whitespace merging with the newline before it, or the model "
    "stopped on another end token)",
}
"""kind -> the reason logged once per run"""


class PrefixBreakLog:
    """Logs each kind of prefix break once (the trainer holds one per run)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def report(self, breaks: Sequence[PrefixBreak]) -> None:
        for b in breaks:
            if b.kind not in self.seen:
                self.seen.add(b.kind)
                logger.warning(
                    "prompt prefix break (%s): %s; falling back to per-turn samples for such "
                    "turns (counted in rollout/prefix_breaks; logged once per run). First case: "
                    "%s",
                    b.kind,
                    BREAK_KINDS[b.kind],
                    b.detail,
                )


_PROCESS_LOG = PrefixBreakLog()
"""used by :func:`collect` when the caller passes no log of its own"""


@dataclass
class RolloutBatch:
    """Samples and trajectories of one collection (complete groups)."""

    samples: list[TurnSample]
    trajectories: list[EpisodeRecord]
    """one record per trajectory; ``TurnSample.traj`` indexes this list"""
    group_size: int
    seconds: float = 0.0
    generation_seconds: float = 0.0
    replaced: list[EpisodeRecord] = field(default_factory=list)
    """records of trajectories that lost their outcome to infrastructure and were played again"""
    prefix_breaks: list[PrefixBreak] = field(default_factory=list)
    """turns whose prompt could not extend the previous prompt + response (new segments)"""

    @property
    def rewards(self) -> np.ndarray:
        """Each trajectory's return (NaN for one without an outcome)."""
        return np.array([t.total_reward for t in self.trajectories], dtype=np.float64)

    @property
    def valid(self) -> np.ndarray:
        """False for trajectories whose outcome infrastructure lost."""
        return np.array([t.infra_error is None for t in self.trajectories], dtype=bool)

    @property
    def infra_failed(self) -> int:
        """Episodes of this collection that lost their outcome (replaced ones included)."""
        return len(self.replaced) + int((~self.valid).sum())

    @property
    def group_ids(self) -> np.ndarray:
        return np.array([t.metadata["group"] for t in self.trajectories], dtype=np.int64)

    def tool_calls(self) -> Counter[str]:
        """Tool calls over all trajectories, by tool name."""
        return Counter(
            turn.tool_name for t in self.trajectories for turn in t.turns if turn.tool_name
        )

    def advantage_inputs(self) -> AdvantageInputs:
        return AdvantageInputs(
            rewards=self.rewards,
            group_ids=self.group_ids,
            sample_traj=np.array([s.traj for s in self.samples], dtype=np.int64),
            sample_turn=np.array([s.turn for s in self.samples], dtype=np.int64),
            group_size=self.group_size,
            valid=self.valid,
            sample_state=np.array([s.state for s in self.samples], dtype=object),
            sample_reward=np.array([self._turn_reward(s) for s in self.samples], dtype=np.float64),
        )

    def _turn_reward(self, sample: TurnSample) -> float:
        """The env's reward for a sample's turn (NaN when it has none)."""
        turns = self.trajectories[sample.traj].turns
        reward = turns[sample.turn].reward if sample.turn < len(turns) else None
        return math.nan if reward is None else float(reward)

    @property
    def generated_tokens(self) -> int:
        return sum(len(s.response_ids) for s in self.samples)

    def stats(self) -> dict[str, float]:
        """Scalars for logging: success (over trajectories with an outcome), turns, tool calls
        per trajectory, errors."""
        n = max(len(self.trajectories), 1)
        valid = self.rewards[self.valid]
        out = {
            "rollout/success": float(np.mean(valid)) if len(valid) else 0.0,
            "rollout/turns": sum(t.num_turns for t in self.trajectories) / n,
            "rollout/errors": sum(bool(x.error) for t in self.trajectories for x in t.turns) / n,
            "rollout/response_tokens": self.generated_tokens / max(len(self.samples), 1),
            "rollout/truncated": sum(t.truncated for t in self.trajectories) / n,
            "rollout/prefix_breaks": len(self.prefix_breaks) / n,
        }
        for name, count in sorted(self.tool_calls().items()):
            out[f"rollout/tool_calls/{name}"] = count / n
        return out


def observation_key(observation: str) -> str:
    """A short digest of an observation (equal observations, equal keys)."""
    return hashlib.blake2b(observation.encode("utf-8"), digest_size=16).hexdigest()


def next_context(
    policy: Policy,
    context: list[int],
    response_ids: Sequence[int],
    prev_obs: str,
    action_text: str,
    new_obs: str,
) -> tuple[list[int], bool]:
    """Raw-prompt mode: prompt ids for the next turn; the flag says whether they extend
    ``context`` + ``response_ids`` (packable)."""
    expected = prev_obs + action_text
    if new_obs.startswith(expected):
        return context + list(response_ids) + policy.text_ids(new_obs[len(expected) :]), True
    return policy.prompt_ids(new_obs), False


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    return next(
        (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def next_chat_context(
    policy: Policy,
    context: Sequence[int],
    response_ids: Sequence[int],
    prev_messages: Sequence[Mapping[str, str]],
    messages: Sequence[Mapping[str, str]],
) -> tuple[list[int], str | None, str]:
    """Chat-template mode: the next prompt is ``messages`` rendered by the template.

    ``context`` is the rendering of ``prev_messages`` (the previous turn's prompt) and
    ``response_ids`` what was sampled after it. Returns ``(ids, kind, detail)``: ``kind`` is
    None when ``context + response_ids`` is a prefix of ``ids`` (what follows: the template's
    end-of-turn tokens, the result message, the generation prompt), else the
    :data:`BREAK_KINDS` key saying why not: ``"earlier-turns"`` when the template's text for the
    previous messages changed, ``"action"`` when the text was kept but the tokens differ. Token
    ids decide, never strings: a template can keep the text and still change the tokens.
    """
    ids = policy.chat_prompt_ids(messages)
    extended = list(context) + list(response_ids)
    if ids[: len(extended)] == extended:
        return ids, None, ""
    kept = policy.chat_prompt_text(messages).startswith(policy.chat_prompt_text(prev_messages))
    k = _first_difference(ids, extended)
    tok = policy.tokenizer.convert_ids_to_tokens
    detail = (
        f"at token {k} the prompt + response has {tok(extended[k : k + 3])!r} but the "
        f"template gives {tok(ids[k : k + 3])!r}"
    )
    return ids, "action" if kept else "earlier-turns", detail


def _builders(
    tasks: Sequence[Task],
    group_ids: Sequence[int],
    settings: SamplingSettings,
    episode_prefix: str,
    metadata: Mapping[str, Any],
) -> list[TrajectoryBuilder]:
    """One record builder per trajectory, its metadata filled but for the per-turn lists."""
    sampling = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens,
    }
    return [
        TrajectoryBuilder(
            f"{episode_prefix}{i}",
            task,
            **{
                **metadata,
                "index": i,
                "group": int(group_ids[i]),
                "sampling": dict(sampling),
                "response_tokens": [],
                "finish_reasons": [],
            },
        )
        for i, task in enumerate(tasks)
    ]


class _Prompts:
    """Each trajectory's next prompt ids: from its observation (raw) or its chat messages."""

    def __init__(self, policy: Policy, obs: Sequence[str], infos: Mapping[str, Any], n: int):
        self.policy = policy
        self.prev_obs = list(obs[:n])
        self.breaks: list[PrefixBreak] = []
        self.messages: list[list[Mapping[str, str]]] = []
        if policy.chat_template:
            self.messages = [_messages(info_at(infos, i)) for i in range(n)]
            self.ids = [policy.chat_prompt_ids(m) for m in self.messages]
        else:
            self.ids = [policy.prompt_ids(o) for o in obs[:n]]

    def advance(
        self, i: int, turn: int, prompt: list[int], out: Any, obs: str, info: Mapping[str, Any]
    ) -> None:
        """Trajectory ``i``'s prompt for its 0-based ``turn``, after sampling ``out``."""
        if self.policy.chat_template:
            messages = _messages(info)
            ids, kind, detail = next_chat_context(
                self.policy, self.ids[i], out.token_ids, self.messages[i], messages
            )
            self.messages[i] = messages
        else:
            ids, packable = next_context(
                self.policy, prompt, out.token_ids, self.prev_obs[i], out.text, obs
            )
            kind, detail = None, ""
            if not packable:
                expected = self.prev_obs[i] + out.text
                kind = "raw"
                detail = f"first difference at character {_first_difference(obs, expected)}"
            self.prev_obs[i] = obs
        if kind is not None:
            self.breaks.append(PrefixBreak(i, turn, kind, f"trajectory {i}, turn {turn}: {detail}"))
        self.ids[i] = ids


def _messages(info: Mapping[str, Any]) -> list[Mapping[str, str]]:
    messages = info.get("messages")
    if not messages:
        raise ValueError(
            "the policy uses its chat template but the env gives no info['messages']: use an "
            "AgentFlow env (it adds the episode's chat messages to every info) or "
            "model.chat_template=false"
        )
    return list(messages)


def collect(
    envs: Any,
    policy: Policy,
    tasks: Sequence[Task],
    group_ids: Sequence[int],
    settings: SamplingSettings,
    rng: np.random.Generator,
    *,
    group_size: int = 1,
    max_prompt_tokens: int = 1 << 30,
    episode_prefix: str = "traj",
    metadata: Mapping[str, Any] | None = None,
    prefix_log: PrefixBreakLog | None = None,
) -> RolloutBatch:
    """Run ``tasks[i]`` in sub-env ``i`` to the end; unused sub-envs idle (finish at once).

    Trajectory ``i`` is recorded as episode ``f"{episode_prefix}{i}"`` whose metadata holds
    ``metadata`` (e.g. the trainer's ``step`` and ``rank``), ``index`` (``i``), ``group``,
    ``sampling`` (temperature, top_p, max_new_tokens) and, per turn, ``response_tokens`` and
    ``finish_reasons`` of the sampled action. Prefix breaks are reported to ``prefix_log``
    (default: one log per process), each kind once.
    """
    n_env, n = envs.num_envs, len(tasks)
    if n == 0 or n > n_env:
        raise ValueError(f"got {n} tasks for a vector env of {n_env} sub-envs")
    if len(group_ids) != n:
        raise ValueError("one group id per task")
    t0 = time.perf_counter()
    padded = list(tasks) + [tasks[0]] * (n_env - n)
    obs, infos = envs.reset(seed=int(rng.integers(2**31)), options={"tasks": padded})
    prompts_of = _Prompts(policy, obs, infos, n)
    builders = _builders(tasks, group_ids, settings, episode_prefix, metadata or {})
    samples: list[TurnSample] = []
    done = [False] * n
    gen_s, turn = 0.0, 0
    while not all(done):
        live = [i for i in range(n) if not done[i]]
        states = {i: observation_key(obs[i]) for i in live}  # what these turns act on
        prompts = [prompts_of.ids[i][-max_prompt_tokens:] for i in live]
        step_settings = SamplingSettings(
            settings.temperature,
            settings.top_p,
            settings.max_new_tokens,
            seed=int(rng.integers(2**31)),
        )
        g0 = time.perf_counter()
        outs = policy.generate(prompts, step_settings)
        gen_s += time.perf_counter() - g0
        actions = [_IDLE_ACTION if turn == 0 else ""] * n_env
        for i, out in zip(live, outs, strict=False):
            actions[i] = out.text
        obs, rewards, terms, truncs, infos = envs.step(actions)
        for i, prompt, out in zip(live, prompts, outs, strict=False):
            samples.append(
                TurnSample(
                    traj=i,
                    group=int(group_ids[i]),
                    turn=turn,
                    prompt_ids=prompt,
                    response_ids=list(out.token_ids),
                    logprobs=list(out.logprobs),
                    finish_reason=out.finish_reason,
                    action_text=out.text,
                    state=states[i],
                )
            )
            record = builders[i].record
            record.metadata["response_tokens"].append(len(out.token_ids))
            record.metadata["finish_reasons"].append(out.finish_reason)
            info = info_at(infos, i)
            builders[i].add(out.text, float(rewards[i]), bool(terms[i]), bool(truncs[i]), info)
            if terms[i] or truncs[i]:
                done[i] = True
            else:
                prompts_of.advance(i, turn + 1, prompt, out, obs[i], info)
        turn += 1
    (prefix_log or _PROCESS_LOG).report(prompts_of.breaks)
    return RolloutBatch(
        samples,
        [b.record for b in builders],
        group_size,
        seconds=time.perf_counter() - t0,
        generation_seconds=gen_s,
        prefix_breaks=prompts_of.breaks,
    )


def collect_groups(
    envs: Any,
    policy: Policy,
    queries: Sequence[Task],
    group_size: int,
    settings: SamplingSettings,
    rng: np.random.Generator,
    *,
    max_prompt_tokens: int = 1 << 30,
    query_ids: Sequence[int] | None = None,
    episode_prefix: str = "traj",
    metadata: Mapping[str, Any] | None = None,
    prefix_log: PrefixBreakLog | None = None,
) -> RolloutBatch:
    """G trajectories for each of the B queries (needs a vector env of exactly B * G sub-envs).

    Every trajectory ends (terminated or truncated at the env's turn limit), so every group
    is complete by construction; the advantage code still checks it. Query ``q``'s group id is
    ``query_ids[q]`` (default ``q``; the trainer passes each query's position in the step's
    batch over all ranks, so a group id names one group of the step). ``episode_prefix`` and
    ``metadata`` and ``prefix_log`` go to :func:`collect`.
    """
    if len(queries) * group_size != envs.num_envs:
        raise ValueError(
            f"{len(queries)} queries x group {group_size} != {envs.num_envs} sub-envs; "
            "build the vector env with num_envs = queries_per_step * group_size"
        )
    ids = list(range(len(queries))) if query_ids is None else [int(q) for q in query_ids]
    if len(ids) != len(queries) or len(set(ids)) != len(ids):
        raise ValueError(f"query_ids must be {len(queries)} distinct ids, got {query_ids}")
    tasks = [q for q in queries for _ in range(group_size)]
    groups = [g for g in ids for _ in range(group_size)]
    return collect(
        envs,
        policy,
        tasks,
        groups,
        settings,
        rng,
        group_size=group_size,
        max_prompt_tokens=max_prompt_tokens,
        episode_prefix=episode_prefix,
        metadata=metadata,
        prefix_log=prefix_log,
    )


def resample_failed(
    envs: Any,
    policy: Policy,
    batch: RolloutBatch,
    tasks: Mapping[int, Task],
    settings: SamplingSettings,
    rng: np.random.Generator,
    *,
    tries: int,
    max_prompt_tokens: int = 1 << 30,
    episode_prefix: str = "traj",
    metadata: Mapping[str, Any] | None = None,
    prefix_log: PrefixBreakLog | None = None,
) -> RolloutBatch:
    """Play the queries of trajectories without an outcome again, in their place, up to
    ``tries`` rounds; returns ``batch`` updated (the replaced records in ``batch.replaced``).

    ``tasks`` maps a group id to its query. Nothing is drawn from ``rng`` when every
    trajectory has its outcome, so a run without failures is unchanged by this step.
    """
    for attempt in range(1, tries + 1):
        failed = [j for j, t in enumerate(batch.trajectories) if t.infra_error is not None]
        if not failed:
            break
        groups = [int(batch.trajectories[j].metadata["group"]) for j in failed]
        again = collect(
            envs,
            policy,
            [tasks[g] for g in groups],
            groups,
            settings,
            rng,
            group_size=batch.group_size,
            max_prompt_tokens=max_prompt_tokens,
            episode_prefix=f"{episode_prefix}{attempt}-",
            metadata={**(metadata or {}), "attempt": attempt},
            prefix_log=prefix_log,
        )
        keep = [s for s in batch.samples if s.traj not in set(failed)]
        for i, j in enumerate(failed):
            record = again.trajectories[i]
            record.metadata["index"] = batch.trajectories[j].metadata["index"]
            batch.replaced.append(batch.trajectories[j])
            batch.trajectories[j] = record
            keep.extend(TurnSample(**{**vars(s), "traj": j}) for s in again.samples if s.traj == i)
        batch.samples = keep
        batch.prefix_breaks.extend(replace(b, traj=failed[b.traj]) for b in again.prefix_breaks)
        batch.seconds += again.seconds
        batch.generation_seconds += again.generation_seconds
    return batch
