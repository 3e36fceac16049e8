"""Planners as batched policies: one call per vector-env step for all live episodes.

Evaluation (and any rollout loop over :class:`~agentflow_env.vector.AgentFlowVectorEnv`) drives
the planner through one interface, :class:`BatchPlanner`:

- :class:`ScriptedBatchPlanner` runs one scripted planner
  (:mod:`agentflow_env.planners.scripted`) per episode, seeded by the episode index, so results
  do not depend on how episodes are batched;
- :class:`EngineBatchPlanner` sends every live episode to an engine in **one** ``generate``
  call per step (its chat messages, ``info["messages"]``, or its text observation as a raw
  prompt), with per-request seeds derived from (seed, episode, turn).

With ``constrained=True`` the engine planner's output is held to the action grammar
(:func:`~agentflow_env.format.action.action_grammar`: the fields in order, ``Tool Name`` one of the
episode's tools, read from its observation): every action it writes parses.

Planner failures never stop a run. A scripted planner that raises is the policy failing: its
action becomes empty (the env records a parse error and consumes the turn) and the failure is
counted in :attr:`BatchPlanner.errors` per episode index. An engine that fails after its retries is
infrastructure: the episode is listed in :attr:`BatchPlanner.failed` with its
:class:`~agentflow_env.infra.InfraError` and the caller ends it unscored (its action is empty).
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from agentflow_env.format import PLANNER_STOP, split_observation
from agentflow_env.format.action import action_grammar
from agentflow_env.infra import InfraError, engine_error
from agentflow_env.llm.base import (
    ChatMessage,
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from agentflow_env.llm.constraints import Constraint
from agentflow_env.tasks.base import Task

__all__ = [
    "BatchPlanner",
    "CountingEngine",
    "EngineBatchPlanner",
    "PlannerSpecError",
    "ScriptedBatchPlanner",
    "make_batch_planner",
]

logger = logging.getLogger(__name__)

SCRIPTED_PREFIX = "scripted:"


class PlannerSpecError(ValueError):
    """A planner spec that names no known scripted planner or engine."""


class BatchPlanner(Protocol):
    """What an evaluation loop needs from a planner."""

    errors: Counter[int]
    """planner failures per episode index"""
    failed: dict[int, InfraError]
    """episodes (by index) whose planner call failed for infrastructure reasons in the latest
    :meth:`act`: they have no outcome"""

    @property
    def tokens(self) -> tuple[int | None, int | None]:
        """(prompt, completion) tokens so far; None when never reported."""

    def start(self, slot: int, task: Task, episode: int) -> None:
        """Sub-env ``slot`` begins episode number ``episode`` on ``task``."""

    def act(
        self,
        slots: Sequence[int],
        observations: Sequence[str],
        episodes: Sequence[int],
        turns: Sequence[int],
        messages: Sequence[Sequence[Mapping[str, str]]] | None = None,
    ) -> list[str]:
        """One action per live sub-env (``turns`` are 1-based; ``messages``: each episode's
        ``info["messages"]``, needed by planners that read chat)."""

    def close(self) -> None:
        """Release what the planner owns."""


class CountingEngine:
    """Wraps an engine and adds up the token counts its results report (None: never reported)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = self.engine.generate(requests)
        for r in results:
            if r.prompt_tokens is not None:
                self.prompt_tokens = (self.prompt_tokens or 0) + r.prompt_tokens
            if r.completion_tokens is not None:
                self.completion_tokens = (self.completion_tokens or 0) + r.completion_tokens
        return results

    @property
    def tokens(self) -> tuple[int | None, int | None]:
        return self.prompt_tokens, self.completion_tokens

    @property
    def supports_constraints(self) -> bool:
        """The wrapped engine's (modules constrain their replies only where it enforces them)."""
        return bool(getattr(self.engine, "supports_constraints", False))

    def close(self) -> None:
        self.engine.close()


