"""Generated task suites, one per environment family, deterministic from a seed.

``make_suite("search", seed=3)`` returns the same tasks and documents in every process: all
randomness comes from ``random.Random`` instances seeded from ``seed`` (string seeds are hashed
with SHA-512, not Python's randomized ``hash``), and no set or dict ordering leaks into output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from agentflow_env.tasks.base import Task

__all__ = ["TaskSuite", "make_suite", "Family", "DEFAULT_NUM_TASKS"]

Family = Literal["search", "math", "agentic", "science"]
DEFAULT_NUM_TASKS: dict[str, int] = {"search": 500, "math": 500, "agentic": 300, "science": 300}
"""suite sizes when ``num_tasks`` is not given (the env's defaults)"""


@dataclass(frozen=True)
class TaskSuite:
    """Tasks plus the corpus a ``Search_Tool`` should index (empty for tool-free suites).

    ``documents`` are ``{"id", "title", "text"}`` dicts; generated search and agentic questions
    are answerable only from them.
    """

    tasks: tuple[Task, ...]
    documents: tuple[dict[str, Any], ...] = ()

    def __len__(self) -> int:
        return len(self.tasks)


def make_suite(
    family: Family, *, seed: int = 0, num_tasks: int | None = None, **kwargs: Any
) -> TaskSuite:
    """Generate the task suite of ``family``.

    Args:
        family: ``"search"`` (multi-hop questions over a generated world), ``"math"`` (Game of
            24 and word problems), ``"agentic"`` (search + computation over a generated world)
            or ``"science"`` (quantitative multiple choice).
        seed: fixes everything; the same seed gives the same suite in any process.
        num_tasks: number of tasks (default :data:`DEFAULT_NUM_TASKS` of the family).
        **kwargs: family options. search: ``hops`` (int or ``(low, high)``, default ``(1, 4)``),
            ``n_people``, ``n_cities``, ``n_companies``, ``n_countries``. agentic: ``kinds`` and
            the world sizes. math: ``game24_fraction`` (0.5). science: ``kinds``.

    Raises:
        ValueError: unknown family or invalid option values.
        TypeError: an option the family does not take.
    """
    if family not in get_args(Family):
        raise ValueError(f"family must be one of {list(get_args(Family))}, got {family!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    n = DEFAULT_NUM_TASKS[family] if num_tasks is None else num_tasks
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
    try:
        if family == "search":
            from agentflow_env.tasks.search_world import make_search_tasks

            tasks, world = make_search_tasks(seed, n, **kwargs)
            return TaskSuite(tuple(tasks), tuple(world.documents()))
        if family == "agentic":
            from agentflow_env.tasks.agentic import make_agentic_tasks

            tasks, world = make_agentic_tasks(seed, n, **kwargs)
            return TaskSuite(tuple(tasks), tuple(world.documents()))
        if family == "math":
            from agentflow_env.tasks.math_tasks import make_math_tasks

            return TaskSuite(tuple(make_math_tasks(seed, n, **kwargs)))
        from agentflow_env.tasks.science import make_science_tasks

        return TaskSuite(tuple(make_science_tasks(seed, n, **kwargs)))
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise TypeError(
                f"make_suite({family!r}): {exc}; see make_suite's docstring for the "
                "options each family takes"
            ) from exc
        raise
