"""The AgentFlow step, batched:
parse -> executor -> tools -> memory -> verifier -> generator -> score.

:class:`AgentFlow` holds the tools and modules; :meth:`AgentFlow.step` advances a batch of
:class:`Episode` states by one planner turn, running each stage once for the whole batch
(one executor call, concurrent tool calls with batched searches, one verifier call, one
generator call). ``AgentFlowEnv`` uses it with a batch of one and ``AgentFlowVectorEnv`` with N,
so both produce identical results by construction.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
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
    parse_action,
    planner_header,
    planner_messages,
    result_message,
    step_block,
    step_header,
)
from agentflow_env.memory import Memory, Step
from agentflow_env.modules import (
    Executor,
    ExecutorCall,
    Generator,
    GeneratorCall,
    QueryAnalyzer,
    Verifier,
    VerifierCall,
)
from agentflow_env.spaces import sanitize_text
from agentflow_env.tasks.base import Task
from tools.base import Tool, ToolResult

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
    ) -> None:
        names = [t.card.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        if FINISH in names:
            raise ValueError(f"'{FINISH}' is reserved for finishing an episode; rename the tool")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
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
        self._pool = cf.ThreadPoolExecutor(max_workers=max_tool_workers, thread_name_prefix="tool")

    # ------------------------------------------------------------------------------ episodes
    def start(self, tasks: Sequence[Task]) -> list[tuple[Episode, dict[str, Any]]]:
        """New episodes for ``tasks`` (one batched query-analysis call when enabled)."""
        cards = [t.card for t in self.tools.values()]
        analyses: list[tuple[str | None, str | None]] = [(None, None)] * len(tasks)
        if self.query_analyzer is not None:
            analyses = list(self.query_analyzer.analyze([t.question for t in tasks], cards))
        out = []
        for task, (analysis, error) in zip(tasks, analyses, strict=True):
            pieces = (task.question, cards, self.prompt_style, analysis or None, self.max_turns)
            episode = Episode(
                task=task,
                observation=sanitize_text(planner_header(*pieces) + step_header(1)),
                query_analysis=analysis,
                messages=planner_messages(*pieces),
            )
            info = {
                "task_id": task.id,
                "turn": 0,
                "query_analysis": analysis,
                "query_analysis_error": error,
                "messages": self.messages(episode),
            }
            out.append((episode, info))
        return out

    def observation(self, episode: Episode) -> str:
        # Every piece was sanitized when appended (append-only), so only the length cap is left.
        text = episode.observation
        return (
            text
            if len(text) <= self.max_observation_chars
            else sanitize_text(text, self.max_observation_chars)
        )

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
        t0 = time.perf_counter()
        parsed = {i: parse_action(actions[i], list(self.tools)) for i in live}
        inputs, exec_errors = self._run_executor(episodes, parsed)
        t_exec = time.perf_counter()
        results = self._run_tools(inputs, parsed)
        t_tools = time.perf_counter()
        steps = {
            i: self._record(
                episodes[i], parsed[i], inputs.get(i), results.get(i), exec_errors.get(i)
            )
            for i in live
        }
        decisions = self.verifier.decide(
            [VerifierCall(episodes[i].task.question, episodes[i].memory, parsed[i]) for i in live]
        )
        t_verify = time.perf_counter()
        ending = []
        outcome: dict[int, tuple[float, bool, bool, dict[str, Any]]] = {}
        for i, decision in zip(live, decisions, strict=True):
            ep, step = episodes[i], steps[i]
            step.verifier = decision.decision
            terminated = decision.stop
            truncated = not terminated and ep.turn >= self.max_turns
            info = self._step_info(ep, parsed[i], step, decision)
            outcome[i] = (0.0, terminated, truncated, info)
            if terminated or truncated:
                ending.append(i)
        self._finish(episodes, parsed, ending, outcome)
        t_end = time.perf_counter()
        timings = {
            "executor_s": t_exec - t0,
            "tools_s": t_tools - t_exec,
            "verifier_s": t_verify - t_tools,
            "generator_s": t_end - t_verify,
        }
        for i in live:
            outcome[i][3]["timings"] = Timings(timings)
            outcome[i][3]["messages"] = self.messages(episodes[i])
        for i, ep in enumerate(episodes):
            if i not in outcome:  # finished earlier: waits without work
                outcome[i] = (0.0, False, False, {"turn": ep.turn, "skipped": True})
        return [outcome[i] for i in range(len(episodes))]

    # ------------------------------------------------------------------------------ stages
    def _run_executor(self, episodes: Sequence[Episode], parsed: dict[int, PlannerAction]):
        need = [i for i, a in parsed.items() if a.error is None and not a.is_finish]
        calls = [
            ExecutorCall(
                episodes[i].task.question,
                parsed[i],
                self.tools[parsed[i].tool_name].card,
                episodes[i].memory,
            )  # type: ignore[index]
            for i in need
        ]
        inputs: dict[int, dict[str, Any]] = {}
        errors: dict[int, str] = {}
        for i, out in zip(need, self.executor.commands(calls) if calls else [], strict=True):
            if out.error:
                errors[i] = out.error
            else:
                inputs[i] = out.inputs
        return inputs, errors

    def _run_tools(
        self, inputs: dict[int, dict[str, Any]], parsed: dict[int, PlannerAction]
    ) -> dict[int, ToolResult]:
        """All calls concurrently; calls of a tool with ``batch_execute`` go in one batch."""
        by_tool: dict[str, list[int]] = {}
        for i in inputs:
            by_tool.setdefault(str(parsed[i].tool_name), []).append(i)
        calls: list[tuple[Tool, Callable[..., Any], tuple[Any, ...], list[int]]] = []
        for name, idx in by_tool.items():
            tool = self.tools[name]
            batch = getattr(tool, "batch_execute", None)
            primary = tool.card.primary_input
            if batch is not None and len(idx) > 1 and all(set(inputs[i]) == {primary} for i in idx):
                calls.append((tool, batch, ([inputs[i][primary] for i in idx],), idx))
            else:
                calls.extend((tool, _safe_execute, (tool, inputs[i]), [i]) for i in idx)
        # Pool calls are submitted first so they run while the inline ones use this thread.
        futures = {
            self._pool.submit(fn, *args): idx
            for tool, fn, args, idx in calls
            if not getattr(tool, "runs_inline", False)
        }
        results: dict[int, ToolResult] = {}
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
                    results[i] = ToolResult.failure(
                        f"tool call timed out after {self.tool_timeout_s:g} s"
                    )
            except (
                Exception
            ) as exc:  # a tool broke its contract by raising: contain it to its episodes
                self._store_error(results, idx, exc)
        return results

    @staticmethod
    def _store(results: dict[int, ToolResult], idx: list[int], value: Any) -> None:
        values = value if isinstance(value, list) else [value]
        if len(values) != len(idx):
            raise ValueError(f"tool returned {len(values)} results for {len(idx)} calls")
        for i, res in zip(idx, values, strict=False):
            results[i] = (
                res
                if isinstance(res, ToolResult)
                else ToolResult.failure(f"tool returned {type(res).__name__}, not ToolResult")
            )

    @staticmethod
    def _store_error(results: dict[int, ToolResult], idx: list[int], exc: Exception) -> None:
        logger.warning("tool raised %s: %s", type(exc).__name__, exc)
        for i in idx:
            results[i] = ToolResult.failure(f"tool raised {type(exc).__name__}: {exc}")

    def _record(
        self,
        ep: Episode,
        action: PlannerAction,
        inputs: dict[str, Any] | None,
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
            result=shown,
            error=error,
            error_kind=kind,
        )
        ep.memory.add(step)
        ep.observation += sanitize_text(step_block(action_text, shown))
        ep.messages.append(action_message(action_text))
        return step

    def _step_info(
        self, ep: Episode, action: PlannerAction, step: Step, decision: Any
    ) -> dict[str, Any]:
        return {
            "turn": ep.turn,
            "task_id": ep.task.id,
            "action": action.model_dump(exclude={"raw"}),
            "tool_name": step.tool_name if step.tool_name != FINISH else None,
            "tool_input": step.command,
            "tool_result": step.result,
            "error": step.error,
            "error_kind": step.error_kind,
            "verifier": decision.decision,
            "verifier_analysis": decision.analysis,
            "verifier_error": decision.error,
        }

    def _finish(
        self,
        episodes: Sequence[Episode],
        parsed: dict[int, PlannerAction],
        ending: list[int],
        outcome: dict[int, tuple[float, bool, bool, dict[str, Any]]],
    ) -> None:
        for i in range(len(episodes)):
            if i in outcome:
                ep = episodes[i]
                going_on = i not in ending
                if going_on:
                    ep.observation += step_header(ep.turn + 1)
                last = ep.memory.steps[-1].result
                ep.messages.append(result_message(last, ep.turn + 1 if going_on else None))
        if not ending:
            return
        answers = self.generator.answer(
            [
                GeneratorCall(
                    episodes[i].task.question,
                    episodes[i].memory,
                    parsed[i],
                    tuple(episodes[i].answers),
                )
                for i in ending
            ]
        )
        for i, gen in zip(ending, answers, strict=True):
            ep = episodes[i]
            ep.done = True
            score, score_error = float("nan"), None
            try:
                score = float(self.scorer(gen.answer, ep.task))
            except Exception as exc:  # a failed judge is reported (score NaN), never a silent 0
                score_error = f"{type(exc).__name__}: {exc}"
                logger.warning("scoring task %s failed: %s", ep.task.id, score_error)
            _, terminated, truncated, info = outcome[i]
            info.update(
                answer=gen.answer,
                generator_error=gen.error,
                ground_truth=ep.task.answer,
                score=score,
                score_error=score_error,
            )
            outcome[i] = (0.0 if score_error else score, terminated, truncated, info)

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


def _command_text(inputs: dict[str, Any] | None) -> str | None:
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
        return ToolResult.failure(f"tool raised {type(exc).__name__}: {exc}")
