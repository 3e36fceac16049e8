"""The one configuration of an AgentFlow environment: :class:`EnvConfig`.

Every setting :func:`agentflow_env.env.build_flow`, :class:`~agentflow_env.env.AgentFlowEnv` and
:class:`~agentflow_env.vector.AgentFlowVectorEnv` (so ``gym.make`` and ``gym.make_vec``) accept
besides the family is a field here, with its one-line doc. The trainer's env section
(:class:`learners.envs.EnvConfig`) extends this model, and the evaluator's ``--env-kwargs``
(:data:`agentflow_env.eval.config.EnvOverrides`) is derived from it, so a new setting is one
field here. The family is not a field: it is which environment (the gymnasium id picks it).

Unknown keys fail by name (with the closest valid one); bad values raise :class:`EnvConfigError`
saying what to pass instead. Objects are accepted where the env takes them (task lists, Tool
instances, engines, module instances, a scorer function) and are passed through unvalidated
beyond their kind: documents and task lists can be large, and their items are checked where they
are used.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SkipValidation, ValidationError

from agentflow_env.flow import Scorer
from agentflow_env.format import PromptStyle
from agentflow_env.llm.base import Engine
from agentflow_env.modules import Executor, Generator, Verifier
from agentflow_env.tasks.base import Task
from tools.base import Tool

__all__ = [
    "FAMILY_TOOLS",
    "EngineLike",
    "EnvConfig",
    "EnvConfigError",
    "Family",
    "TaskSource",
    "describe_errors",
    "settings_signature",
]

Family = Literal["search", "math", "agentic", "science"]
FAMILY_TOOLS: dict[str, tuple[str, ...]] = {
    "search": ("Search_Tool",),
    "math": ("Python_Coder_Tool",),
    "agentic": ("Search_Tool", "Python_Coder_Tool"),
    "science": ("Python_Coder_Tool",),
}
"""each family's tools when ``tools`` is None"""

TaskSource = Sequence[Task] | Sequence[Mapping[str, Any]] | str | Path
EngineLike = Engine | str | Callable[..., Any]
"""an engine, a spec string (``openai:MODEL@URL``, ``hf:PATH``, ``vllm:NAME``,
``python:module:function``), or a function (adapted by ``agentflow_env.llm.make_engine``)"""


class EnvConfigError(ValueError):
    """A bad env setting; the message names the setting and says what to pass instead."""


# ------------------------------------------------------------------------------ field checks
def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_tasks(value: Any) -> Any:
    if value is None or isinstance(value, (str, Path)):
        return value
    if isinstance(value, bytes) or not isinstance(value, Sequence):
        raise ValueError(f"must be a list of Task/dicts or a path, got {_short(value)}")
    return value


def _check_documents(value: Any) -> Any:
    if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)):
        raise ValueError(
            "must be a list of {'title', 'text'} dicts (for a JSONL file use "
            f"tool_kwargs={{'Search_Tool': {{'corpus_path': PATH}}}}), got {_short(value)}"
        )
    return value


def _check_tools(value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, str):
        from agentflow_env.tool_registry import TOOLSETS  # light: imports no tool

        if value in TOOLSETS:
            return value
        raise ValueError(
            f"must be a list of tool names or Tool objects (tools=[{value!r}]), or a toolset: "
            f"{', '.join(repr(t) for t in TOOLSETS)}"
        )
    if not isinstance(value, Sequence):
        raise ValueError(f"must be a list of tool names or Tool objects, got {_short(value)}")
    for item in value:
        if not isinstance(item, str) and not hasattr(item, "card"):
            raise ValueError(f"{_short(item)} is neither a tool name nor a Tool (no .card)")
    return value


def _check_engine(value: Any) -> Any:
    if value is None or isinstance(value, Engine) or callable(value):
        return value
    if isinstance(value, str):
        from agentflow_env.llm.spec import parse_spec  # light: imports no engine

        parse_spec(value)  # EngineConfigError (a ValueError) names the valid forms
        return value
    raise ValueError(
        "must be an engine, a spec string such as 'openai:MODEL@http://host:8000/v1' or "
        f"'hf:PATH', or a function; got {_short(value)}"
    )


