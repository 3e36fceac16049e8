"""Flow-GRPO configuration: nested sections, one documented line per field, two presets.

The sections are dataclasses, except ``env``: :class:`learners.envs.EnvConfig`, the env's own
settings model extended. Every field's docstring (the string literal under it) becomes its
``--help`` text in ``python -m learners.flow_grpo`` (:mod:`learners.config`). Values come, in
order of precedence, from the command line, a ``--config`` file (JSON or TOML, nested like the
sections), then the preset (``tiny``, the offline CPU default, or ``paper``, the authors'
training values).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentflow_env.tool_registry import LLM_TOOLS, expand_toolsets
from learners.config import (
    ASSETS_DIR,
    ConfigError,
    apply_overrides,
    field_docs,
    load_config_file,
    resolve_model_path,
    to_dict,
)
from learners.envs import EnvConfig
from learners.flow_grpo.data import AIME24_HF, DEEPMATH_HF, NQ_HF

__all__ = [
    "ASSETS_DIR",
    "PRESETS",
    "AlgoConfig",
    "ConfigError",
    "DataConfig",
    "EnvConfig",
    "FlowGRPOConfig",
    "ModelConfig",
    "RolloutConfig",
    "TrainConfig",
    "apply_overrides",
    "field_docs",
    "load_config_file",
    "make_config",
    "resolve_model_path",
]


@dataclass
class ModelConfig:
    """The trainable planner."""

    name_or_path: str = "asset:tiny-warmstart"
    """model to train: a local directory, a Hugging Face id, or asset:NAME for a shipped
    checkpoint"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """parameter dtype (bfloat16 on GPUs for large models; float32 on CPU)"""
    device: str = "auto"
    """torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."""
    chat_template: bool = False
    """prompts are the env's chat messages (info['messages']) under the tokenizer's chat template
    (instruct models); turns are packed only where each prompt extends the last one; False = the
    raw text observation"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass to save memory"""
    lora_rank: int = 0
    """LoRA rank (needs peft); 0 trains all parameters"""
    lora_alpha: int = 32
    """LoRA scaling numerator"""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """module names LoRA adapts"""


@dataclass
class RolloutConfig:
    """How groups of trajectories are sampled."""

    queries_per_step: int = 64
    """queries (groups) per training step"""
    group_size: int = 4
    """trajectories sampled per query; advantages are normalized within the group (the tiny preset
    takes 64 queries x 4 over 32 x 8: more distinct questions per step learned faster on held-out
    ones)"""
    temperature: float = 1.0
    """sampling temperature of training rollouts (log-probs use the same temperature)"""
    top_p: float = 1.0
    """nucleus sampling; below 1.0 the sampled distribution differs from the trained one"""
    max_new_tokens: int = 64
    """maximum tokens of one planner action"""
    max_prompt_tokens: int = 1024
    """longest planner prompt; longer trajectories are cut at the turn that exceeds it"""
    generation_batch_size: int = 64
    """transformers backend: contexts per generate call, grouped by length (on a CPU, chunks of 64
    sampled a 256-episode turn 1.6x faster than one batch: less padding, earlier stops)"""
    backend: Literal["transformers", "vllm"] = "transformers"
    """generation backend: transformers generate (CPU/GPU) or vLLM in-process (GPU)"""
    vllm_gpu_memory_utilization: float = 0.4
    """fraction of GPU memory vLLM may take (the trainer needs the rest)"""
    infra_retries: int = 2
    """rounds of playing a query again in the same step for episodes whose outcome
    infrastructure lost (an engine, tool or judge failing): such episodes are never scored 0;
    a group left with fewer than two valid episodes is dropped"""
    constrained: bool = False
    """hold sampled actions to the action grammar (as evaluate --planner-constrained); refused
    while the loss scores actions without the grammar's token mask (see validate)"""
    max_staleness: int = 0
    """asynchronous rollouts: k > 0 collects the rollouts of coming steps on a worker thread
    with its own copy of the weights while the update runs; step t samples with the weights
    after update t-1-k (exactly k updates old, so runs stay reproducible) and the loss's ratio
    uses those behaviour log-probs. 0: the synchronous loop (transformers backend, no FSDP)"""
    collectors: int = 0
    """asynchronous rollouts: collector threads, each with its own copy of the model and its own
    training env set (tools, search index, sandboxes: memory grows with each), collecting up to
    that many steps' rollouts at once (a step's rollout is waiting on engines and tools most of
    the time when modules or tools are remote); 0: max_staleness + 1, the most whose weights
    exist at once. Must be <= max_staleness + 1; the same seed gives the same parameters
    whatever the count"""


