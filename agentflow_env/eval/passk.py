"""pass@k over repeated samples per task, and intervals over repeated runs (seeds).

:func:`pass_at_k` is the unbiased estimator of Chen et al. (2021, "Evaluating Large Language
Models Trained on Code", eq. 1): with ``n`` samples of a task of which ``c`` pass,
``pass@k = 1 - C(n-c, k) / C(n, k)``, the chance that at least one of ``k`` samples drawn without
replacement from the ``n`` passes. It is computed exactly in integers (``math.comb``) and divided
once, so it is correctly rounded for any ``n`` (no overflow, no cancellation). The naive
``1 - (1 - c/n)^k`` is biased low and is not used.

:func:`sample_summary` groups episode records by task (``--samples K`` plays episode ``j`` as
sample ``j % K`` of task ``j // K``): per-task ``n``, ``correct`` and mean score, ``mean@K`` (the
mean over tasks of each task's mean score) and ``pass@k`` for ``k = 1..K`` (the mean over the
tasks that have at least ``k`` scored samples). An episode **passes** when its score is 1 (full
credit; partial-credit scorers such as F1 count only exact hits). Episodes without a score (a
failed scorer, or infrastructure that lost the outcome) are left out of ``n``: they are neither
right nor wrong.

:func:`t_interval` is the two-sided Student-t interval of a mean over a few runs (seeds); the
t quantile comes from the closed-form CDF for integer degrees of freedom (Abramowitz & Stegun
26.7.3-4), inverted by bisection, so no statistics package is needed for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from agentflow_env.trajectory import EpisodeRecord

__all__ = [
    "PASS_SCORE",
    "mean_interval",
    "pass_at_k",
    "pass_at_k_curve",
    "sample_summary",
    "t_interval",
    "t_quantile",
]

PASS_SCORE = 1.0
"""an episode passes when its score reaches this (full credit)"""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task: ``n`` samples, ``c`` of them correct, ``1 <= k <= n``."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"n, c and k must be integers, got {n!r}, {c!r}, {k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    total = math.comb(n, k)
    # C(n-c, k) is 0 when fewer than k samples fail: some pass in every draw.
    return (total - math.comb(n - c, k)) / total


def pass_at_k_curve(counts: Sequence[tuple[int, int]], max_k: int) -> dict[int, dict[str, float]]:
    """``{k: {"value", "tasks"}}`` for ``k = 1..max_k``: the mean pass@k over the tasks of
    ``counts`` (``(n, c)`` pairs) with ``n >= k``; ``value`` is NaN when no task has ``k``."""
    out: dict[int, dict[str, float]] = {}
    for k in range(1, max_k + 1):
        values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
        out[k] = {
            "value": math.fsum(values) / len(values) if values else math.nan,
            "tasks": float(len(values)),
        }
    return out


def sample_summary(records: Sequence[EpisodeRecord], samples: int) -> dict[str, Any]:
    """Per-task success, mean@K and pass@k of a ``--samples K`` run (see the module docstring).

    Records are grouped by ``metadata["episode_index"] // samples``.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    tasks: dict[int, dict[str, Any]] = {}
    for r in records:
        index = int(r.metadata["episode_index"]) // samples
        row = tasks.setdefault(
            index, {"index": index, "task_id": r.task_id, "played": 0, "scores": []}
        )
        row["played"] += 1
        if r.score is not None and r.infra_error is None:  # errored: no outcome, never a 0
            row["scores"].append(float(r.score))
    per_task = []
    for index in sorted(tasks):
        row = tasks[index]
        scores = row.pop("scores")
        row.update(
            n=len(scores),
            correct=sum(s >= PASS_SCORE for s in scores),
            mean_score=math.fsum(scores) / len(scores) if scores else None,
        )
        per_task.append(row)
    means = [row["mean_score"] for row in per_task if row["mean_score"] is not None]
    curve = pass_at_k_curve([(row["n"], row["correct"]) for row in per_task if row["n"]], samples)
    return {
        "samples": samples,
        "tasks": len(per_task),
        f"mean@{samples}": math.fsum(means) / len(means) if means else None,
        "pass_at_k": {
            str(k): (None if math.isnan(v["value"]) else v["value"]) for k, v in curve.items()
        },
        "pass_at_k_tasks": {str(k): int(v["tasks"]) for k, v in curve.items()},
        "per_task": per_task,
    }


# ----------------------------------------------------------------------------- intervals
def _t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        term, total = math.cos(theta), 0.0
        if df > 1:
            total = term
            for j in range(3, df - 1, 2):  # cos^(j) terms with factors 2*4*.../(3*5*...)
                term *= c2 * (j - 1) / j
                total += term
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0
    for j in range(2, df - 1, 2):
        term *= c2 * (j - 1) / j
        total += term
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The ``t`` with ``P(|T| <= t) = confidence`` for Student's t with ``df`` degrees of
    freedom (e.g. 12.706 for 0.95 and df=1)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):  # bisection to machine precision
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < confidence else (lo, mid)
    return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean of ``values`` (``len - 1`` degrees of freedom);
    ``(mean, mean)`` for one value would claim certainty, so one value gives ``(nan, nan)``."""
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def mean_interval(values: Sequence[float | None], confidence: float = 0.95) -> dict[str, Any]:
    """``{"mean", "std", "ci", "n", "values"}`` of per-run values (None values left out)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(kept)
    mean = math.fsum(kept) / n if n else None
    std = (
        math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / (n - 1))
        if n > 1 and mean is not None
        else None
    )
    lo, hi = t_interval(kept, confidence)
    return {
        "mean": mean,
        "std": std,
        "ci": None if math.isnan(lo) else [lo, hi],
        "n": n,
        "values": list(values),
    }
