"""What a Flow-GRPO step reports: rollout scalars reduced over ranks, and the progress bar.

Scalars are namespaced as TensorBoard shows them (``rollout/``, ``train/``, ``time/``, ``eval/``).
The rollout's include ``rollout/infra_failed`` (episodes whose outcome infrastructure lost this
step, replaced ones included) and ``rollout/infra_dropped_groups`` (groups left with fewer than
two valid episodes); the progress bar's line shows the failures when there are any.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from learners.distributed import Dist
from learners.rollout import RolloutBatch

__all__ = ["progress_bar", "progress_line", "reduce_rollout_stats"]


def reduce_rollout_stats(
    dist: Dist,
    batch: RolloutBatch,
    tools: Sequence[str],
    queries_per_step: int,
    skipped: int,
    dropped: int,
) -> dict[str, float]:
    """The step's rollout scalars over all ranks (``_gen_tokens`` is the generated-token sum).

    ``tools`` must be the same list on every rank; ``skipped`` counts zero-variance groups and
    ``dropped`` the groups with fewer than two valid episodes, on this rank.
    """
    local = batch.stats()
    n = len(batch.trajectories)
    # Every rank must all-reduce the same keys in the same order.
    keys = sorted(k for k in local if not k.startswith("rollout/tool_calls/"))
    tools = sorted(tools)
    calls = batch.tool_calls()
    values = [local[k] * n for k in keys] + [calls[t] for t in tools]
    values += [batch.infra_failed, dropped, n, skipped, batch.generated_tokens]
    reduced = dist.all_reduce_sum(values)
    total_n = max(reduced[-3], 1)
    out = {k: v / total_n for k, v in zip(keys, reduced, strict=False)}
    out.update(
        {
            f"rollout/tool_calls/{t}": v / total_n
            for t, v in zip(tools, reduced[len(keys) :], strict=False)
        }
    )
    out["rollout/infra_failed"] = reduced[-5]
    out["rollout/infra_dropped_groups"] = reduced[-4]
    out["rollout/zero_variance_groups"] = reduced[-2] / queries_per_step
    out["_gen_tokens"] = reduced[-1]
    return out


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar with a free ``info`` field (see :func:`progress_line`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


def progress_line(stats: dict[str, float], last_eval: float) -> str:
    """The bar's info: success, loss, last evaluation, and infrastructure failures if any."""
    failed = int(stats.get("rollout/infra_failed", 0))
    dropped = int(stats.get("rollout/infra_dropped_groups", 0))
    line = (
        f"success {stats.get('rollout/success', 0):.2f}  "
        f"loss {stats.get('train/loss', 0):+.4f}  "
        f"eval {last_eval:.2f}"
    )
    if failed:
        line += f"  infra-failed {failed}" + (f" ({dropped} groups dropped)" if dropped else "")
    return line
