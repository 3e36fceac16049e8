"""What the GPU check's sections share: the plan, recording, device helpers, models, batches.

Models are random-initialized from Qwen2.5-0.5B- and 1.5B-shaped configs (no weights can be
brought to the GPU machine) with a synthetic word-level tokenizer of the same vocabulary size;
token content does not change the arithmetic. The dry run's plan (:func:`make_plan`) has tiny
stand-in shapes on the CPU and float32; everything else is the GPU plan's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learners.rollout import TurnSample

__all__ = [
    "DRY_SHAPES",
    "SHAPES",
    "PeakMemory",
    "Plan",
    "Recorder",
    "device_info",
    "make_plan",
    "random_model",
    "random_policy",
    "release_memory",
    "sync",
    "synthetic_batch",
    "synthetic_tokenizer",
    "timed",
    "update_trainer",
]

SHAPES: dict[str, dict[str, int]] = {
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
    "qwen2.5-1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
}
"""the published Qwen2.5 configs' sizes (both tie the output layer to the embedding)"""

DRY_SHAPES: dict[str, dict[str, int]] = {
    "qwen2.5-0.5b": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
    },
    "qwen2.5-1.5b": {
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "vocab_size": 512,
    },
}
"""tiny stand-ins of the same family for the CPU dry run"""


@dataclass(frozen=True)
class Plan:
    """What one run measures, with which shapes, and each section's time budget."""

    dry_run: bool
    device: str
    dtype: str
    shapes: dict[str, dict[str, int]]
    gen_batches: tuple[int, ...] = (1, 16, 64)
    gen_prompt_tokens: int = 256
    gen_new_tokens: int = 128
    update_models: tuple[str, ...] = ("qwen2.5-0.5b", "qwen2.5-1.5b")
    trajectories: int = 32
    """update batch: trajectories of ``turns`` append-only turns each"""
    turns: int = 3
    prompt_tokens: int = 512
    response_tokens: int = 128
    result_tokens: int = 64
    """tool-result tokens appended between turns"""
    micro_batch_size: int = 8
    tiny_overrides: dict[str, Any] = field(default_factory=dict)
    """config overrides of the tiny-preset step (none on a GPU: the preset as it is)"""
    budgets: dict[str, float] = field(default_factory=dict)
    """seconds per section, in the order they run"""
    seed: int = 0


def make_plan(dry_run: bool) -> Plan:
    """The GPU plan, or its CPU dry run with tiny shapes (same sections, rows and code paths)."""
    if not dry_run:
        return Plan(
            dry_run=False,
            device="cuda",
            dtype="bfloat16",
            shapes=SHAPES,
            budgets={
                "generation": 120.0,
                "update": 110.0,
                "tiny_step": 70.0,
                "distributed": 90.0,
                "trl": 50.0,
            },
        )
    return Plan(
        dry_run=True,
        device="cpu",
        # bf16 matrix products are emulated on most CPUs (3-4x slower than fp32 here, even at
        # these shapes); the dtype only reaches from_config and the trainer's tensors.
        dtype="float32",
        shapes=DRY_SHAPES,
        gen_prompt_tokens=16,
        gen_new_tokens=8,
        trajectories=6,
        turns=2,
        prompt_tokens=24,
        response_tokens=8,
        result_tokens=4,
        micro_batch_size=4,
        tiny_overrides={
            "rollout.queries_per_step": 2,
            "rollout.group_size": 2,
            "rollout.max_new_tokens": 16,
            "env.max_turns": 2,
            "env.num_tasks": 30,
            "env.eval_tasks": 2,
            "algo.skip_zero_variance_groups": False,  # so the update runs on 4 trajectories
        },
        budgets={
            "generation": 150.0,
            "update": 150.0,
            "tiny_step": 180.0,
            "distributed": 300.0,
            "trl": 180.0,
        },
    )


