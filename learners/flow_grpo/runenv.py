"""What a run's sections become: its training and validation tasks, its reward and its policy
(:func:`load_policy`).

:func:`resolve_run_env` turns a :class:`~learners.flow_grpo.config.FlowGRPOConfig` into a
:class:`RunEnv`: the env settings the rollout and evaluation envs are built from (with the data
section's tasks and, for ``algo.reward="judge"``, an :class:`~agentflow_env.judge.LLMJudge` as
the scorer), and the task split. The judge answers the reference's structured verdict (JSON
``{"analysis", "true_false"}``, one stage: the training data has no options); a judge that fails
(engine error, unparseable verdict) raises ``JudgeError``, which the environment turns into an
episode without an outcome (``info["infra_error"]`` of kind ``judge``, reward NaN): the trainer
plays it again or drops it, never scores it 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow_env.tasks.base import Task
from learners.envs import EnvConfig
from learners.flow_grpo.config import DataConfig, FlowGRPOConfig, resolve_model_path
from learners.flow_grpo.data import load_deepmath, load_nq, load_validation, mix
from learners.policy import Policy

__all__ = ["RunEnv", "load_data", "load_policy", "make_judge", "resolve_run_env"]


@dataclass
class RunEnv:
    """The env settings of a run and, when the data section sets them, its task split."""

    env: EnvConfig
    """cfg.env with the data's tasks and the judge (if any) as scorer"""
    train: list[Task] | None
    """training tasks from the data section; None: the env's task set (split by eval_tasks)"""
    val: list[Task] | None
    """validation tasks from the data section; None: eval_tasks held out of the training tasks"""
    judge: Any = None
    """the LLMJudge scoring outcomes (algo.reward='judge'), else None"""

    def split(self, env_tasks: list[Task], eval_tasks: int) -> tuple[list[Task], list[Task]]:
        """(train, held-out) tasks: the data section's, else ``env_tasks`` split."""
        from learners.envs import split_tasks

        tasks = self.train if self.train is not None else env_tasks
        if self.val is not None:
            return list(tasks), list(self.val)
        return split_tasks(list(tasks), eval_tasks)


def _limit(n: int) -> int | None:
    return n or None


def load_data(data: DataConfig) -> tuple[list[Task] | None, list[Task] | None]:
    """(training mix, validation) of the data section (None where it sets no source).

    Raises:
        DatasetUnavailableError: an ``hf:`` source that cannot be loaded (offline, no cache).
        FileNotFoundError, TaskLoadError: a missing file, or records not in the source's schema.
    """
    parts = []
    if data.nq is not None:
        parts.append(load_nq(data.nq, _limit(data.nq_limit)))
    if data.deepmath is not None:
        parts.append(load_deepmath(data.deepmath, _limit(data.deepmath_limit)))
    train = mix(parts, data.shuffle_seed) if parts else None
    val = load_validation(data.val, _limit(data.val_limit)) if data.val is not None else None
    return train, val


def make_judge(cfg: FlowGRPOConfig) -> Any:
    """The run's LLM judge (``algo.reward="judge"``), or None for the rule scorers."""
    if cfg.algo.reward != "judge":
        return None
    from agentflow_env.judge import LLMJudge  # lazy: engines pull optional dependencies
    from agentflow_env.llm.base import SamplingParams

    engine = cfg.algo.judge_engine if cfg.algo.judge_engine is not None else cfg.env.engine
    sampling = SamplingParams(temperature=0.0, max_tokens=cfg.algo.judge_max_tokens)
    return LLMJudge(engine, sampling, verdict="json")


def resolve_run_env(cfg: FlowGRPOConfig) -> RunEnv:
    """Load the data section's tasks and build the judge; the env settings that use them."""
    train, val = load_data(cfg.data) if cfg.data.used else (None, None)
    judge = make_judge(cfg)
    update: dict[str, Any] = {}
    if train is not None:
        # the envs' own task list (rollouts and evaluation pass the tasks they play explicitly)
        update["tasks"] = train + (val or [])
    if judge is not None:
        update["scorer"] = judge
    env = cfg.env.model_copy(update=update) if update else cfg.env
    return RunEnv(env=env, train=train, val=val, judge=judge)


def load_policy(cfg: FlowGRPOConfig) -> Policy:
    """The planner the config names (``asset:`` paths resolve to shipped checkpoints)."""
    m = cfg.model
    path = resolve_model_path(m.name_or_path)
    if m.name_or_path.startswith("asset:") and not Path(path).is_dir():
        raise FileNotFoundError(
            f"shipped checkpoint {path} is missing; rebuild it with "
            "`python -m learners.sft --preset tiny`"
        )
    return Policy.from_pretrained(
        path,
        dtype=m.dtype,
        device=m.device,
        chat_template=m.chat_template,
        lora_rank=m.lora_rank,
        lora_alpha=m.lora_alpha,
        lora_target_modules=m.lora_target_modules,
        gradient_checkpointing=m.gradient_checkpointing,
    )