@dataclass
class AlgoConfig:
    """Advantages, loss and optimizer."""

    estimator: str = "flow_grpo"
    """advantage estimator: flow_grpo, flow_grpo_turn_norm, last_turn, gigpo (or a registered
    one)"""
    gigpo_omega: float = 1.0
    """gigpo: weight of the step-level advantage (turns that acted on an identical observation,
    compared by discounted return) added to the episode-level one (the paper's omega = 1)"""
    gigpo_gamma: float = 0.95
    """gigpo: discount of the step-level returns (an outcome k turns later counts gamma^k; the
    paper's 0.95)"""
    scale_by_std: bool = True
    """divide advantages by the group's reward std (False: only subtract the group mean)"""
    skip_zero_variance_groups: bool = True
    """drop groups whose trajectories all got the same reward (they carry no policy gradient);
    False keeps them, as the reference does: their zero advantages still carry the KL term and
    count in the token mean"""
    clip_low: float = 0.2
    """lower clip range: ratios below 1 - clip_low stop contributing gradient"""
    clip_high: float = 0.2
    """upper clip range: ratios above 1 + clip_high stop contributing gradient"""
    tis_cap: float = 0.0
    """truncated importance weights for stale rollouts (rollout.max_staleness > 0): C > 0 clips
    the ratio against the weights at the start of the update (one extra scoring pass) and
    weights each token by min(pi_start / pi_behaviour, C); 0: the ratio is taken against the
    behaviour log-probs directly"""
    kl_coef: float = 0.0
    """weight of the k3 KL estimate to the frozen reference policy (a loss term); 0 disables"""
    entropy_coef: float = 0.0
    """weight of the entropy bonus"""
    loss_agg: Literal["token-mean", "seq-mean"] = "token-mean"
    """loss aggregation: mean over all action tokens, or mean over turns of per-turn token means"""
    lr: float = 5e-4
    """AdamW learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient clipping norm (global L2)"""
    epochs: int = 1
    """passes over each rollout batch"""
    mini_batches: int = 2
    """optimizer steps per epoch (the batch's trajectories are split into this many parts) when
    algo.mini_batch_rows is 0"""
    mini_batch_rows: int = 0
    """turn rows per optimizer step: each epoch shuffles the kept turn rows and steps once per
    this many (the last step takes the rest), as the reference's verl does with its 64 rows (8
    queries x 8 samples); 0: split by trajectory into algo.mini_batches parts"""
    dual_clip: float = 0.0
    """dual-clip constant c > 1 (the reference's verl: 3): a token with a negative advantage
    loses at most -A c, however far its ratio grew; 0 disables"""
    micro_batch_size: int = 64
    """sequences per forward/backward pass (gradients accumulate over micro-batches)"""
    pack_turns: bool = True
    """score all turns of a trajectory in one sequence when its prompts are append-only"""
    reward: Literal["rules", "judge"] = "rules"
    """outcome reward: rules (each task's rule scorer) or judge (an LLM judge's structured
    true/false verdict, the reference's training reward; a judge failure is an infrastructure
    failure: reported, excluded, never a 0)"""
    judge_engine: str | None = None
    """engine spec of the judge (openai:MODEL@URL, openai:MODEL, hf:PATH, python:mod:fn); none:
    env.engine"""
    judge_max_tokens: int = 512
    """the judge's reply budget (greedy); a verdict cut short is a judge failure"""
    recompute_old_logprobs: bool | None = None
    """take the ratio's denominator from the trainer's own forward pass over the sampled tokens
    before the update (as verl does) instead of the sampler's reported log-probs; none: on for
    the vllm backend (its log-probs come from other kernels and precision), off for transformers
    (which samples from the trained weights and reports the loss's distribution)"""


