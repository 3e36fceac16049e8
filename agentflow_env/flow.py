"""The AgentFlow step, batched:
parse -> executor -> tools -> memory -> verifier -> generator -> score.

:class:`AgentFlow` holds the tools and modules; :meth:`AgentFlow.step` advances a batch of
:class:`Episode` states by one planner turn, running each stage once for the whole batch
(one executor call, concurrent tool calls with batched searches, one verifier call, one
generator call). ``AgentFlowEnv`` uses it with a batch of one and ``AgentFlowVectorEnv`` with N,
so both produce identical results by construction.

Prompt styles: ``full`` and ``compact`` observations are append-only (each turn's observation
extends the previous one); ``paper`` rebuilds the reference's prompt from the memory every turn
(:mod:`agentflow_env.format.paper`). An observation longer than ``max_observation_chars`` drops
its oldest steps (replaced by :data:`~agentflow_env.format.OMITTED`), never the query header.

Limits: ``max_turns`` and an optional per-episode wall-clock budget ``max_episode_s`` (the
reference: 500 s in training, 300 s in evaluation, counted from the episode's start, the
planner's own time included). An episode past either is truncated after the step in progress
(the generator still answers) with ``info["truncation_reason"]`` ``"max_turns"`` or
``"time_budget"``.

An infrastructure failure (:mod:`agentflow_env.infra`: an engine failing after its retries, a
tool that could not run, a scorer that could not score) ends its episode at once, unscored:
``truncated``, reward NaN (no outcome, never a 0), ``info["infra_error"]`` saying what failed.
The other episodes of the batch go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentflow_env.format import (
    FINISH,
    ChatMessage,
    PlannerAction,
    PromptStyle,
    action_message,
    merge_results,
    omitted_step,
    paper_prompt,
    parse_action,
    planner_header,
    planner_messages,
    prompt_message,
    result_message,
    step_block,
    step_header,
    tools_lines,
)
from agentflow_env.infra import INFRA_KINDS, InfraError, tool_kind
from agentflow_env.memory import Memory, Step
from agentflow_env.modules import (
    Executor,
    ExecutorCall,
    Generator,
    GeneratorCall,
    QueryAnalyzer,
    Verifier,
    VerifierCall,
    VerifierOutput,
)
from agentflow_env.spaces import sanitize_text
from agentflow_env.tasks.base import Task
from tools.base import Tool, ToolResult, execute_call

logger = logging.getLogger(__name__)

__all__ = ["AgentFlow", "Episode", "Scorer", "Timings"]

Scorer = Callable[[str, Task], float]


class Timings(Mapping[str, float]):
    """Wall-clock seconds per stage of one step.

    Equality compares only the stage names: timings are measurements, not part of a step's
    outcome, so two runs with the same seed and actions have equal infos (gymnasium's
    ``check_env`` determinism check compares infos).
    """

    def __init__(self, values: Mapping[str, float]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> float:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timings) and set(self._values) == set(other._values)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Timings({self._values})"


@dataclass
class Episode:
    """State of one episode (one query)."""

    task: Task
    observation: str
    memory: Memory = field(default_factory=Memory)
    turn: int = 0
    """turns taken so far"""
    done: bool = False
    answers: list[str] = field(default_factory=list)
    query_analysis: str | None = None
    started: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` at the episode's start (the wall-clock budget counts from here)"""
    step_starts: list[int] = field(default_factory=list)
    """append-only styles: where each step's header starts in ``observation``"""
    infra: InfraError | None = None
    """an infrastructure failure met before the episode could end (it then ends unscored)"""
    messages: list[ChatMessage] = field(default_factory=list)
    """the same episode as chat messages (append-only, like the observation)"""


