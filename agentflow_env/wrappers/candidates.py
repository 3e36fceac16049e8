"""Candidate actions: turn the text action space into ``Discrete(K)``.

A *proposer* offers K planner actions (text) for the current observation; the policy picks one by
index and :class:`CandidateActionWrapper` passes that text to the environment. Any RL algorithm
with discrete actions (stable-baselines3's PPO, DQN, A2C, ...) can then act in AgentFlow; add
:class:`~agentflow_env.wrappers.features.TextFeatureWrapper` to get ``Box`` observations.

Proposers are plain callables ``(observation, k, rng) -> list[str]``. A proposer may also have a
``reset(task, rng)`` method; the wrapper calls it at every ``reset`` with the new task and its
generator (planner-based proposers need the task). Ready-made ones:

- :class:`ExtractiveProposer`: text-only moves — search the question, search a name found in the
  last result, or finish with a name from the last result. No knowledge of the task's answer, so
  which candidate to pick really matters.
- :class:`PlannerProposer`: mixes scripted planners (``reset(task)``, ``act(observation)``);
  :func:`oracle_mix_proposer` mixes the oracle planner with random-tool actions.
- :class:`EngineProposer`: K sampled completions of any :class:`~agentflow_env.llm.base.Engine`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentflow_env.format import finish_action, read_action, split_observation, tool_action
from agentflow_env.spaces import sanitize_text, text_space
from agentflow_env.wrappers._text import extract_names, normalize

logger = logging.getLogger(__name__)

__all__ = [
    "CandidateActionWrapper",
    "EngineProposer",
    "ExtractiveProposer",
    "PlannerProposer",
    "Proposer",
    "ProposerError",
    "oracle_mix_proposer",
    "search_action",
]


class ProposerError(ValueError):
    """A proposer returned something other than a non-empty list of strings."""


@runtime_checkable
class Proposer(Protocol):
    """``(observation, k, rng) -> list[str]``: up to ``k`` candidate planner actions.

    Use only ``rng`` for randomness, so that a seeded ``reset`` makes episodes reproducible.
    Returning fewer than ``k`` is allowed (the wrapper repeats candidates to fill the slots);
    returning none is an error. Optional hook: ``reset(task, rng)``, called by the wrapper at
    every ``reset`` (after the env's) with the new task and the proposer's generator.
    """

    def __call__(self, observation: str, k: int, rng: np.random.Generator) -> list[str]: ...


def search_action(tool_name: str, query: str) -> str:
    """A planner step that calls ``tool_name`` with ``query`` (line breaks in ``query`` become
    spaces: a search query is one line)."""
    query = " ".join(query.splitlines())
    return tool_action(
        tool_name,
        query,
        sub_goal=f"find information about {query}",
        justification=f"look up {query}",
    )


# gymnasium types Wrapper.__init__'s env with the *wrapper's* spaces, so Any keeps mypy honest here.
class CandidateActionWrapper(gym.Wrapper[Any, Any, Any, Any]):
    """Choose among K proposed planner actions: ``Discrete(K)`` actions for any RL library.

    ## Description
    At every ``reset`` and non-final ``step`` the proposer offers ``k`` planner actions for the
    current observation. ``step(i)`` sends candidate ``i`` (text) to the wrapped text env.

    ## Action Space
    ``Discrete(k)``: the index of the chosen candidate. Numpy integers and 0-d arrays are
    accepted; anything else (or an index out of range) raises ``gymnasium.error.InvalidAction``.

    ## Observation Space
    ``Dict({"text": Text, "candidates": Tuple(Text x k)})``: the env's observation and the
    candidates the policy chooses among. On the final step of an episode the candidates are
    empty strings (nothing is left to choose, and a proposer may be expensive).

    ## Info
    The env's info plus ``candidates`` (list of k strings, as in the observation); after a step
    also ``chosen`` (the index) and ``action_text`` (the text sent to the env).

    ## Arguments
    ``env``: a text env (e.g. ``gym.make("AgentFlow-Search-v0")``); ``proposer``: see
    :class:`Proposer`; ``k``: number of candidates (>= 2); ``max_candidate_chars``: longer
    candidates are cut (default: the env's action limit, at most 4,000).

    ## Randomness
    Proposers draw from the wrapper's own ``numpy`` Generator, re-seeded by ``reset(seed=...)``
    (independently of the env's task sampling). Without a seed it is derived from the env's
    ``np_random``, so an unseeded run is random and a seeded run is reproducible.
    """

    def __init__(
        self,
        env: gym.Env[str, str],
        proposer: Proposer | Callable[..., list[str]],
        k: int,
        *,
        max_candidate_chars: int | None = None,
    ) -> None:
        super().__init__(env)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"k must be an integer >= 2, got {k!r}")
        if not callable(proposer):
            raise TypeError(
                "proposer must be callable (observation, k, rng) -> list[str], "
                f"got {type(proposer).__name__}"
            )
        if not isinstance(env.observation_space, spaces.Text):
            raise TypeError(
                "CandidateActionWrapper wraps a text env (Text observation space), "
                f"got {env.observation_space}"
            )
        self.proposer = proposer
        self.k = int(k)
        flow = getattr(env.unwrapped, "flow", None)  # AgentFlowEnv's limit on recorded action text
        default_chars = getattr(flow, "max_action_chars", 4_000)
        self.max_candidate_chars = int(max_candidate_chars or min(default_chars, 4_000))
        self.action_space = spaces.Discrete(self.k)
        candidate_space = text_space(self.max_candidate_chars)
        self.observation_space = spaces.Dict(
            {"text": env.observation_space, "candidates": spaces.Tuple([candidate_space] * self.k)}
        )
        self.candidates: list[str] = [""] * self.k
        """the current candidates (what ``step(i)`` would send)"""
        self._rng: np.random.Generator | None = None

    # ----------------------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        text, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            # A separate stream from the env's task sampling, fixed by the same seed.
            self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA7D]))
        elif self._rng is None:
            self._rng = np.random.default_rng(int(self.env.np_random.integers(2**63 - 1)))
        reset_hook = getattr(self.proposer, "reset", None)
        if callable(reset_hook):
            reset_hook(getattr(self.env.unwrapped, "task", None), self._rng)
        self.candidates = self._propose(text)
        return self._observation(text), {**info, "candidates": list(self.candidates)}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        index = self._index(action)
        chosen = self.candidates[index]
        text, reward, terminated, truncated, info = self.env.step(chosen)
        self.candidates = [""] * self.k if (terminated or truncated) else self._propose(text)
        info = {**info, "candidates": list(self.candidates), "chosen": index, "action_text": chosen}
        return self._observation(text), float(reward), terminated, truncated, info

    # ----------------------------------------------------------------------------- helpers
    def _observation(self, text: str) -> dict[str, Any]:
        return {"text": text, "candidates": tuple(self.candidates)}

    def _index(self, action: Any) -> int:
        value = np.asarray(action)
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
            raise gym.error.InvalidAction(
                f"action must be one integer in [0, {self.k}), got {action!r}"
            )
        index = int(value.reshape(()))
        if not 0 <= index < self.k:
            raise gym.error.InvalidAction(
                f"action {index} out of range: choose a candidate in [0, {self.k})"
            )
        return index

    def _propose(self, observation: str) -> list[str]:
        assert self._rng is not None, "reset() seeds the proposer's generator"
        proposed = self.proposer(observation, self.k, self._rng)
        if isinstance(proposed, str) or not isinstance(proposed, Sequence):
            raise ProposerError(
                f"the proposer must return a list of strings, got {type(proposed).__name__}"
            )
        bad = [type(c).__name__ for c in proposed if not isinstance(c, str)]
        if bad:
            raise ProposerError(f"the proposer returned non-string candidates: {bad[:3]}")
        if not proposed:
            raise ProposerError(
                "the proposer returned no candidates; it must offer at least one action"
            )
        if len(proposed) > self.k:
            logger.debug(
                "proposer offered %d candidates for %d slots; keeping the first",
                len(proposed),
                self.k,
            )
        # Fewer than k: repeat in order, so every slot is a real action and the space stays fixed.
        filled = [proposed[i % len(proposed)] for i in range(self.k)]
        return [sanitize_text(c, self.max_candidate_chars) for c in filled]


class ExtractiveProposer:
    """Candidates read off the observation: no knowledge of the task or its answer.

    The pool for one step is: search the question (until it was searched), search each name
    (not number) from the last result (not already searched), and finish with each name from the
    last result
    (or from the question when nothing was found yet). ``k`` candidates are drawn from the pool
    kind by kind (round-robin over the three kinds) and then shuffled. Within a kind, names are
    drawn without replacement with weight ``decay ** i`` for the i-th name in order of appearance,
    so names from the best-matching passage are offered more often. The right move is usually on
    offer, in a random slot, next to plausible wrong ones.

    Args:
        tool_name: the search tool to call (default ``Search_Tool``; when the observation lists
            tools and this one is missing, the first listed tool is used).
        max_names: at most this many names are taken from the last result.
        decay: in (0, 1]; 1 draws names uniformly.
    """

    def __init__(
        self, tool_name: str = "Search_Tool", max_names: int = 8, decay: float = 0.7
    ) -> None:
        if max_names < 1:
            raise ValueError(f"max_names must be >= 1, got {max_names}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.tool_name = tool_name
        self.max_names = max_names
        self.decay = decay

    def __call__(self, observation: str, k: int, rng: np.random.Generator) -> list[str]:
        view = split_observation(observation)
        tool = self.tool_name
        if view.tool_names and tool not in view.tool_names:
            tool = view.tool_names[0]
        searched = {normalize(read_action(s.action).command or "") for s in view.steps}
        names = extract_names(view.last_result, limit=self.max_names)
        kinds: list[list[str]] = []
        if view.question and normalize(view.question) not in searched:
            kinds.append(_writable(search_action, [(tool, view.question)]))
        # Numbers are answers, not search terms: a year matches too many passages to be useful.
        kinds.append(
            _writable(
                search_action,
                [(tool, n) for n in names if normalize(n) not in searched and not n.isdigit()],
            )
        )
        answers = names or extract_names(view.question, limit=self.max_names)
        kinds.append(
            _writable(finish_action, [(n,) for n in answers])
            or _writable(finish_action, [(view.question or "unknown",)])
            or [finish_action("unknown")]
        )
        return _round_robin(kinds, k, rng, self.decay)


class PlannerProposer:
    """Mix scripted planners: each slot asks a planner drawn with ``weights``.

    Planners follow the scripted-planner protocol: ``reset(task)`` then ``act(observation) ->
    str`` (see :mod:`agentflow_env.planners`). Duplicate texts are dropped and the draw is
    retried (up to ``4 * k`` draws), so a deterministic planner (e.g. the oracle) appears at most
    once; when fewer than ``k`` distinct actions come out, the wrapper repeats them. Planners
    must read the step from the observation (as the scripted planners do), since ``act`` is
    called several times per step.

    A planner with a ``reseed(int)`` (or ``seed(int)``) method is re-seeded from the wrapper's
    generator before its ``reset`` and before each ``act``, which keeps seeded episodes
    reproducible.
    """

    def __init__(self, planners: Sequence[Any], weights: Sequence[float] | None = None) -> None:
        if not planners:
            raise ValueError("PlannerProposer needs at least one planner")
        for p in planners:
            if not callable(getattr(p, "act", None)):
                raise TypeError(f"{type(p).__name__} has no act(observation) method")
        w = np.ones(len(planners)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(planners),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"weights must be {len(planners)} non-negative numbers with a positive sum"
            )
        self.planners = list(planners)
        self.probs = w / w.sum()

    def reset(self, task: Any, rng: np.random.Generator) -> None:
        for planner in self.planners:
            _reseed(planner, rng)
            planner.reset(task)

    def __call__(self, observation: str, k: int, rng: np.random.Generator) -> list[str]:
        out: list[str] = []
        for _ in range(4 * k):
            planner = self.planners[int(rng.choice(len(self.planners), p=self.probs))]
            _reseed(planner, rng)
            text = planner.act(observation)
            if text not in out:
                out.append(text)
            if len(out) == k:
                break
        order = rng.permutation(len(out))
        return [out[i] for i in order]


def _reseed(planner: Any, rng: np.random.Generator) -> None:
    for name in ("reseed", "seed"):
        method = getattr(planner, name, None)
        if callable(method):
            method(int(rng.integers(2**31 - 1)))
            return


def oracle_mix_proposer(
    tool_names: Sequence[str] = ("Search_Tool",),
    oracle_weight: float = 1.0,
    random_weight: float = 3.0,
) -> PlannerProposer:
    """The oracle planner (follows ``Task.metadata``'s solution) mixed with random-tool actions.

    A setting for checking that a learner finds the one right candidate among distractors: the
    oracle's action is usually on offer, in a random slot; the other slots call a random tool
    with the question or guess a name from the last result.
    """
    from agentflow_env.planners import OraclePlanner, RandomToolPlanner

    return PlannerProposer(
        [OraclePlanner(verbose=False), RandomToolPlanner(tool_names, verbose=False)],
        weights=[oracle_weight, random_weight],
    )


class EngineProposer:
    """K sampled completions of an engine for the observation (e.g. an LLM planner).

    Sends ``k`` single-sample chat requests (each with its own seed from the wrapper's generator,
    so engines that honour ``seed`` are reproducible). Failed samples (``result.error``) are
    dropped; if all fail, :class:`ProposerError` says why.
    """

    def __init__(
        self,
        engine: Any,
        *,
        temperature: float = 1.0,
        max_tokens: int = 256,
        system: str | None = None,
    ) -> None:
        if not callable(getattr(engine, "generate", None)):
            raise TypeError(
                f"engine must have a generate(requests) method, got {type(engine).__name__}"
            )
        self.engine = engine
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system

    def __call__(self, observation: str, k: int, rng: np.random.Generator) -> list[str]:
        from agentflow_env.llm.base import GenerationRequest

        requests = [
            GenerationRequest.chat(
                observation,
                system=self.system,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                seed=int(rng.integers(2**31 - 1)),
            )
            for _ in range(k)
        ]
        results = self.engine.generate(requests)
        texts = [r.text for r in results if not r.error]
        if not texts:
            errors = {r.error for r in results} or {"no results"}
            raise ProposerError(f"the engine produced no candidates: {sorted(errors)[:3]}")
        return texts


def _writable(writer: Callable[..., str], calls: Sequence[tuple[str, ...]]) -> list[str]:
    """``writer(*args)`` for each call whose text the action format can hold (names and
    questions are data: a code fence or an answer tag in one skips that candidate)."""
    out = []
    for args in calls:
        try:
            out.append(writer(*args))
        except ValueError:
            continue
    return out


def _round_robin(
    kinds: list[list[str]], k: int, rng: np.random.Generator, decay: float = 1.0
) -> list[str]:
    """Up to ``k`` distinct items, taking from each kind in turn, shuffled at the end.

    Each kind is put in a random order drawn without replacement with weights ``decay ** i``.
    """
    queues = []
    for kind in kinds:
        if kind:
            weights = decay ** np.arange(len(kind), dtype=float)
            order = rng.choice(len(kind), size=len(kind), replace=False, p=weights / weights.sum())
            queues.append([kind[i] for i in order])
    out: list[str] = []
    while queues and len(out) < k:
        for queue in list(queues):
            if len(out) == k:
                break
            item = queue.pop(0)
            if item not in out:
                out.append(item)
            if not queue:
                queues.remove(queue)
    return [out[i] for i in rng.permutation(len(out))]