@dataclass
class DataConfig:
    """Training and validation data beyond the env's task set (the paper's: NQ + DeepMath-103K,
    validated on AIME24; learners.flow_grpo.data)."""

    nq: str | None = None
    """Natural Questions: hf:RUC-NLPIR/FlashRAG_datasets (config nq, split train) or a local
    JSON/JSONL/Parquet file of {id, question, golden_answers}; none: not used"""
    deepmath: str | None = None
    """DeepMath-103K: hf:zwhe99/DeepMath-103K or a local file of {question, final_answer, ...};
    none: not used"""
    nq_limit: int = 0
    """keep the first this many NQ records (0: all)"""
    deepmath_limit: int = 0
    """keep the first this many DeepMath records (0: all)"""
    shuffle_seed: int = 42
    """seed of the one shuffle of the concatenated training data (the reference's: 42)"""
    val: str | None = None
    """validation tasks in place of the held-out split: hf:Maxwell-Jia/AIME_2024, or a local
    file (the authors' aime24.json, or records of {ID, Problem, Answer}); none: env.eval_tasks
    held out of the training tasks"""
    val_limit: int = 0
    """keep the first this many validation tasks (0: all)"""

    @property
    def used(self) -> bool:
        """Whether any source is set (otherwise the env's own task set and split are used)."""
        return any(s is not None for s in (self.nq, self.deepmath, self.val))


@dataclass
class TrainConfig:
    """Loop, evaluation, logging, checkpoints, distribution."""

    total_steps: int = 200
    """training steps (one rollout + update each)"""
    max_minutes: float = 10.0
    """training-time budget (rollouts + updates, evaluation excluded): no step starts that would
    end past it (judged by the last step's duration); 0: no limit (tiny preset: the 10 minutes of
    its target)"""
    eval_every: int = 20
    """evaluate on held-out tasks every this many steps (0: only before and after)"""
    eval_temperature: float = 1.0
    """sampling temperature of evaluation (0 = greedy; 1.0 = the policy as trained, the tiny
    default)"""
    eval_samples: int = 4
    """episodes per held-out task when evaluation samples (greedy plays each task once)"""
    checkpoint_every: int = 10
    """write a checkpoint every this many steps (and at the end); 0: only at the end"""
    save_trajectories: bool = True
    """append every rollout trajectory to trajectories.jsonl"""
    progress: bool = True
    """show a rich progress bar"""
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    """auto: DDP when launched by torchrun, else none; fsdp: shard weights, gradients and AdamW
    state across ranks (FSDP2, for models too large to replicate)"""
    num_threads: int = -1
    """torch intra-op threads; -1: this machine's CPUs split among the processes on it (a lone run
    takes all, 2 torchrun ranks on 2 cores take 1 each); 0 leaves torch's default"""