class ScriptedBatchPlanner:
    """A fresh scripted planner per episode; ``seed + episode`` for planners taking a seed."""

    def __init__(self, name: str, seed: int = 0) -> None:
        from agentflow_env.planners.scripted import SCRIPTED_PLANNERS

        if name not in SCRIPTED_PLANNERS:
            raise PlannerSpecError(
                f"unknown scripted planner {name!r}; valid names: "
                f"{', '.join(sorted(SCRIPTED_PLANNERS))}"
            )
        self.name, self.seed = name, seed
        self._params = set(inspect.signature(SCRIPTED_PLANNERS[name]).parameters)
        self._kwargs: dict[str, Any] = {}
        self._active: dict[int, Any] = {}
        self.errors: Counter[int] = Counter()
        self.failed: dict[int, InfraError] = {}

    @property
    def tokens(self) -> tuple[int | None, int | None]:
        return (None, None)

    def bind_tools(self, tool_names: Sequence[str]) -> None:
        """Tell planners that take tool names which tools the env has."""
        searches = [t for t in tool_names if t.endswith("Search_Tool")]
        if "tool_names" in self._params and tool_names:
            self._kwargs["tool_names"] = list(tool_names)
        if "tool_name" in self._params and searches:
            self._kwargs["tool_name"] = searches[0]

    def start(self, slot: int, task: Task, episode: int) -> None:
        from agentflow_env.planners.scripted import get_scripted_planner

        seed = {"seed": self.seed + episode} if "seed" in self._params else {}
        planner = get_scripted_planner(self.name, **self._kwargs, **seed)
        planner.reset(task)
        self._active[slot] = planner

    def act(
        self,
        slots: Sequence[int],
        observations: Sequence[str],
        episodes: Sequence[int],
        turns: Sequence[int],
        messages: Sequence[Sequence[Mapping[str, str]]] | None = None,
    ) -> list[str]:
        actions = []
        for slot, obs, episode in zip(slots, observations, episodes, strict=True):
            try:
                actions.append(str(self._active[slot].act(obs)))
            except Exception as exc:  # counted and logged; the env records the empty action
                logger.warning(
                    "scripted planner %s failed: %s: %s", self.name, type(exc).__name__, exc
                )
                self.errors[episode] += 1
                actions.append("")
        return actions

    def close(self) -> None:
        self._active.clear()


class EngineBatchPlanner:
    """An engine as the planner: one ``generate`` call per step for every live sub-env.

    Args:
        engine: the engine (closed by :meth:`close` only when ``owns_engine``).
        temperature, max_tokens, seed: sampling settings; request seeds are
            ``seed * 1_000_003 + episode * 1_009 + turn``.
        input_mode: ``"chat"`` sends the episode's chat messages (``info["messages"]``: system,
            query, then per step the action and its result), which the engine renders with the
            model's chat template, the assistant turn opened; ``"prompt"`` sends the text
            observation as a raw completion prompt (for models trained on raw observations).
        stop: stop strings (default :data:`~agentflow_env.format.PLANNER_STOP`).
        constrained: hold every action to the action grammar, with the tool names the episode's
            observation lists (or, if it lists none, those given to :meth:`bind_tools`); the
            engine enforces it or raises (:mod:`agentflow_env.llm.constraints`).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        seed: int = 0,
        input_mode: Literal["chat", "prompt"] = "chat",
        stop: Sequence[str] = PLANNER_STOP,
        owns_engine: bool = False,
        constrained: bool = False,
    ) -> None:
        if input_mode not in ("chat", "prompt"):
            raise ValueError(f"input_mode must be 'chat' or 'prompt', got {input_mode!r}")
        self.engine = CountingEngine(engine)
        self.sampling = SamplingParams(
            temperature=temperature, max_tokens=max_tokens, stop=tuple(stop)
        )
        self.seed, self.input_mode, self.owns_engine = seed, input_mode, owns_engine
        self.constrained = constrained
        self.tool_names: tuple[str, ...] = ()
        self._grammars: dict[tuple[str, ...], Constraint] = {}
        self.errors: Counter[int] = Counter()
        self.failed: dict[int, InfraError] = {}

    def bind_tools(self, tool_names: Sequence[str]) -> None:
        """The env's tools: the constrained planner's fallback when an observation lists none."""
        self.tool_names = tuple(tool_names)

    def constraint(self, observation: str) -> Constraint:
        """The action grammar for the episode ``observation`` belongs to (cached per tool list).

        Raises:
            ValueError: neither the observation nor :meth:`bind_tools` names any tool.
        """
        tools = tuple(split_observation(observation).tool_names) or self.tool_names
        if not tools:
            raise ValueError(
                "a constrained planner needs the episode's tool names: the observation lists "
                "none and bind_tools() was not called"
            )
        if tools not in self._grammars:
            grammar = action_grammar(tools, max_tokens=self.sampling.max_tokens)
            self._grammars[tools] = Constraint.lark(grammar)
        return self._grammars[tools]

    @property
    def tokens(self) -> tuple[int | None, int | None]:
        return self.engine.tokens

    def start(self, slot: int, task: Task, episode: int) -> None:
        """Nothing to do: the observation is the planner's whole prompt."""

    def _request(
        self,
        observation: str,
        messages: Sequence[Mapping[str, str]] | None,
        episode: int,
        turn: int,
    ) -> GenerationRequest:
        sampling = self.sampling.model_copy(
            update={"seed": self.seed * 1_000_003 + episode * 1_009 + turn}
        )
        if self.input_mode == "prompt":
            return GenerationRequest(prompt=observation, sampling=sampling)
        chat = tuple(ChatMessage(role=m["role"], content=m["content"]) for m in messages or ())
        return GenerationRequest(messages=chat, sampling=sampling)  # type: ignore[arg-type]

    def act(
        self,
        slots: Sequence[int],
        observations: Sequence[str],
        episodes: Sequence[int],
        turns: Sequence[int],
        messages: Sequence[Sequence[Mapping[str, str]]] | None = None,
    ) -> list[str]:
        if self.input_mode == "chat" and (
            messages is None or len(messages) != len(observations) or not all(messages)
        ):
            raise ValueError(
                "input_mode='chat' needs each episode's chat messages: pass act(..., "
                "messages=[info['messages'] per live sub-env]) (the AgentFlow envs put them in "
                "every info), or use input_mode='prompt'"
            )
        chats = messages if messages is not None else [None] * len(observations)
        requests = [
            self._request(o, m, e, t)
            for o, m, e, t in zip(observations, chats, episodes, turns, strict=True)
        ]
        self.failed = {}
        if self.constrained:
            requests = [
                r.model_copy(update={"constraint": self.constraint(o)})
                for r, o in zip(requests, observations, strict=True)
            ]
        try:
            results = self.engine.generate(requests)
        except Exception as exc:  # every episode of the batch has lost its outcome, visibly
            logger.warning("planner engine raised %s: %s", type(exc).__name__, exc)
            message = f"the engine raised {type(exc).__name__}: {exc}"
            return self._all_failed(episodes, engine_error("planner", message, "engine"))
        if len(results) != len(requests):
            message = f"the engine returned {len(results)} results for {len(requests)} requests"
            logger.warning("planner %s", message)
            return self._all_failed(
                episodes, engine_error("planner", message, "engine_bad_response")
            )
        for result, episode in zip(results, episodes, strict=True):
            if result.error:
                logger.warning("planner engine failed on episode %d: %s", episode, result.error)
                self.errors[episode] += 1
                self.failed[episode] = engine_error("planner", result.error, result.error_kind)
        return ["" if r.error else r.text for r in results]

    def _all_failed(self, episodes: Sequence[int], infra: InfraError) -> list[str]:
        self.errors.update(episodes)
        self.failed = dict.fromkeys(episodes, infra)
        return [""] * len(episodes)

    def close(self) -> None:
        if self.owns_engine:
            self.engine.close()


