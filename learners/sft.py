"""Supervised warm start (and the paper's offline-SFT baseline): imitate a scripted planner.

``python -m learners.sft --preset tiny`` builds the shipped warm start from nothing:

1. run :class:`agentflow_env.planners.OraclePlanner` in the env on the generated Search tasks
   (the training split only; the held-out tasks stay unseen) and keep its successful episodes;
2. train a 2k byte-level BPE tokenizer on them and build a ~0.8M-parameter Qwen2;
3. train it on the demonstrations with loss on the action tokens only, laid out exactly as the
   rollout lays out prompts (prompt ids + response ids + next result's ids, ...), so the model
   samples in the same token context it was trained in;
4. evaluate held-out success (greedy) periodically and save to ``learners/assets/tiny-warmstart``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentflow_env.format import ActionFields, read_action, write_action
from agentflow_env.trajectory import info_at
from learners.config import ASSETS_DIR, to_dict
from learners.envs import EnvConfig, make_vector_env, split_tasks
from learners.packing import ScoringSequence, pack_samples
from learners.policy import Policy, SamplingSettings
from learners.rollout import TurnSample, collect, next_chat_context, next_context

logger = logging.getLogger(__name__)

__all__ = [
    "SFTConfig",
    "collect_demonstrations",
    "compact_action",
    "continue_sft",
    "demo_sequences",
    "evaluate",
    "main",
    "train_sft",
]


@dataclass
class SFTConfig:
    """Warm-start settings (the tiny preset's values are the defaults)."""

    env: EnvConfig = field(default_factory=lambda: EnvConfig(num_tasks=600))
    """the env and task world (the Flow-GRPO tiny preset's, with the 600-task split whose last 100
    questions are SFT's held-out set for the stopping rule)"""
    output_dir: str = str(ASSETS_DIR / "tiny-warmstart")
    """where the model + tokenizer are saved"""
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    batch_size: int = 16
    """trajectories per step"""
    lr: float = 2e-3
    warmup_steps: int = 100
    steps: int = 4000
    max_minutes: float = 40.0
    """stop early after this much training time"""
    eval_every: int = 50
    stop_at_success: float = 0.45
    """stop once held-out greedy success reaches this value (leaves Flow-GRPO room to improve)"""
    demo_tasks: int = 3000
    """questions generated in the same world for demonstrations (held-out questions excluded);
    more distinct questions than the RL task set keep the model from memorizing answers"""
    compact_actions: bool = True
    """keep only the oracle's Tool Name / Command / answer lines (shorter sequences for a tiny
    model)"""
    num_threads: int = 1
    """torch threads (1 is fastest on a shared 2-core machine; 0 keeps torch's default)"""
    seed: int = 0


def compact_action(action: str) -> str:
    """The action with only its tool name, command and answer (the env needs no more); text that
    is no action (neither a tool name nor an answer) is returned as it is."""
    fields = read_action(action)
    if fields.tool_name is None and fields.answer is None:
        return action
    return write_action(
        ActionFields(tool_name=fields.tool_name, command=fields.command, answer=fields.answer)
    )


def collect_demonstrations(
    env_cfg: EnvConfig, tasks: list[Any], chunk: int = 64, compact: bool = False
) -> list[dict[str, Any]]:
    """Run the oracle on ``tasks``; return its successful episodes as observations + actions
    (and, per turn, the env's chat messages, for policies that use their chat template)."""
    from agentflow_env.planners import OraclePlanner

    envs = make_vector_env(env_cfg, min(chunk, len(tasks)))
    demos: list[dict[str, Any]] = []
    try:
        for start in range(0, len(tasks), envs.num_envs):
            part = tasks[start : start + envs.num_envs]
            padded = part + [part[0]] * (envs.num_envs - len(part))
            obs, infos = envs.reset(seed=start, options={"tasks": padded})
            planners = [OraclePlanner(verbose=False) for _ in padded]
            for p, t in zip(planners, padded, strict=False):
                p.reset(t)
            eps = [
                {
                    "observations": [obs[i]],
                    "messages": [info_at(infos, i).get("messages")],
                    "actions": [],
                    "reward": None,
                }
                for i in range(len(part))
            ]
            done = [False] * len(padded)
            while not all(done):
                actions = [
                    p.act(o) if not d else "" for p, o, d in zip(planners, obs, done, strict=False)
                ]
                if compact:
                    actions = [compact_action(a) if a else a for a in actions]
                obs, rew, term, trunc, infos = envs.step(actions)
                for i in range(len(padded)):
                    if done[i]:
                        continue
                    if i < len(part):
                        eps[i]["actions"].append(actions[i])
                        eps[i]["observations"].append(obs[i])
                        eps[i]["messages"].append(info_at(infos, i).get("messages"))
                    if term[i] or trunc[i]:
                        done[i] = True
                        if i < len(part):
                            eps[i]["reward"] = float(rew[i])
            demos.extend(e for e in eps if e["reward"] == 1.0)
    finally:
        envs.close()
    return demos


def demo_sequences(policy: Policy, demos: list[dict[str, Any]]) -> list[ScoringSequence]:
    """Token layout of each demo exactly as :func:`learners.rollout.collect` builds prompts."""
    eos = policy.eos_ids[0]
    seqs: list[ScoringSequence] = []
    for d, demo in enumerate(demos):
        obs, acts, chats = demo["observations"], demo["actions"], demo.get("messages")
        chat = policy.chat_template
        if chat and not (chats and all(chats)):
            raise ValueError("demos without chat messages cannot train a chat-template policy")
        ctx = policy.chat_prompt_ids(chats[0]) if chat else policy.prompt_ids(obs[0])
        samples = []
        for k, action in enumerate(acts):
            resp = policy.text_ids(action) + [eos]
            samples.append(TurnSample(d, d, k, ctx, resp, [0.0] * len(resp), "stop", action))
            if k + 1 < len(acts) and chat:
                ctx, _, _ = next_chat_context(policy, ctx, resp, chats[k], chats[k + 1])
            elif k + 1 < len(acts):
                ctx, _ = next_context(policy, ctx, resp, obs[k], action, obs[k + 1])
        seqs.extend(pack_samples(samples))
    return seqs


def _batch(seqs: list[ScoringSequence], idx: list[int]) -> tuple[list[list[int]], list[list[bool]]]:
    return [seqs[i].ids for i in idx], [seqs[i].target_mask for i in idx]


def evaluate(
    policy: Policy, envs: Any, tasks: list[Any], max_new_tokens: int = 64, temperature: float = 0.0
) -> float:
    """Held-out success (greedy by default)."""
    rng = np.random.default_rng(0)
    total = 0.0
    for start in range(0, len(tasks), envs.num_envs):
        part = tasks[start : start + envs.num_envs]
        batch = collect(
            envs,
            policy,
            part,
            list(range(len(part))),
            SamplingSettings(temperature, 1.0, max_new_tokens),
            rng,
        )
        total += float(batch.rewards.sum())
    return total / max(len(tasks), 1)


def continue_sft(
    policy: Policy,
    env_cfg: EnvConfig,
    *,
    minutes: float,
    lr: float = 2e-4,
    batch_size: int = 16,
    seed: int = 0,
    eval_points: int = 4,
    compact: bool = True,
    eval_temperature: float = 0.0,
    eval_samples: int = 1,
) -> list[dict[str, float]]:
    """The SFT-only baseline: more supervised steps on oracle demos for a wall-clock budget.

    Returns held-out success at ``eval_points`` evenly spaced times (training time only), the
    first at 0 minutes. Used by ``benchmarks/learning.py`` against Flow-GRPO on equal time.
    With sampled evaluation each held-out task is played ``eval_samples`` times.
    """
    probe = make_vector_env(env_cfg, 1)
    train_tasks, eval_tasks = split_tasks(list(probe.tasks), env_cfg.eval_tasks)
    probe.close()
    seqs = demo_sequences(policy, collect_demonstrations(env_cfg, train_tasks, compact=compact))
    eval_envs = make_vector_env(env_cfg, min(64, max(len(eval_tasks), 1)))
    optim = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    marks = [minutes * 60 * k / max(eval_points - 1, 1) for k in range(eval_points)]

    def held_out() -> float:
        repeats = eval_samples if eval_temperature > 0 else 1
        return evaluate(policy, eval_envs, eval_tasks * repeats, temperature=eval_temperature)

    history = [{"minutes": 0.0, "step": 0, "eval_success": held_out()}]
    trained, step = 0.0, 0
    try:
        for mark in marks[1:]:
            while trained < mark:
                t0 = time.perf_counter()
                ids, masks = _batch(
                    seqs, torch.randint(len(seqs), (batch_size,), generator=gen).tolist()
                )
                policy.model.train()
                logp, _ = policy.score(ids, masks)
                optim.zero_grad(set_to_none=True)
                (-logp.mean()).backward()
                torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
                optim.step()
                step += 1
                trained += time.perf_counter() - t0
            history.append({"minutes": trained / 60, "step": step, "eval_success": held_out()})
    finally:
        eval_envs.close()
    return history


def _demo_tasks(cfg: SFTConfig, eval_tasks: list[Any]) -> list[Any]:
    """``cfg.demo_tasks`` questions of the same generated world, minus the held-out questions."""
    if cfg.env.tasks is not None:
        raise ValueError("demo_tasks > the task set needs a generated task set (env.tasks=None)")
    from agentflow_env.tasks.suite import make_suite

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.env.task_kwargs.items()}
    suite = make_suite("search", seed=cfg.env.seed, num_tasks=cfg.demo_tasks, **kwargs)
    held_out = {t.question for t in eval_tasks}
    return [t for t in suite.tasks if t.question not in held_out]


