"""The trainer's held-out evaluation reports pass@k (k = 1..eval_samples) next to success."""

from __future__ import annotations

from pathlib import Path

import pytest

from learners.flow_grpo.config import make_config
from learners.flow_grpo.evaluation import HeldOutEval
from learners.flow_grpo.trainer import FlowGRPOTrainer
from learners.policy import SamplingSettings


def test_sampled_evaluation_reports_pass_at_k(tiny_model_dir: Path, tmp_path: Path) -> None:
    overrides = {
        "model.name_or_path": str(tiny_model_dir),
        "output_dir": str(tmp_path / "run"),
        "train.eval_samples": 3,
        "train.eval_temperature": 1.0,
        "train.progress": False,
        "train.num_threads": 1,
        "rollout.queries_per_step": 2,
        "rollout.max_new_tokens": 12,
        "env.num_tasks": 30,
        "env.eval_tasks": 5,
        "env.max_turns": 2,
    }
    with FlowGRPOTrainer(make_config("tiny", overrides=overrides)) as trainer:
        success = trainer.evaluate()
        curve = trainer.last_eval_pass_at_k
        assert trainer.last_eval_episodes == 15 and sorted(curve) == [1, 2, 3]
        assert curve[1] == pytest.approx(success)  # 0/1 rewards, 3 samples of every task
        assert curve[1] <= curve[2] <= curve[3] <= 1.0
        # Seeded by the run's seed and the step: the same episodes give the same numbers.
        evaluator = HeldOutEval(trainer.cfg.env, trainer.eval_tasks, trainer.dist, 0)
        try:
            settings = SamplingSettings(1.0, 1.0, 12)
            again = evaluator.run(trainer.policy, trainer.step, 3, settings, 1024)
        finally:
            evaluator.close()
        assert again.success == success and again.pass_at_k == curve
        greedy = trainer.cfg
        greedy.train.eval_temperature = 0.0
        trainer.evaluate()
        assert trainer.last_eval_episodes == 5 and trainer.last_eval_pass_at_k == {}