def make_batch_planner(
    spec: str | Engine,
    *,
    seed: int = 0,
    temperature: float = 0.0,
    max_tokens: int = 1024,
    input_mode: Literal["chat", "prompt"] = "chat",
    engine_kwargs: dict[str, Any] | None = None,
    constrained: bool = False,
) -> BatchPlanner:
    """``scripted:NAME``, an engine spec (``openai:MODEL@URL``, ``hf:PATH``, ``vllm:NAME``,
    ``python:module:function``) or an engine object. ``engine_kwargs`` go to the constructor of
    an engine built from a spec; ``constrained``: see :class:`EngineBatchPlanner` (engine
    planners only).

    Raises:
        PlannerSpecError: an unknown scripted planner, an engine spec that cannot be built, or
            ``constrained`` with a scripted planner.
    """
    if isinstance(spec, str) and spec.startswith(SCRIPTED_PREFIX):
        if constrained:
            raise PlannerSpecError(
                f"{spec!r}: constrained planning holds an engine's output to the action "
                "grammar; scripted planners write their actions themselves (use an engine spec)"
            )
        return ScriptedBatchPlanner(spec[len(SCRIPTED_PREFIX) :], seed)
    if isinstance(spec, str):
        from agentflow_env.llm import make_engine

        if ":" not in spec:
            raise PlannerSpecError(
                f"{spec!r} is not a planner spec: use scripted:NAME (oracle, "
                "random-tool, search-then-answer) or an engine spec (openai:MODEL@URL, "
                "hf:PATH_OR_NAME, vllm:NAME, python:module:function)"
            )
        try:
            engine = make_engine(spec, **(engine_kwargs or {}))
        except Exception as exc:  # any construction failure means the spec is unusable
            raise PlannerSpecError(f"{spec!r}: {type(exc).__name__}: {exc}") from exc
        return EngineBatchPlanner(
            engine,
            seed=seed,
            temperature=temperature,
            max_tokens=max_tokens,
            input_mode=input_mode,
            owns_engine=True,
            constrained=constrained,
        )
    return EngineBatchPlanner(
        spec,
        seed=seed,
        temperature=temperature,
        max_tokens=max_tokens,
        input_mode=input_mode,
        constrained=constrained,
    )