class AgentFlow:
    """Tools + modules + prompt settings: everything one step needs, shared by N episodes."""

    def __init__(
        self,
        tools: Sequence[Tool],
        executor: Executor,
        verifier: Verifier,
        generator: Generator,
        scorer: Scorer,
        *,
        max_turns: int = 10,
        prompt_style: PromptStyle = "full",
        query_analyzer: QueryAnalyzer | None = None,
        max_action_chars: int = 4_000,
        max_result_chars: int = 4_000,
        max_observation_chars: int = 200_000,
        tool_timeout_s: float = 60.0,
        max_tool_workers: int = 8,
        max_episode_s: float | None = None,
    ) -> None:
        names = [t.card.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        if FINISH in names:
            raise ValueError(f"'{FINISH}' is reserved for finishing an episode; rename the tool")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if max_episode_s is not None and not max_episode_s > 0:
            raise ValueError(f"max_episode_s must be > 0 (or None), got {max_episode_s}")
        self.tools = {t.card.name: t for t in tools}
        self.executor, self.verifier, self.generator = executor, verifier, generator
        self.scorer = scorer
        self.max_turns = max_turns
        self.prompt_style = prompt_style
        self.query_analyzer = query_analyzer
        self.max_action_chars = max_action_chars
        self.max_result_chars = max_result_chars
        self.max_observation_chars = max_observation_chars
        self.tool_timeout_s = tool_timeout_s
        self.max_episode_s = max_episode_s
        self._cards = tuple(t.card for t in tools)
        self._paper_tools = tools_lines(self._cards) if prompt_style == "paper" else None
        # The reference's planner never finishes itself; a planner-stopped env says how to.
        self._finish_rule = getattr(verifier, "mode", "") == "planner"
        self.tool_backends = {
            t.card.name: str(t.backend) for t in tools if getattr(t, "backend", None)
        }
        """tool name -> what backs it, for tools that say (e.g. a search name offline)"""
        self._pool = cf.ThreadPoolExecutor(max_workers=max_tool_workers, thread_name_prefix="tool")

    # ------------------------------------------------------------------------------ episodes
    def start(self, tasks: Sequence[Task]) -> list[tuple[Episode, dict[str, Any]]]:
        """New episodes for ``tasks`` (one batched query-analysis call when enabled)."""
        cards = [t.card for t in self.tools.values()]
        analyses: list[tuple[str | None, InfraError | None]] = [(None, None)] * len(tasks)
        if self.query_analyzer is not None:
            analyses = list(self.query_analyzer.analyze([t.question for t in tasks], cards))
        out = []
        for task, (analysis, infra) in zip(tasks, analyses, strict=True):
            pieces = (task.question, cards, self.prompt_style, analysis or None, self.max_turns)
            episode = Episode(task=task, observation="", query_analysis=analysis, infra=infra)
            if self.prompt_style == "paper":
                episode.observation = self._paper_text(episode)
                # no fixed header: the first turn's whole prompt opens the chat rendering
                episode.messages = [prompt_message(episode.observation)]
            else:
                episode.messages = planner_messages(*pieces)
                header = sanitize_text(planner_header(*pieces))
                episode.observation = header + step_header(1)
                episode.step_starts.append(len(header))
            info: dict[str, Any] = {
                "task_id": task.id,
                "turn": 0,
                "query_analysis": analysis,
                "query_analysis_error": infra.message if infra else None,
                "messages": self.messages(episode),
            }
            if self.tool_backends:
                info["tool_backends"] = dict(self.tool_backends)
            if infra is not None:  # the first step ends the episode without running anything
                info["infra_error"] = infra.model_dump()
            out.append((episode, info))
        return out

    def _paper_text(self, episode: Episode, omitted: int = 0) -> str:
        """The paper layout's prompt for this turn, rebuilt from the memory."""
        return sanitize_text(
            paper_prompt(
                episode.task.question,
                self._cards,
                episode.memory.actions(omitted),
                episode.query_analysis,
                finish_rule=self._finish_rule,
                tools_text=self._paper_tools,
            )
        )

    def observation(self, episode: Episode) -> str:
        """The planner's observation, at most ``max_observation_chars`` long: an over-long one
        drops its oldest steps first (never the query header)."""
        text, limit = episode.observation, self.max_observation_chars
        if len(text) <= limit:
            return text  # every piece was sanitized when it was added
        if self.prompt_style == "paper":
            for omitted in range(1, len(episode.memory) + 1):
                text = self._paper_text(episode, omitted)
                if len(text) <= limit:
                    return text
            return sanitize_text(text, limit)
        starts, full = episode.step_starts, episode.observation
        for k in range(1, len(starts)):
            dropped = "".join(omitted_step(j) for j in range(1, k + 1))
            text = full[: starts[0]] + dropped + full[starts[k] :]
            if len(text) <= limit:
                return text
        # Even the header and the newest step are too long: keep the start and the open slot.
        tail = "" if episode.done else step_header(episode.turn + 1)
        marker = "\n...[truncated]\n\n"
        room = limit - len(marker) - len(tail)
        return text[:room] + marker + tail if room > 0 else sanitize_text(text, limit)

    @staticmethod
    def messages(episode: Episode) -> list[ChatMessage]:
        """The episode's chat messages so far: a copy, so a caller's edits cannot reach it."""
        return [dict(m) for m in episode.messages]

    # --------------------------------------------------------------------------------- step
    def step(
        self, episodes: Sequence[Episode], actions: Sequence[object]
    ) -> list[tuple[float, bool, bool, dict[str, Any]]]:
        """Advance every (not done) episode by one turn.
        Returns (reward, terminated, truncated, info)."""
        if len(episodes) != len(actions):
            raise ValueError(f"got {len(actions)} actions for {len(episodes)} episodes")
        live = [i for i, ep in enumerate(episodes) if not ep.done]
        failed = {i: episodes[i].infra for i in live if episodes[i].infra is not None}
        playing = [i for i in live if i not in failed]
        t0 = time.perf_counter()
        parsed = {i: parse_action(actions[i], list(self.tools)) for i in playing}
        inputs, exec_errors, exec_infra = self._run_executor(episodes, parsed)
        failed.update(exec_infra)
        t_exec = time.perf_counter()
        results = self._run_tools(inputs, parsed)
        failed.update(
            (
                i,
                InfraError(
                    kind=tool_kind(r.infra),
                    source=f"tool:{parsed[i].tool_name}",
                    message=str(r.error),
                ),
            )
            for i, r in results.items()
            if r.infra is not None
        )
        t_tools = time.perf_counter()
        steps = {
            i: self._record(
                episodes[i], parsed[i], inputs.get(i), results.get(i), exec_errors.get(i)
            )
            for i in playing
        }
        verify = [i for i in playing if i not in failed]
        decisions = self.verifier.decide(
            [
                VerifierCall(
                    episodes[i].task.question,
                    episodes[i].memory,
                    parsed[i],
                    episodes[i].query_analysis,
                    self._cards,
                )
                for i in verify
            ]
        )
        t_verify = time.perf_counter()
        ending = []
        outcome: dict[int, tuple[float, bool, bool, dict[str, Any]]] = {}
        for i, decision in zip(verify, decisions, strict=True):
            ep, step = episodes[i], steps[i]
            step.verifier = decision.decision
            terminated = decision.stop
            reason = self._truncation(ep) if not terminated else None
            truncated = reason is not None
            info = self._step_info(ep, parsed[i], step, decision)
            if reason is not None:
                info["truncation_reason"] = reason
            outcome[i] = (0.0, terminated, truncated, info)
            if decision.infra is not None:
                failed[i] = decision.infra
            elif terminated or truncated:
                ending.append(i)
        failed.update(self._finish(episodes, parsed, ending, outcome, failed))
        for i, infra in failed.items():
            outcome[i] = self._fail(episodes[i], infra, outcome.get(i), parsed.get(i), steps.get(i))
        t_end = time.perf_counter()
        timings = {
            "executor_s": t_exec - t0,
            "tools_s": t_tools - t_exec,
            "verifier_s": t_verify - t_tools,
            "generator_s": t_end - t_verify,
        }
        now = time.monotonic()
        for i in live:
            ep = episodes[i]
            if self.prompt_style == "paper":
                ep.observation = self._paper_text(ep)
            outcome[i][3]["timings"] = Timings({**timings, "episode_s": now - ep.started})
            outcome[i][3]["messages"] = self.messages(ep)
        for i, ep in enumerate(episodes):
            if i not in outcome:  # finished earlier: waits without work
                outcome[i] = (0.0, False, False, {"turn": ep.turn, "skipped": True})
        return [outcome[i] for i in range(len(episodes))]

    def _truncation(self, ep: Episode) -> str | None:
        """Why a not-terminated episode ends now, or None when it goes on."""
        if ep.turn >= self.max_turns:
            return "max_turns"
        if self.max_episode_s is not None and time.monotonic() - ep.started >= self.max_episode_s:
            return "time_budget"
        return None

    def _fail(
        self,
        ep: Episode,
        infra: InfraError,
        outcome: tuple[float, bool, bool, dict[str, Any]] | None,
        action: PlannerAction | None,
        step: Step | None,
    ) -> tuple[float, bool, bool, dict[str, Any]]:
        """End ``ep`` unscored: reward NaN, ``info["infra_error"]``. An episode that ended on
        its own this step keeps its flags; one cut short is truncated."""
        terminated, truncated = (outcome[1], outcome[2]) if outcome else (False, False)
        if not (terminated or truncated):
            terminated, truncated = False, True
        if outcome is not None:
            info = outcome[3]
        elif action is not None and step is not None:  # the executor or tool failed: no verdict
            info = self._step_info(ep, action, step, None)
        else:  # failed at reset (query analysis): nothing of this step ran
            info = {"turn": ep.turn, "task_id": ep.task.id}
            info.update(error=str(infra), error_kind="infra")
        ep.done, ep.infra = True, infra
        info.setdefault("answer", None)  # a judge failure keeps the answer it could not score
        info.update(
            infra_error=infra.model_dump(),
            ground_truth=ep.task.answer,
            score=math.nan,
            score_error=infra.message if infra.source == "judge" else None,
        )
        return (math.nan, terminated, truncated, info)

    # ------------------------------------------------------------------------------ stages
    def _run_executor(
        self, episodes: Sequence[Episode], parsed: dict[int, PlannerAction]
    ) -> tuple[dict[int, dict[str, Any]], dict[int, str], dict[int, InfraError]]:
        """Tool inputs, executor errors (shown to the planner), and executor engine failures."""
        need = [i for i, a in parsed.items() if a.error is None and not a.is_finish]
        calls = [
            ExecutorCall(
                episodes[i].task.question,
                parsed[i],
                self.tools[parsed[i].tool_name].card,  # type: ignore[index]
                episodes[i].memory,
                episodes[i].query_analysis,
            )
            for i in need
        ]
        inputs: dict[int, list[dict[str, Any]]] = {}
        errors: dict[int, str] = {}
        infra: dict[int, InfraError] = {}
        for i, out in zip(need, self.executor.commands(calls) if calls else [], strict=True):
            if out.error:
                errors[i] = out.error
                if out.infra is not None:
                    infra[i] = out.infra
            else:
                inputs[i] = out.all_calls()
        return inputs, errors, infra

    def _run_tools(
        self, inputs: dict[int, list[dict[str, Any]]], parsed: dict[int, PlannerAction]
    ) -> dict[int, ToolResult]:
        """All calls concurrently; calls of a tool with ``batch_execute`` go in one batch. An
        episode's several calls (a multi-call command) each run, and their results merge into
        the step's one result (:func:`~agentflow_env.format.merge_results`)."""
        units = {(i, k): call for i, calls in inputs.items() for k, call in enumerate(calls)}
        by_tool: dict[str, list[tuple[int, int]]] = {}
        for unit in units:
            by_tool.setdefault(str(parsed[unit[0]].tool_name), []).append(unit)
        work: list[tuple[Tool, Callable[..., Any], tuple[Any, ...], list[tuple[int, int]]]] = []
        for name, idx in by_tool.items():
            tool = self.tools[name]
            batch = getattr(tool, "batch_execute", None)
            primary = tool.card.primary_input
            if batch is not None and len(idx) > 1 and all(set(units[u]) == {primary} for u in idx):
                work.append((tool, batch, ([units[u][primary] for u in idx],), idx))
            else:
                work.extend((tool, _safe_execute, (tool, units[u]), [u]) for u in idx)
        done = self._run_work(work)
        return {
            i: merge_results(
                # a single call's result is the step's: its source text is not shown
                [execute_call(c) for c in calls] if len(calls) != 1 else [""],
                [done.get((i, k)) or ToolResult.failure("no result") for k in range(len(calls))],
            )
            for i, calls in inputs.items()
        }

    def _run_work(
        self, calls: list[tuple[Tool, Callable[..., Any], tuple[Any, ...], list[Any]]]
    ) -> dict[Any, ToolResult]:
        # Pool calls are submitted first so they run while the inline ones use this thread.
        futures = {
            self._pool.submit(fn, *args): idx
            for tool, fn, args, idx in calls
            if not getattr(tool, "runs_inline", False)
        }
        results: dict[Any, ToolResult] = {}
        for tool, fn, args, idx in calls:
            if getattr(tool, "runs_inline", False):
                try:
                    self._store(results, idx, fn(*args))
                except (
                    Exception
                ) as exc:  # a tool broke its contract by raising: contain it to its episodes
                    self._store_error(results, idx, exc)
        deadline = time.monotonic() + self.tool_timeout_s
        for fut, idx in futures.items():
            try:
                self._store(results, idx, fut.result(timeout=max(0.0, deadline - time.monotonic())))
            except cf.TimeoutError:
                for i in idx:
                    results[i] = ToolResult.backend_failure(
                        f"tool call timed out after {self.tool_timeout_s:g} s"
                    )
            except (
                Exception
            ) as exc:  # a tool broke its contract by raising: contain it to its episodes
                self._store_error(results, idx, exc)
        return results

    @staticmethod
    def _store(results: dict[Any, ToolResult], idx: list[Any], value: Any) -> None:
        values = value if isinstance(value, list) else [value]
        if len(values) != len(idx):
            raise ValueError(f"tool returned {len(values)} results for {len(idx)} calls")
        for i, res in zip(idx, values, strict=False):
            results[i] = (
                res
                if isinstance(res, ToolResult)
                else ToolResult.backend_failure(
                    f"tool returned {type(res).__name__}, not ToolResult"
                )
            )

    @staticmethod
    def _store_error(results: dict[Any, ToolResult], idx: list[Any], exc: Exception) -> None:
        logger.warning("tool raised %s: %s", type(exc).__name__, exc)
        for i in idx:
            results[i] = ToolResult.backend_failure(f"tool raised {type(exc).__name__}: {exc}")

    def _record(
        self,
        ep: Episode,
        action: PlannerAction,
        inputs: list[dict[str, Any]] | None,
        result: ToolResult | None,
        exec_error: str | None,
    ) -> Step:
        ep.turn += 1
        if action.answer is not None:
            ep.answers.append(action.answer)
        action_text = action.raw if isinstance(action.raw, str) else str(action.raw)
        if len(action_text) > self.max_action_chars:
            action_text = action_text[: self.max_action_chars] + " ...[truncated]"
        error = (
            action.error
            or exec_error
            or (result.error if result is not None and not result.ok else None)
        )
        kind = "parse" if action.error else "executor" if exec_error else "tool" if error else None
        if action.error:
            shown = f"Error: could not parse the action: {action.error}"
        elif exec_error:
            shown = f"Error: executor failed: {exec_error}"
        elif action.is_finish:
            shown = "Finished."
        elif result is None:
            shown = "Error: the tool produced no result"
        else:
            shown = result.as_text()
        if len(shown) > self.max_result_chars:
            shown = shown[: self.max_result_chars] + " ...[truncated]"
        command = _command_text(inputs)
        step = Step(
            turn=ep.turn,
            action_text=action_text,
            tool_name=action.tool_name,
            sub_goal=action.sub_goal,
            command=command,
            calls=list(inputs or []),
            result=shown,
            error=error,
            error_kind=kind,
        )
        ep.memory.add(step)
        if self.prompt_style != "paper":  # the paper prompt is rebuilt from the memory
            ep.observation += sanitize_text(step_block(action_text, shown))
        ep.messages.append(action_message(action_text))
        return step

    def _step_info(
        self, ep: Episode, action: PlannerAction, step: Step, decision: VerifierOutput | None
    ) -> dict[str, Any]:
        info = {
            "turn": ep.turn,
            "task_id": ep.task.id,
            # the fields but ``raw``, as model_dump(exclude={"raw"}) gives them, at a third of
            # its cost (every field is a str or None)
            "action": {k: v for k, v in action.__dict__.items() if k != "raw"},
            "tool_name": step.tool_name if step.tool_name != FINISH else None,
            "tool_input": step.command,
            "tool_result": step.result,
            "error": step.error,
            "error_kind": step.error_kind,
            "verifier": decision.decision if decision else None,
            "verifier_analysis": decision.analysis if decision else None,
            "verifier_error": decision.error if decision else None,
        }
        if len(step.calls) > 1:
            info["tool_calls"] = [dict(c) for c in step.calls]
        if step.tool_name in self.tool_backends and step.calls:
            info["tool_backend"] = self.tool_backends[step.tool_name]
        return info

    def _finish(
        self,
        episodes: Sequence[Episode],
        parsed: dict[int, PlannerAction],
        ending: list[int],
        outcome: dict[int, tuple[float, bool, bool, dict[str, Any]]],
        failed: Mapping[int, InfraError],
    ) -> dict[int, InfraError]:
        """Answer and score the ``ending`` episodes; returns those whose generator or scorer
        failed (infrastructure: they end unscored)."""
        for i in range(len(episodes)):
            if i in outcome:
                ep = episodes[i]
                going_on = i not in ending and i not in failed
                if going_on and self.prompt_style != "paper":
                    ep.step_starts.append(len(ep.observation))
                    ep.observation += step_header(ep.turn + 1)
                if ep.messages and ep.messages[-1]["role"] == "assistant":
                    last = ep.memory.steps[-1].result
                    ep.messages.append(result_message(last, ep.turn + 1 if going_on else None))
        if not ending:
            return {}
        answers = self.generator.answer(
            [
                GeneratorCall(
                    episodes[i].task.question,
                    episodes[i].memory,
                    parsed[i],
                    tuple(episodes[i].answers),
                    episodes[i].query_analysis,
                    self._cards,
                )
                for i in ending
            ]
        )
        lost: dict[int, InfraError] = {}
        for i, gen in zip(ending, answers, strict=True):
            ep = episodes[i]
            ep.done = True
            if gen.infra is not None:
                lost[i] = gen.infra
                continue
            try:
                score = float(self.scorer(gen.answer, ep.task))
            except Exception as exc:  # a failed judge: no outcome (NaN, infra_error), never a 0
                message = f"{type(exc).__name__}: {exc}"
                logger.warning("scoring task %s failed: %s", ep.task.id, message)
                kind = getattr(exc, "kind", None)  # a JudgeError says what failed
                known = kind if kind in INFRA_KINDS else "judge"
                lost[i] = InfraError(kind=known, source="judge", message=message)
                outcome[i][3].update(answer=gen.answer, generator_error=gen.error)
                continue
            _, terminated, truncated, info = outcome[i]
            info.update(
                answer=gen.answer,
                generator_error=gen.error,
                ground_truth=ep.task.answer,
                score=score,
                score_error=None,
            )
            outcome[i] = (score, terminated, truncated, info)
        return lost

    # ------------------------------------------------------------------------------ cleanup
    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for tool in self.tools.values():
            close = getattr(tool, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # closing must not mask the caller's own error
                    logger.warning("closing tool %s failed: %s", tool.card.name, exc)
        for module in (self.executor, self.verifier, self.generator):
            module.close()


def _command_text(calls: list[dict[str, Any]] | None) -> str | None:
    if not calls:
        return None
    if len(calls) > 1:
        return "\n".join(execute_call(c) for c in calls)
    inputs = calls[0]
    if not inputs:
        return None
    if len(inputs) == 1:
        return str(next(iter(inputs.values())))
    return ", ".join(f"{k}={v!r}" for k, v in inputs.items())


def _safe_execute(tool: Tool, inputs: dict[str, Any]) -> ToolResult:
    try:
        return tool.execute(**inputs)
    except Exception as exc:  # tools must not raise; if one does, the episode sees the error
        logger.warning("tool %s raised %s: %s", tool.card.name, type(exc).__name__, exc)
        return ToolResult.backend_failure(f"tool raised {type(exc).__name__}: {exc}")