def train_sft(cfg: SFTConfig, progress: bool = True) -> dict[str, Any]:
    """Demonstrations -> tokenizer -> model -> supervised training -> saved checkpoint + report."""
    from learners.tiny import build_tiny_model, train_tiny_tokenizer

    t_start = time.perf_counter()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    probe = make_vector_env(cfg.env, 1)
    train_tasks, eval_tasks = split_tasks(list(probe.tasks), cfg.env.eval_tasks)
    probe.close()
    demo_tasks = _demo_tasks(cfg, eval_tasks) if cfg.demo_tasks > len(train_tasks) else train_tasks
    demos = collect_demonstrations(cfg.env, demo_tasks, compact=cfg.compact_actions)
    if not demos:
        raise RuntimeError(
            "the oracle solved no training task: check the env settings (max_turns vs hops)"
        )
    logger.info("%d oracle demonstrations from %d tasks", len(demos), len(demo_tasks))
    tok = train_tiny_tokenizer([d["observations"][-1] for d in demos], vocab_size=cfg.vocab_size)
    model = build_tiny_model(
        tok,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        seed=cfg.seed,
    )
    policy = Policy(model, tok)
    seqs = demo_sequences(policy, demos)
    n_params = policy.num_parameters()
    logger.info(
        "model %.2fM parameters; %d sequences, mean %.0f tokens",
        n_params / 1e6,
        len(seqs),
        np.mean([len(s.ids) for s in seqs]),
    )
    eval_envs = make_vector_env(cfg.env, min(64, max(len(eval_tasks), 1)))
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    t_train, step, loss_ema = time.perf_counter(), 0, float("nan")
    while step < cfg.steps and (time.perf_counter() - t_train) < cfg.max_minutes * 60:
        idx = torch.randint(len(seqs), (cfg.batch_size,), generator=gen).tolist()
        ids, masks = _batch(seqs, idx)
        model.train()
        logp, _ = policy.score(ids, masks)
        loss = -logp.mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        step += 1
        loss = loss.detach()
        loss_ema = float(loss) if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * float(loss)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            success = evaluate(policy, eval_envs, eval_tasks)
            history.append(
                {
                    "step": step,
                    "loss": loss_ema,
                    "eval_success": success,
                    "minutes": (time.perf_counter() - t_train) / 60,
                }
            )
            logger.info(
                "sft step %d loss %.3f held-out success %.3f (%.1f min)",
                step,
                loss_ema,
                success,
                history[-1]["minutes"],
            )
            _save(policy, cfg, history, len(demos), step)  # a usable checkpoint at every evaluation
            if success >= cfg.stop_at_success:
                break
    if not history or history[-1]["step"] != step:
        history.append(
            {
                "step": step,
                "loss": loss_ema,
                "eval_success": evaluate(policy, eval_envs, eval_tasks),
                "minutes": (time.perf_counter() - t_train) / 60,
            }
        )
    eval_envs.close()
    report = _save(policy, cfg, history, len(demos), step)
    report["total_minutes"] = (time.perf_counter() - t_start) / 60
    (Path(cfg.output_dir) / "sft_report.json").write_text(json.dumps(report, indent=2))
    return report