def _check_query_analysis(value: Any) -> Any:
    return value if isinstance(value, bool) else _check_engine(value)


def _mode_check(role: str, modes: tuple[str, ...], base: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, base) or (isinstance(value, str) and value in modes):
            return value
        article = "an" if base.__name__[0] in "AEIOU" else "a"
        raise ValueError(
            f"{role} must be one of {list(modes)} or {article} {base.__name__} instance, "
            f"got {_short(value)}"
        )

    return check


def _check_scorer(value: Any) -> Any:
    if value is None or callable(value):
        return value
    raise ValueError(f"must be a function (prediction, task) -> float, got {_short(value)}")


# Object-valued settings: checked for their kind, then kept as the very object (SkipValidation:
# no copy of a large task list or corpus, no re-validation of engines and tools).
Tasks = Annotated[TaskSource | None, SkipValidation, BeforeValidator(_check_tasks)]
Documents = Annotated[
    Sequence[Mapping[str, Any]] | None, SkipValidation, BeforeValidator(_check_documents)
]
# A toolset name alone (tools="paper") is accepted too; the annotation stays a sequence so that
# command lines split "A,B" into names (a toolset name works as a list item as well).
Tools = Annotated[Sequence[str | Tool] | None, SkipValidation, BeforeValidator(_check_tools)]
ExecutorMode = Annotated[
    Literal["direct", "llm"] | Executor,
    SkipValidation,
    BeforeValidator(_mode_check("executor", ("direct", "llm"), Executor)),
]
VerifierMode = Annotated[
    Literal["planner", "llm"] | Verifier,
    SkipValidation,
    BeforeValidator(_mode_check("verifier", ("planner", "llm"), Verifier)),
]
GeneratorMode = Annotated[
    Literal["planner", "llm"] | Generator,
    SkipValidation,
    BeforeValidator(_mode_check("generator", ("planner", "llm"), Generator)),
]


EngineField = Annotated[EngineLike | None, SkipValidation, BeforeValidator(_check_engine)]
QueryAnalysis = Annotated[bool | EngineLike, SkipValidation, BeforeValidator(_check_query_analysis)]
ScorerField = Annotated[Scorer | None, SkipValidation, BeforeValidator(_check_scorer)]