@dataclass
class FlowGRPOConfig:
    """Everything one Flow-GRPO run needs."""

    preset: str = "tiny"
    """name of the preset these values started from"""
    seed: int = 0
    """seed of every random generator in the run (sampling, batching, task order)"""
    output_dir: str = "runs/flow_grpo"
    """TensorBoard events, checkpoints and trajectories go here"""
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> FlowGRPOConfig:
        """Raise :class:`ConfigError` (with a fixing hint) for inconsistent values."""
        _validate(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, keyed as config files are."""
        return to_dict(self)

    @property
    def recomputes_old_logprobs(self) -> bool:
        """Whether the trainer recomputes old log-probs (``algo.recompute_old_logprobs``, or by
        default: with the vLLM backend)."""
        setting = self.algo.recompute_old_logprobs
        return self.rollout.backend == "vllm" if setting is None else setting


# ------------------------------------------------------------------------------------- checks
def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate(cfg: FlowGRPOConfig) -> None:
    from learners.flow_grpo.advantages import ESTIMATORS  # registry, filled on import

    r, a, t, e, m = cfg.rollout, cfg.algo, cfg.train, cfg.env, cfg.model
    _check(
        r.group_size >= 2,
        f"rollout.group_size={r.group_size}: advantages are normalized within "
        "a group, so it needs at least 2 trajectories; set --rollout.group-size 2 or more",
    )
    _check(r.queries_per_step >= 1, "rollout.queries_per_step must be >= 1")
    _check(
        r.generation_batch_size >= 1,
        f"rollout.generation_batch_size={r.generation_batch_size} must be >= 1",
    )
    _check(
        r.temperature > 0,
        f"rollout.temperature={r.temperature}: training rollouts must sample "
        "(greedy groups are identical and carry no signal); use e.g. 0.7 or 1.0",
    )
    _check(0 < r.top_p <= 1, f"rollout.top_p={r.top_p} must be in (0, 1]")
    _check(r.infra_retries >= 0, f"rollout.infra_retries={r.infra_retries} must be >= 0")
    _check(
        r.max_new_tokens >= 1 and r.max_prompt_tokens >= 1,
        "rollout.max_new_tokens and rollout.max_prompt_tokens must be >= 1",
    )
    _check(
        not r.constrained,
        "rollout.constrained=true is refused: constrained sampling draws each token from the "
        "model's distribution renormalized over the tokens the action grammar allows, but the "
        "loss (Policy.score) recomputes log-probs over the whole vocabulary, so the PPO ratio "
        "and the KL term would compare two different distributions and the update would be "
        "biased. Train unconstrained (--rollout.constrained false) and constrain at evaluation "
        "(python -m agentflow_env.evaluate --planner-constrained)",
    )
    _check(
        0 < r.vllm_gpu_memory_utilization < 1,
        "rollout.vllm_gpu_memory_utilization must be in (0, 1)",
    )
    _check(
        a.estimator in ESTIMATORS,
        f"algo.estimator={a.estimator!r} is unknown; choose one of "
        f"{sorted(ESTIMATORS)} or register one with "
        "learners.flow_grpo.advantages.register_estimator",
    )
    _check(
        r.max_staleness >= 0,
        f"rollout.max_staleness={r.max_staleness} must be >= 0 (0: synchronous rollouts)",
    )
    _check(
        0 <= r.collectors <= r.max_staleness + 1,
        f"rollout.collectors={r.collectors} must be in [0, rollout.max_staleness + 1 = "
        f"{r.max_staleness + 1}] (0: max_staleness + 1): at most max_staleness + 1 rollouts "
        "have their weights at once",
    )
    _check(
        r.max_staleness == 0 or (r.backend == "transformers" and t.distributed != "fsdp"),
        "rollout.max_staleness > 0 needs rollout.backend transformers and no FSDP (the rollout "
        "worker samples from its own full copy of the weights); use --rollout.max-staleness 0",
    )
    _check(a.tis_cap >= 0, f"algo.tis_cap={a.tis_cap} must be >= 0 (0 disables it)")
    _check(
        a.tis_cap == 0 or t.distributed != "fsdp",
        "algo.tis_cap > 0 is not supported with train.distributed='fsdp'; use ddp or tis_cap 0",
    )
    _check(
        a.gigpo_omega >= 0 and 0 <= a.gigpo_gamma <= 1,
        f"algo.gigpo_omega={a.gigpo_omega} must be >= 0 and algo.gigpo_gamma={a.gigpo_gamma} "
        "in [0, 1]",
    )
    _check(
        0 <= a.clip_low < 1,
        f"algo.clip_low={a.clip_low} must be in [0, 1) (ratio floor 1 - clip_low)",
    )
    _check(a.clip_high >= 0, f"algo.clip_high={a.clip_high} must be >= 0")
    _check(
        a.kl_coef >= 0 and a.entropy_coef >= 0, "algo.kl_coef and algo.entropy_coef must be >= 0"
    )
    _check(a.lr > 0, f"algo.lr={a.lr} must be > 0")
    _check(
        a.max_grad_norm > 0,
        "algo.max_grad_norm must be > 0 (use a large value to disable clipping)",
    )
    _check(
        a.epochs >= 1 and a.mini_batches >= 1 and a.micro_batch_size >= 1,
        "algo.epochs, algo.mini_batches and algo.micro_batch_size must be >= 1",
    )
    _check(a.judge_max_tokens >= 1, f"algo.judge_max_tokens={a.judge_max_tokens} must be >= 1")
    _check(a.mini_batch_rows >= 0, f"algo.mini_batch_rows={a.mini_batch_rows} must be >= 0")
    _check(
        a.dual_clip == 0 or a.dual_clip > 1,
        f"algo.dual_clip={a.dual_clip}: the dual-clip constant must be > 1 (verl uses 3), "
        "or 0 to disable it",
    )
    _check(
        a.reward == "rules" or a.judge_engine is not None or e.engine is not None,
        "algo.reward='judge' needs an engine: set --algo.judge-engine "
        "(e.g. openai:gpt-4o or hf:PATH) or --env.engine",
    )
    _check(
        a.reward == "rules" or e.scorer is None,
        "algo.reward='judge' replaces the env's scorer; leave env.scorer unset",
    )
    if a.judge_engine is not None:
        from agentflow_env.llm.spec import parse_spec  # light: imports no engine

        try:
            parse_spec(a.judge_engine)
        except ValueError as exc:
            raise ConfigError(f"algo.judge_engine: {exc}") from exc
    _check(
        a.mini_batches <= r.queries_per_step * r.group_size,
        f"algo.mini_batches={a.mini_batches} exceeds the {r.queries_per_step * r.group_size} "
        "trajectories of one step; lower it or raise rollout.queries_per_step",
    )
    # single fields (env.max_turns >= 1, ...) were checked by the env model when they were set
    if e.tasks is None and e.num_tasks is not None:
        _check(
            e.num_tasks > e.eval_tasks,
            f"env.num_tasks={e.num_tasks} leaves no training tasks after "
            f"env.eval_tasks={e.eval_tasks} held-out ones; raise num_tasks or lower eval_tasks",
        )
    needs_engine = [
        f"env.{n}='llm'"
        for n in ("executor", "verifier", "generator")
        if getattr(e, n) == "llm" and getattr(e, f"{n}_engine") is None
    ]
    needs_engine += ["env.query_analysis"] if e.query_analysis is True else []
    tool_names = expand_toolsets(e.tools) if e.tools is not None else []
    needs_engine += [
        str(t)
        for t in tool_names
        if t in LLM_TOOLS and "engine" not in (e.tool_kwargs.get(str(t)) or {})
    ]
    _check(
        not needs_engine or e.engine is not None,
        f"{needs_engine[0] if needs_engine else ''} needs an engine: set --env.engine "
        "(e.g. openai:MODEL@http://127.0.0.1:8000/v1)",
    )
    _check(
        t.total_steps >= 0 and t.eval_every >= 0 and t.checkpoint_every >= 0,
        "train.total_steps, train.eval_every and train.checkpoint_every must be >= 0",
    )
    d = cfg.data
    _check(
        min(d.nq_limit, d.deepmath_limit, d.val_limit) >= 0,
        "data.nq_limit, data.deepmath_limit and data.val_limit must be >= 0 (0: all records)",
    )
    _check(t.eval_samples >= 1, f"train.eval_samples={t.eval_samples} must be >= 1")
    _check(
        t.num_threads >= -1,
        f"train.num_threads={t.num_threads} must be >= 1, or 0 (torch's default) "
        "or -1 (the CPUs split among this machine's processes)",
    )
    _check(
        t.max_minutes >= 0, f"train.max_minutes={t.max_minutes} must be >= 0 (0 = no time limit)"
    )
    _check(t.eval_temperature >= 0, "train.eval_temperature must be >= 0 (0 = greedy)")
    _check(m.lora_rank >= 0, "model.lora_rank must be >= 0 (0 disables LoRA)")
    _check(
        not (t.distributed == "fsdp" and m.lora_rank > 0),
        "train.distributed='fsdp' does not support LoRA "
        "(model.lora_rank > 0): LoRA trains few parameters, "
        "so use --train.distributed ddp (or auto)",
    )
    _check(
        not (m.dtype == "float16" and m.device == "cpu"),
        "model.dtype=float16 is not supported on CPU; use float32 or bfloat16",
    )


# -------------------------------------------------------------------------------------- presets
def tiny() -> FlowGRPOConfig:
    """Offline CPU default: the shipped 0.8M-parameter warm start on generated Search tasks."""
    # The sections' defaults are this preset (the env's: see learners.envs.EnvConfig).
    return FlowGRPOConfig(preset="tiny", output_dir="runs/flow_grpo_tiny")


def paper() -> FlowGRPOConfig:
    """The authors' training values (Qwen2.5-7B-Instruct planner, LLM modules through an engine)."""
    cfg = FlowGRPOConfig(preset="paper", output_dir="runs/flow_grpo_paper")
    cfg.model = ModelConfig(
        name_or_path="Qwen/Qwen2.5-7B-Instruct",
        dtype="bfloat16",
        chat_template=True,
        gradient_checkpointing=True,
    )
    cfg.env = EnvConfig(
        max_turns=3,
        # The reference's planner prompt, rebuilt from memory each turn, with query analysis.
        prompt_style="paper",
        query_analysis=True,
        tool_kwargs={},
        num_tasks=600,
        executor="llm",
        verifier="llm",
        generator="llm",
        engine="openai:Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1",
        # The reference's four tools by its names; offline its two search tools run BM25 over
        # the task corpus (tool_kwargs {"backend": "web", ...} or a dump path change that).
        tools=["paper"],
        max_episode_s=500.0,
        # The reference's modules write free text (its engine is a server, which modules
        # constrain only on request anyway; set here so an hf module engine matches too).
        constrained_modules=False,
    )
    cfg.rollout = RolloutConfig(
        queries_per_step=32,
        group_size=8,
        temperature=0.7,
        max_new_tokens=2048,
        max_prompt_tokens=18432,
        backend="vllm",
    )
    cfg.algo = AlgoConfig(
        lr=1e-6,
        kl_coef=0.001,
        clip_low=0.2,
        clip_high=0.3,
        entropy_coef=0.0,
        # verl 0.5 as the reference runs it: ppo_mini_batch_size 8 queries x 8 samples = 64 turn
        # rows per optimizer step, one epoch, ratios against recomputed old log-probs, dual-clip
        # c = 3, every group kept (GRPO has no zero-variance filter)
        mini_batch_rows=64,
        dual_clip=3.0,
        recompute_old_logprobs=True,
        skip_zero_variance_groups=False,
        micro_batch_size=4,
        pack_turns=False,
        # the reference's reward: gpt-4o's structured true/false verdict
        reward="judge",
        judge_engine="openai:gpt-4o",
    )
    cfg.data = DataConfig(nq=NQ_HF, deepmath=DEEPMATH_HF, val=AIME24_HF)
    cfg.train = TrainConfig(
        total_steps=500,
        max_minutes=0.0,
        eval_every=25,
        eval_temperature=0.0,
        eval_samples=1,
        checkpoint_every=25,
        distributed="auto",
        num_threads=0,
    )
    return cfg


PRESETS: dict[str, typing.Callable[[], FlowGRPOConfig]] = {"tiny": tiny, "paper": paper}


def make_config(
    preset: str = "tiny", file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> FlowGRPOConfig:
    """Preset -> config file -> overrides, then validate."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[preset]()
    if file is not None:
        values = load_config_file(file)
        values.pop("preset", None)
        apply_overrides(cfg, values)
    apply_overrides(cfg, dict(overrides or {}))
    return cfg.validate()