def _save(
    policy: Policy, cfg: SFTConfig, history: list[dict[str, float]], demos: int, step: int
) -> dict[str, Any]:
    out = policy.save(cfg.output_dir)
    report = {
        "config": to_dict(cfg),
        "demonstrations": demos,
        "parameters": policy.num_parameters(),
        "steps": step,
        "history": history,
        "final_eval_success": history[-1]["eval_success"],
    }
    (out / "sft_report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m learners.sft",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=["tiny"], default="tiny", help="warm-start recipe")
    parser.add_argument(
        "--output-dir", default=None, help="where to save (default: the shipped asset directory)"
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    parser.add_argument(
        "--eval-every", type=int, default=None, help="steps between held-out evaluations"
    )
    parser.add_argument(
        "--stop-at-success",
        type=float,
        default=None,
        help="stop once held-out greedy success reaches this value",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the model init and batch order"
    )
    parser.add_argument(
        "--num-threads", type=int, default=None, help="torch threads (0: torch's default)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = SFTConfig()
    for name in (
        "output_dir",
        "steps",
        "max_minutes",
        "eval_every",
        "stop_at_success",
        "seed",
        "num_threads",
    ):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    report = train_sft(cfg)
    print(
        f"sft: {report['steps']} steps, {report['total_minutes']:.1f} min, held-out success "
        f"{report['final_eval_success']:.2f} -> {cfg.output_dir}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