# ------------------------------------------------------------------------------------ recording
class Recorder:
    """A section's result, rewritten to its file after every change (atomic replace)."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path = path
        self.deadline = deadline
        """time.time() by which the section must be done"""
        self.data: dict[str, Any] = {"rows": []}

    def set(self, **values: Any) -> None:
        self.data.update(values)
        self.flush()

    def row(self, **values: Any) -> None:
        self.data["rows"].append(values)
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)

    def fits(self, estimate_s: float) -> bool:
        return time.time() + estimate_s < self.deadline

    def measure(
        self, key: dict[str, Any], estimate_s: float, fn: Callable[[], dict[str, Any]]
    ) -> float:
        """Run ``fn`` as one row if ``estimate_s`` fits the budget; returns its duration (the
        next comparable row's estimate). Out of memory fails the row only."""
        if not self.fits(estimate_s):
            self.row(**key, status="skipped: over budget")
            return estimate_s
        start = time.perf_counter()
        try:
            values = fn()
        except torch.OutOfMemoryError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
            self.row(**key, status=f"failed: {first[:300]}")
            release_memory()
            return time.perf_counter() - start
        self.row(**{**key, "status": "ok", **values})  # fn may give its own status
        return time.perf_counter() - start


# ------------------------------------------------------------------------------------ devices
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a CPU has nothing to wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


class PeakMemory:
    """Peak memory while the block runs: the CUDA allocator's peak on a GPU (tensors only); on a
    CPU the process's peak RSS (:class:`benchmarks.update_throughput.PeakRSS`)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.before_mb = self.peak_mb = 0.0
        self.method = ""
        self._rss: Any = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.method = "torch.cuda.max_memory_allocated"
        else:
            from benchmarks.update_throughput import PeakRSS

            self._rss = PeakRSS().__enter__()
            self.before_mb = self._rss.before / 2**20
            self.method = f"peak RSS ({self._rss.method})"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._rss.__exit__(*exc)
            self.peak_mb = self._rss.peak / 2**20

    def values(self) -> dict[str, Any]:
        return {
            "peak_memory_mb": round(self.peak_mb, 1),
            "peak_memory_growth_mb": round(self.peak_mb - self.before_mb, 1),
            "memory_method": self.method,
        }


def device_info(device: torch.device) -> dict[str, Any]:
    """The accelerator (name, memory, CUDA and NCCL versions) and the library versions."""
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    for name in ("transformers", "trl", "accelerate"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            nccl=".".join(map(str, torch.cuda.nccl.version())),
        )
    return info


# ------------------------------------------------------------------------------------ models
def synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer with ``vocab_size`` ids: the tiny models' special tokens (pad,
    ``<|im_start|>``, ``<|im_end|>`` = EOS) and one word per other id."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from learners.tiny import CHATML_TEMPLATE, IM_END, PAD_TOKEN, SPECIAL_TOKENS

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIAL_TOKENS), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token=PAD_TOKEN))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD_TOKEN, eos_token=IM_END, unk_token=PAD_TOKEN
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "left"
    return tok


def random_model(shape: dict[str, int], device: torch.device, dtype: str, seed: int) -> Any:
    """A Qwen2 causal LM of ``shape``, initialized on ``device`` from ``seed``, in eval mode."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from agentflow_env.llm.hf_backend import DTYPES

    tok_ids = {"pad_token_id": 0, "eos_token_id": 2, "bos_token_id": None}
    config = Qwen2Config(**shape, tie_word_embeddings=True, **tok_ids)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), device:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    return model.eval()


def random_policy(plan: Plan, name: str) -> Any:
    from learners.policy import Policy

    device = torch.device(plan.device)
    shape = plan.shapes[name]
    model = random_model(shape, device, plan.dtype, plan.seed)
    return Policy(model, synthetic_tokenizer(shape["vocab_size"]), device=device)


def synthetic_batch(plan: Plan, vocab_size: int) -> tuple[list[TurnSample], np.ndarray]:
    """``plan.trajectories`` trajectories of ``plan.turns`` append-only turns (each turn's prompt
    = the previous prompt + its response + a tool result), groups of 2, random advantages. Old
    log-probs are zeros until recomputed by the model."""
    rng = np.random.default_rng(plan.seed)
    low = 3  # past the special tokens
    samples: list[TurnSample] = []
    for traj in range(plan.trajectories):
        prompt = rng.integers(low, vocab_size, plan.prompt_tokens).tolist()
        for turn in range(plan.turns):
            response = rng.integers(low, vocab_size, plan.response_tokens).tolist()
            zeros = [0.0] * len(response)
            samples.append(
                TurnSample(traj, traj // 2, turn, list(prompt), response, zeros, "length", "")
            )
            prompt = prompt + response + rng.integers(low, vocab_size, plan.result_tokens).tolist()
    return samples, rng.normal(0.0, 1.0, len(samples))


def update_trainer(plan: Plan, policy: Any, out: str, **overrides: Any) -> Any:
    """A Flow-GRPO trainer (tiny preset's algorithm, no KL) around ``policy``; only its update
    is used here."""
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    cfg = make_config(
        "tiny",
        overrides={
            "output_dir": out,
            "model.device": plan.device,
            "model.dtype": plan.dtype,
            "env.num_tasks": 30,
            "env.eval_tasks": 2,
            "rollout.queries_per_step": 1,
            "rollout.group_size": 2,
            "algo.mini_batches": 1,
            "algo.micro_batch_size": plan.micro_batch_size,
            "algo.lr": 1e-6,
            "train.progress": False,
            "train.save_trajectories": False,
            **overrides,
        },
    )
    return FlowGRPOTrainer(cfg, policy=policy)