# ------------------------------------------------------------------------------------- model
class EnvConfig(BaseModel):
    """Settings of an AgentFlow environment (everything but its family)."""

    model_config = ConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        use_attribute_docstrings=True,
        validate_assignment=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    tasks: Tasks = None
    """the task set: a list of Task or dicts, or a path to the authors' JSON or JSONL file; None
    generates the family's task set from `seed`"""
    documents: Documents = None
    """corpus Search_Tool indexes ([{"title", "text"}, ...]); None: the generated task set's"""
    tools: Tools = None
    """tool names (agentflow_env.tool_registry.TOOL_FACTORIES), toolsets ("paper": the
    reference's four tools, by name or in the list), MCP servers ("mcp:python server.py",
    "mcp+http://127.0.0.1:8765/mcp": every tool they list) or Tool objects; None: the family's
    tools"""
    max_turns: int = Field(10, ge=1)
    """planner turns per episode (the generator still answers at the limit)"""
    executor: ExecutorMode = "direct"
    """executor: direct (the planner's command is the tool input) or llm (the paper's LLM
    executor, needs an engine), or an Executor"""
    verifier: VerifierMode = "planner"
    """verifier: planner (stops when the planner finishes) or llm, or a Verifier"""
    generator: GeneratorMode = "planner"
    """generator: planner (the answer of the finishing step) or llm, or a Generator"""
    engine: EngineField = None
    """engine (or spec) of the LLM modules, query analysis and Base_Generator_Tool"""
    executor_engine: EngineField = None
    """engine of the LLM executor only (default: engine)"""
    verifier_engine: EngineField = None
    """engine of the LLM verifier only (default: engine)"""
    generator_engine: EngineField = None
    """engine of the LLM generator only (default: engine)"""
    constrained_modules: bool = True
    """hold the LLM modules' replies to their formats (executor: a call of the chosen tool;
    verifier: STOP/CONTINUE; generator: an <answer> tag; query analysis: its four lines) with
    token budgets sized to them, on engines that enforce constraints (hf, vllm); False: free
    text under the paper's budgets"""
    query_analysis: QueryAnalysis = False
    """analyze the query before the first step: True (with engine) or an engine of its own"""
    scorer: ScorerField = None
    """outcome scorer (prediction, task) -> float in [0, 1]; None: the rule scorers"""
    prompt_style: PromptStyle = "full"
    """planner prompt: full (tool cards + action format) or compact (query + tool names), both
    append-only; or paper (the reference's layout, rebuilt from memory each turn)"""
    tool_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """per-tool constructor arguments, e.g. {"Search_Tool": {"top_k": 1}}"""
    seed: int = 0
    """seed of the generated task set (when `tasks` is None)"""
    num_tasks: int | None = Field(None, ge=1)
    """size of the generated task set; None: the family's default"""
    task_kwargs: dict[str, Any] | None = None
    """task generator options, e.g. {"hops": [1, 3]}"""
    max_observation_chars: int = Field(200_000, ge=1)
    """observations are kept to this many characters by dropping their oldest steps (never
    the query header); only a header alone too long is cut"""
    max_action_chars: int = Field(4_000, ge=1)
    """an action is recorded in memory (and so in later observations) up to this many
    characters"""
    max_result_chars: int = Field(4_000, ge=1)
    """tool results are recorded in memory and observations up to this many characters"""
    tool_timeout_s: float = Field(60.0, gt=0)
    """per tool call: a call that takes longer becomes an error result"""
    max_episode_s: float | None = Field(None, gt=0)
    """wall-clock budget per episode in seconds (the reference: 500 training, 300 evaluation);
    past it the episode is truncated after the current step, info["truncation_reason"] =
    "time_budget"; None: no budget"""

    @classmethod
    def of(
        cls, config: EnvConfig | None = None, settings: Mapping[str, Any] | None = None
    ) -> EnvConfig:
        """``config`` (any EnvConfig, e.g. a learner's, whose extra fields are dropped) with
        ``settings`` (keyword arguments) on top, validated; :class:`EnvConfigError` if bad."""
        values: dict[str, Any] = {}
        if config is not None:
            if not isinstance(config, EnvConfig):
                raise EnvConfigError(
                    f"config must be an agentflow_env.config.EnvConfig, got {type(config).__name__}"
                )
            values = config.settings()
        values.update(settings or {})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise EnvConfigError(describe_errors(exc, cls)) from exc

    def settings(self) -> dict[str, Any]:
        """This environment's settings as keyword arguments (the base model's fields only)."""
        return {name: getattr(self, name) for name in EnvConfig.model_fields}


def describe_errors(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem, each naming its setting and how to fix it."""
    keys = [f.alias or name for name, f in model.model_fields.items()]
    lines = []
    for error in exc.errors():
        loc = prefix + ".".join(map(str, error["loc"]))
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"unknown setting {prefix}{key!r}{hint} (valid: {', '.join(keys)})")
        elif error["type"] == "value_error":
            message = str(error["ctx"]["error"])
            named = message.startswith(str(error["loc"][-1]) if error["loc"] else "")
            lines.append(message if named and error["loc"] else f"{loc}: {message}")
        else:
            lines.append(f"{loc}: {error['msg']} (got {_short(error['input'])})")
    return "; ".join(lines)


def settings_signature(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show :class:`EnvConfig`'s fields as ``func``'s keyword-only parameters (``help()``, IDEs,
    ``inspect.signature``) in place of its ``**settings``; the behaviour is unchanged."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name, info in EnvConfig.model_fields.items():
        default = info.get_default(call_default_factory=True)
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=info.annotation
            )
        )
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return func
