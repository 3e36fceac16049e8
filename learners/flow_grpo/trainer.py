"""The Flow-GRPO loop: rollout -> advantages -> micro-batched update -> weight sync -> evaluation.

Read top to bottom: :meth:`FlowGRPOTrainer.train` runs steps; a step collects complete groups
(:func:`learners.rollout.collect_groups`), computes per-turn advantages with the configured
estimator, drops zero-variance groups (unless configured to keep them), and runs ``algo.epochs``
x ``algo.mini_batches`` optimizer steps (or one per ``algo.mini_batch_rows`` turn rows), each
accumulating gradients over micro-batches of packed sequences, all-reducing them across ranks and
clipping them. Rank 0 writes TensorBoard scalars, trajectories
(EpisodeRecord JSONL, the viewer's format; rank r > 0 writes ``trajectories-rank{r}.jsonl``) and
atomic checkpoints; ``resume`` restores model, optimizer, random state and step exactly and rolls
the trajectories and events written after that checkpoint back (:mod:`learners.flow_grpo.rundir`).
Episodes whose outcome infrastructure lost are played again in their group's place
(``rollout.infra_retries`` rounds), never counted as 0: they stay out of the group statistics
and the update, a group left with fewer than two valid trajectories is dropped, and
``rollout/infra_failed`` counts them.
With ``rollout.max_staleness = k > 0`` the rollouts (infra resampling included) come from up to
k + 1 collector threads (``rollout.collectors``) that sample with weights k updates old
(:mod:`learners.flow_grpo.async_rollout`) while the update runs; a resumed async run draws the
same queries but its first k steps sample with the resumed weights (older ones are not
checkpointed). The held-out evaluation (success and pass@k)
is :mod:`learners.flow_grpo.evaluation`.
With ``train.distributed='fsdp'`` the policy (and reference) are sharded; rollouts run inside
``policy.gathered()`` and every rank runs the same number of micro-batches (see
:mod:`learners.distributed` for why).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentflow_env.runfiles import WriteMode, atomic_write_text
from learners.checkpoint import full_state, latest_checkpoint, load_checkpoint, save_checkpoint
from learners.distributed import Dist, init_distributed, resolve_num_threads
from learners.envs import make_vector_env
from learners.flow_grpo.advantages import compute_advantages
from learners.flow_grpo.async_rollout import RolloutWorker, StepPlan
from learners.flow_grpo.collection import collect_step
from learners.flow_grpo.config import FlowGRPOConfig, resolve_model_path
from learners.flow_grpo.evaluation import HeldOutEval
from learners.flow_grpo.loss import aggregation_weights, policy_loss
from learners.flow_grpo.offpolicy import decoupled, per_token
from learners.flow_grpo.old_logprobs import recompute_old_logprobs
from learners.flow_grpo.rundir import (
    append_trajectories,
    claim_run_dir,
    rollback_events,
    rollback_trajectories,
    trajectory_file,
    write_final,
)
from learners.flow_grpo.runenv import load_policy, resolve_run_env
from learners.flow_grpo.scalars import progress_bar, progress_line, reduce_rollout_stats
from learners.flow_grpo.schedule import kept_samples, mini_batch_indices
from learners.packing import ScoringSequence, pack_samples
from learners.policy import HFGenerator, Policy, SamplingSettings
from learners.rollout import PrefixBreakLog, RolloutBatch, TurnSample

logger = logging.getLogger(__name__)

__all__ = ["FlowGRPOTrainer", "load_policy"]

_LOSS_STATS = [
    "train/clip_frac",
    "train/entropy",
    "train/kl",
    "train/loss",
    "train/pg_loss",
    "train/ratio",
]


class FlowGRPOTrainer:
    """Owns the policy, reference, optimizer, envs, logger and the step counter."""

    def __init__(
        self, cfg: FlowGRPOConfig, policy: Policy | None = None, dist: Dist | None = None
    ) -> None:
        self.cfg = cfg.validate()
        self.dist = dist or init_distributed(cfg.train.distributed)
        threads = resolve_num_threads(cfg.train.num_threads)
        if threads > 0:
            torch.set_num_threads(threads)
        self.out = Path(cfg.output_dir)
        self.policy = policy or load_policy(cfg)
        if isinstance(self.policy.generator, HFGenerator):
            self.policy.generator.max_batch_size = cfg.rollout.generation_batch_size
        if cfg.rollout.backend == "vllm":
            self.policy.use_vllm(
                resolve_model_path(cfg.model.name_or_path),
                dtype=cfg.model.dtype,
                gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
                seed=cfg.seed,
            )
        self.dist.broadcast_params(self.policy.model)
        self.ref: Policy | None = None
        if cfg.algo.kl_coef > 0 and not self.policy.is_lora:
            self.ref = self.policy.frozen_copy()
        if self.dist.fsdp:  # before the optimizer: sharding replaces the parameters
            self.policy.shard(self.dist.world_size)
            if self.ref is not None:
                self.ref.shard(self.dist.world_size)
        self.scorer = self.policy.scorer
        self.params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.algo.lr, weight_decay=cfg.algo.weight_decay
        )
        # One generator shared (same seed) by all ranks: they draw the same queries and seeds.
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.prefix_log = PrefixBreakLog()
        """logs each kind of prompt prefix break once per run (chat templates that rewrite turns)"""
        self.history: dict[str, list[list[float]]] = {"eval": []}
        """eval: [step, held-out success, training seconds so far (rollout + update, no eval)]"""
        self.train_seconds = 0.0
        self._last_step_seconds = 0.0
        self._saved_step: int | None = None
        B, G, W = cfg.rollout.queries_per_step, cfg.rollout.group_size, self.dist.world_size
        self.local_queries = len(range(self.dist.rank, B, W))
        if self.local_queries == 0:
            raise ValueError(
                f"rollout.queries_per_step={B} < {W} ranks: every rank needs at least one query"
            )
        self.run_env = resolve_run_env(cfg)  # the data section's tasks, the judge as scorer
        self.envs = make_vector_env(self.run_env.env, self.local_queries * G)
        self.train_tasks, self.eval_tasks = self.run_env.split(
            list(self.envs.tasks), cfg.env.eval_tasks
        )
        self.evaluator = HeldOutEval(self.run_env.env, self.eval_tasks, self.dist, cfg.seed)
        self.last_eval_episodes = 0
        """episodes the latest evaluation played (all ranks)"""
        self.last_eval_pass_at_k: dict[int, float] = {}
        """pass@k (k = 1..eval_samples) of the latest sampled evaluation"""
        self._pipeline: RolloutWorker | None = None
        """the rollout worker of asynchronous runs (rollout.max_staleness > 0)"""
        self._plan_rng_state: dict[str, Any] | None = None
        """async: the generator's state after the current step's plan (what a checkpoint keeps)"""
        self.writer: Any = None

    # ------------------------------------------------------------------------------- loop
    def train(self, resume: bool = False, overwrite: bool = False) -> dict[str, float]:
        """Run to ``train.total_steps``; returns ``{"eval_before", "eval_after"}``.

        ``output_dir`` must not hold another run unless ``resume`` continues it or ``overwrite``
        replaces it (:func:`learners.flow_grpo.rundir.claim_run_dir` raises ``OutputPathError``).
        """
        cfg = self.cfg
        mode: WriteMode = "resume" if resume else "overwrite" if overwrite else "new"
        if self.dist.is_main:
            claim_run_dir(self.out, mode)
        self.dist.barrier()
        if resume:
            self.resume()
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
            self.writer = SummaryWriter(str(self.out / "tb"))
        if not self.history["eval"] and self.eval_tasks:
            self._log_eval(self.evaluate())
        with progress_bar(cfg.train.progress and self.dist.is_main) as progress:
            task = progress.add_task(
                "flow-grpo", total=cfg.train.total_steps, completed=self.step, info=""
            )
            while self.step < cfg.train.total_steps and not self._time_up():
                t_step = time.perf_counter()
                stats = self.train_step()
                self._last_step_seconds = time.perf_counter() - t_step
                self.train_seconds += self._last_step_seconds
                self.step += 1
                self._log(stats)
                last = self.step == cfg.train.total_steps or self._time_up()
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and not last:
                    self._log_eval(self.evaluate())
                if (
                    cfg.train.checkpoint_every
                    and self.step % cfg.train.checkpoint_every == 0
                    and not last
                ):
                    self.save()
                last_eval = self.history["eval"][-1][1] if self.history["eval"] else float("nan")
                progress.update(task, completed=self.step, info=progress_line(stats, last_eval))
        if self.eval_tasks and (
            not self.history["eval"] or self.history["eval"][-1][0] != self.step
        ):
            self._log_eval(self.evaluate())
        self.save()
        prints = self.dist.fingerprints(self.policy.model)
        final = full_state(self.policy.model, sharded=True)[0] if self.dist.fsdp else None
        if self.dist.is_main:
            write_final(self.out, self.policy, final, self.dist.world_size, self.step, prints)
            if self.writer is not None:
                self.writer.close()
        evals = [e[1] for e in self.history["eval"]]
        return {
            "eval_before": evals[0] if evals else float("nan"),
            "eval_after": evals[-1] if evals else float("nan"),
        }

    def _time_up(self) -> bool:
        """True when another step would end past ``train.max_minutes`` of training time.

        The budget is never exceeded: a step is started only if the time spent plus the last
        step's duration fits. Ranks agree (mean over ranks of both numbers).
        """
        limit = self.cfg.train.max_minutes
        if limit <= 0:
            return False
        spent, last = self.dist.all_reduce_sum([self.train_seconds, self._last_step_seconds])
        return (spent + last) / self.dist.world_size > 60 * limit

    def train_step(self) -> dict[str, float]:
        """One rollout + update. Returns the step's scalars (reduced across ranks)."""
        if self.cfg.rollout.max_staleness > 0 or self._pipeline is not None:
            return self._async_step()
        t0 = time.perf_counter()
        batch, roll_rng = self._collect(
            self.policy, self.envs, self._plan(self.step + 1), self.step
        )
        t_roll = time.perf_counter()
        stats = self._learn(batch, roll_rng)
        t_end = time.perf_counter()
        stats["time/rollout_s"] = t_roll - t0
        stats["time/update_s"] = t_end - t_roll
        stats["time/generated_tokens_per_s"] = stats.pop("_gen_tokens") / max(t_roll - t0, 1e-9)
        return stats

    def _plan(self, step: int) -> StepPlan:
        """Draw step ``step``'s queries and seed (steps are drawn in order, by every rank alike)."""
        B = self.cfg.rollout.queries_per_step
        queries = self.rng.choice(len(self.train_tasks), size=B, replace=len(self.train_tasks) < B)
        seed = int(self.rng.integers(2**31))
        return StepPlan(step, queries, seed, self.rng.bit_generator.state)

    def _collect(
        self, policy: Policy, envs: Any, plan: StepPlan, version: int
    ) -> tuple[RolloutBatch, np.random.Generator]:
        """This rank's groups of ``plan`` sampled by ``policy`` (weights ``version``) in ``envs``
        (the trainer's or an async collector's own): :func:`collection.collect_step`."""
        args = (self.cfg.rollout, self.dist, self.train_tasks, self.prefix_log)
        return collect_step(*args, policy, envs, plan, version)

    def _learn(self, batch: RolloutBatch, roll_rng: np.random.Generator) -> dict[str, float]:
        """Advantages, update, weight sync, trajectories and the rollout's scalars."""
        a = self.cfg.algo
        options = {"omega": a.gigpo_omega, "gamma": a.gigpo_gamma} if a.estimator == "gigpo" else {}
        advantages = compute_advantages(
            a.estimator, batch.advantage_inputs(), scale_by_std=a.scale_by_std, **options
        )
        keep, skipped, thin = kept_samples(batch, a.skip_zero_variance_groups, self.step + 1)
        update = self.update([batch.samples[k] for k in keep], advantages[keep], roll_rng)
        self.policy.sync_generator()
        self._write_trajectories(batch)
        stats = reduce_rollout_stats(
            self.dist,
            batch,
            list(self.envs.flow.tools),
            self.cfg.rollout.queries_per_step,
            skipped,
            thin,
        )
        stats.update(update)
        return stats

    def use_rollout_worker(self, lag: int, collectors: int = 0) -> RolloutWorker:
        """Collect every later step's rollout on ``collectors`` threads (0: lag + 1) ``lag``
        updates behind (:mod:`learners.flow_grpo.async_rollout`; ``rollout.max_staleness`` does
        this at the first step). ``lag = 0`` samples exactly what the synchronous loop samples."""
        if self._pipeline is not None:
            self._pipeline.close()
        self._pipeline = RolloutWorker(
            self.policy,
            self._collect,
            self._plan,
            lag,
            self.cfg.train.total_steps,
            collectors=collectors,
            envs=self.envs,
            make_envs=partial(make_vector_env, self.run_env.env, self.envs.num_envs),
        )
        return self._pipeline

    def _async_step(self) -> dict[str, float]:
        """Take the rollout the worker made for this step, update, queue a later step's job."""
        r = self.cfg.rollout
        pipe = self._pipeline or self.use_rollout_worker(r.max_staleness, r.collectors)
        t0 = time.perf_counter()
        rollout = pipe.take(self.step + 1, self.policy.model)
        t_roll = time.perf_counter()
        self._plan_rng_state = rollout.plan.rng_state
        stats = self._learn(rollout.batch, rollout.rng)
        pipe.updated(self.step + 1, self.policy.model)
        t_end = time.perf_counter()
        stats["time/rollout_s"] = t_roll - t0  # the wait: what the overlap did not hide
        stats["time/update_s"] = t_end - t_roll
        stats["time/rollout_worker_s"] = rollout.seconds
        stats["time/generated_tokens_per_s"] = stats.pop("_gen_tokens") / max(rollout.seconds, 1e-9)
        stats["rollout/policy_lag"] = float(self.step - rollout.version)
        return stats

    # ----------------------------------------------------------------------------- update
    def update(
        self, samples: list[TurnSample], advantages: np.ndarray, rng: np.random.Generator
    ) -> dict[str, float]:
        """``epochs`` x ``mini_batches`` optimizer steps over the kept samples (with
        ``algo.mini_batch_rows``: one per that many turn rows, see :func:`mini_batch_indices`).

        With ``algo.recompute_old_logprobs`` (default with vLLM) the samples' old log-probs are
        first replaced by the trainer's own, once, before the first optimizer step.
        """
        a = self.cfg.algo
        recomputed: dict[str, float] = {}
        tis: list[list[float]] | None = None
        if a.tis_cap > 0:  # ratio against the update's starting weights, IS-corrected to behaviour
            # (this pass is the trainer's own forward: it also does what recomputation would)
            samples, tis = decoupled(self.policy, samples, a, self.cfg.rollout.temperature)
        elif self.cfg.recomputes_old_logprobs:  # every rank, even one without samples (FSDP)
            t0 = time.perf_counter()
            samples, recomputed = recompute_old_logprobs(
                self.policy,
                samples,
                temperature=self.cfg.rollout.temperature,
                pack=a.pack_turns,
                micro_batch_size=a.micro_batch_size,
                module=self.scorer,
                dist=self.dist,
            )
            recomputed["time/recompute_old_logprobs_s"] = time.perf_counter() - t0
        totals: dict[str, float] = defaultdict(float)
        n_opt, tokens, seconds = 0, 0, 0.0
        # mini_batch_rows counts rows over all ranks (verl's global mini-batch): each rank cuts its
        # share, and all ranks run as many optimizer steps (the short ones on empty batches)
        world = self.dist.world_size
        rows = -(-a.mini_batch_rows // world)
        for _ in range(a.epochs):
            batches = mini_batch_indices(samples, a.mini_batches, rows, rng)
            if world > 1 and rows:
                n = int(self.dist.all_reduce_max([len(batches)])[0])
                batches += [[] for _ in range(n - len(batches))]
            for idx in batches:
                t0 = time.perf_counter()
                result = self._optimizer_step(
                    [samples[k] for k in idx], advantages[idx], tis and [tis[k] for k in idx]
                )
                seconds += time.perf_counter() - t0
                if result is None:
                    continue
                n_opt += 1
                tokens += int(result.pop("_tokens"))
                for key, value in result.items():
                    totals[key] += value
        stats = {k: v / n_opt for k, v in totals.items()} if n_opt else {}
        stats.update(recomputed)
        stats["train/optimizer_steps"] = float(n_opt)
        stats["time/tokens_per_s"] = tokens / seconds if seconds > 0 else 0.0
        return stats

    def _optimizer_step(
        self,
        samples: list[TurnSample],
        advantages: np.ndarray,
        tis: list[list[float]] | None = None,
    ) -> dict[str, float] | None:
        """Accumulate over micro-batches, all-reduce, clip, step. None when no rank has data.

        ``tis``: per sample, each token's truncated importance weight (``algo.tis_cap``)."""
        a, temp = self.cfg.algo, self.cfg.rollout.temperature
        seqs = pack_samples(samples, pack=a.pack_turns)
        local_tokens = sum(s.num_targets for s in seqs)
        local_samples = len({t for s in seqs for t in s.token_sample})
        global_tokens, global_samples = self.dist.all_reduce_sum([local_tokens, local_samples])
        if global_tokens == 0:
            return None
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = defaultdict(float)
        micros: list[tuple[list[ScoringSequence], torch.Tensor, torch.Tensor | None]] = []
        token_tis = per_token(seqs, tis) if tis is not None else None
        if local_tokens:
            sample_index = torch.tensor([t for s in seqs for t in s.token_sample])
            weights = aggregation_weights(sample_index, a.loss_agg)
            # Local weights sum to 1; rescale so all ranks together sum to 1.
            weights *= (
                (local_tokens / global_tokens)
                if a.loss_agg == "token-mean"
                else (local_samples / global_samples)
            )
            seqs_order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))  # less padding
            offsets = np.cumsum([0] + [s.num_targets for s in seqs])
            for start in range(0, len(seqs_order), a.micro_batch_size):
                chunk = seqs_order[start : start + a.micro_batch_size]
                micros.append(
                    (
                        [seqs[i] for i in chunk],
                        torch.cat([weights[offsets[i] : offsets[i + 1]] for i in chunk]),
                        None
                        if token_tis is None
                        else torch.tensor([w for i in chunk for w in token_tis[i]]),
                    )
                )
        n_micro = len(micros)
        if self.dist.fsdp:  # FSDP collectives in every forward/backward: all ranks run as many
            n_micro = int(self.dist.all_reduce_max([n_micro])[0])
        self.policy.model.train()
        for k in range(n_micro):
            if k < len(micros):
                micro, weights, is_weights = micros[k]
                self._micro_step(micro, weights, advantages, temp, stats, is_weights)
            else:  # zero weight: an exactly zero gradient, only there to match the other ranks
                pad = ScoringSequence([self.policy.pad_id] * 2, [False, True], [0], [0.0])
                self._micro_step(
                    [pad], torch.zeros(1, dtype=torch.float64), np.zeros(1), temp, stats
                )
        self.dist.all_reduce_grads(self.params)  # DDP: sum over ranks (FSDP summed in backward)
        # Global L2 norm: under FSDP the gradients are DTensor shards and the norm is reduced over
        # ranks.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, a.max_grad_norm)
        self.optimizer.step()
        keys = _LOSS_STATS  # a fixed list: a rank without data must still join the all-reduce
        reduced = self.dist.all_reduce_sum([stats.get(k, 0.0) for k in keys])
        out = dict(zip(keys, reduced, strict=False))
        out["train/grad_norm"] = float(grad_norm)
        out["_tokens"] = global_tokens
        return out

    def _micro_step(
        self,
        micro: list[ScoringSequence],
        weights: torch.Tensor,
        advantages: np.ndarray,
        temperature: float,
        stats: dict[str, float],
        is_weights: torch.Tensor | None = None,
    ) -> None:
        a = self.cfg.algo
        ids = [s.ids for s in micro]
        masks = [s.target_mask for s in micro]
        sample_idx = [t for s in micro for t in s.token_sample]
        old = torch.tensor([x for s in micro for x in s.old_logprobs], dtype=torch.float32)
        adv = torch.as_tensor(advantages[sample_idx], dtype=torch.float32)
        ref_logp = None
        if a.kl_coef > 0:
            with torch.no_grad():
                if self.ref is not None:
                    ref_logp, _ = self.ref.score(ids, masks, temperature=temperature)
                else:  # LoRA: the reference is the base model with adapters switched off
                    with self.policy.model.disable_adapter():
                        ref_logp, _ = self.policy.score(ids, masks, temperature=temperature)
        logp, ent = self.policy.score(
            ids, masks, temperature=temperature, with_entropy=True, module=self.scorer
        )
        dev = logp.device
        out = policy_loss(
            logp,
            old.to(dev),
            adv.to(dev),
            weights.to(dev),
            clip_low=a.clip_low,
            clip_high=a.clip_high,
            ref_logp=ref_logp,
            kl_coef=a.kl_coef,
            entropy=ent,
            entropy_coef=a.entropy_coef,
            dual_clip=a.dual_clip,
            is_weights=None if is_weights is None else is_weights.to(dev),
        )
        out.loss.backward()
        stats["train/loss"] += float(out.loss.detach())
        stats["train/pg_loss"] += out.pg_loss
        stats["train/kl"] += out.kl
        stats["train/clip_frac"] += out.clip_frac
        stats["train/entropy"] += out.entropy
        stats["train/ratio"] += out.ratio_mean

    # ------------------------------------------------------------------------- evaluation
    def evaluate(self) -> float:
        """Mean held-out success over ``eval_samples`` episodes per task, split across ranks
        (:mod:`learners.flow_grpo.evaluation`); also sets :attr:`last_eval_pass_at_k`."""
        cfg = self.cfg
        samples = 1 if cfg.train.eval_temperature == 0 else cfg.train.eval_samples
        settings = SamplingSettings(cfg.train.eval_temperature, 1.0, cfg.rollout.max_new_tokens)
        result = self.evaluator.run(
            self.policy, self.step, samples, settings, cfg.rollout.max_prompt_tokens
        )
        self.last_eval_episodes, self.last_eval_pass_at_k = result.episodes, result.pass_at_k
        return result.success

    # ---------------------------------------------------------------------------- logging
    def _log(self, stats: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in stats.items():
            self.writer.add_scalar(key, value, self.step)
        self.writer.flush()

    def _log_eval(self, success: float) -> None:
        self.history["eval"].append([self.step, success, self.train_seconds])
        logger.info("step %d eval/success %.3f", self.step, success)
        if self.writer is not None:
            self.writer.add_scalar("eval/success", success, self.step)
            for k, value in self.last_eval_pass_at_k.items():
                self.writer.add_scalar(f"eval/pass@{k}", value, self.step)
            self.writer.flush()

    @property
    def trajectory_path(self) -> Path:
        """This rank's trajectory file (EpisodeRecord JSONL; ``python -m agentflow_env.view``)."""
        return trajectory_file(self.out, self.dist.rank)

    def _write_trajectories(self, batch: RolloutBatch) -> None:
        if self.cfg.train.save_trajectories:
            append_trajectories(self.trajectory_path, batch.trajectories + batch.replaced)

    # ------------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Atomic checkpoint on rank 0 (DDP: all ranks hold identical parameters; FSDP:
        gathered)."""
        if self._saved_step == self.step:  # e.g. a resumed run with no step left to play
            return
        # Under FSDP every rank joins the gathering; only rank 0 gets (and writes) the full state.
        model, optim = full_state(self.policy.model, self.optimizer, sharded=self.dist.fsdp)
        if self.dist.is_main:
            save_checkpoint(
                self.out / "checkpoints",
                self.step,
                model=model,
                optimizer=optim,
                state={
                    # async: later steps' plans are drawn already; keep the state after this one
                    "rng": self._plan_rng_state or self.rng.bit_generator.state,
                    "history": self.history,
                    "train_seconds": self.train_seconds,
                    "config": self.cfg.to_dict(),
                },
            )
        self._saved_step = self.step
        self.dist.barrier()

    def resume(self) -> bool:
        """Restore the newest complete checkpoint under ``output_dir`` and roll back what was
        written after it; False when there is none (the run starts over, its files emptied)."""
        path = latest_checkpoint(self.out / "checkpoints")
        if path is None:
            logger.warning(
                "no checkpoint under %s: starting from scratch", self.out / "checkpoints"
            )
            self._rollback(-1)  # everything, the step-0 evaluation too: it is played again
            return False
        state = load_checkpoint(
            path, model=self.policy.model, optimizer=self.optimizer, sharded=self.dist.fsdp
        )
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.history = state["history"]
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self._saved_step = self.step
        self._rollback(self.step)
        self.policy.sync_generator()
        logger.info("resumed from %s at step %d", path, self.step)
        return True

    def _rollback(self, step: int) -> None:
        """Drop the records of steps after ``step``: they are played again."""
        rollback_trajectories(self.trajectory_path, step)
        if self.dist.is_main:
            rollback_events(self.out / "tb", step)
        self.dist.barrier()

    def __enter__(self) -> FlowGRPOTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the rollout worker; close the rollout and evaluation envs (their tools and
        sandboxes) and the judge."""
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        self.envs.close()
        self.evaluator.close()
        judge = self.run_env.judge  # its engine is its own (built from the spec)
        if judge is not None and callable(getattr(judge.engine, "close", None)):
            judge.engine.close()
