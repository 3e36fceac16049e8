"""The trainable planner: a causal LM that samples actions and scores given token ids.

Token-in / token-out: :meth:`Policy.generate` takes prompt token ids and returns the sampled
token ids with their log-probs; the learner keeps those ids, and :meth:`Policy.score` computes
log-probs of exactly those ids again for the loss. Decoded text only goes to the environment.

Generation runs through the environment's own backends (:mod:`agentflow_env.llm`), the same code
its engines use: :class:`HFGenerator` puts an :class:`~agentflow_env.llm.hf_backend.HFBackend`
around the very model being trained (transformers ``generate``, batched, per-context seeds, CPU
or GPU), :class:`VLLMGenerator` a :class:`~agentflow_env.llm.vllm_backend.VLLMBackend` (vLLM
in-process on a GPU, weights synced after each update; imported lazily, not exercised here
because this machine has no GPU). Log-probs are ``log_softmax(logits / temperature)`` at each
sampled token, the distribution the loss recomputes (with ``top_p < 1`` the sampled distribution
is narrower than that one).

Under FSDP (:meth:`Policy.shard`) the weights are sharded across ranks: transformers generation
must run inside :meth:`Policy.gathered` (entered by every rank at the same point), and the
vLLM weight sync gathers one tensor at a time.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from agentflow_env.llm.base import SamplingParams, TokenCompletion, TokenPrompt
from agentflow_env.llm.hf_backend import (
    HFBackend,
    derive_seed,
    eos_token_ids,
    load_causal_lm,
    load_tokenizer,
    pad_token_id,
)
from learners.distributed import FSDPShards, fsdp_shard, full_tensor, transformer_blocks
from learners.logits import entropy_from_logits

logger = logging.getLogger(__name__)

__all__ = [
    "ActionScorer",
    "GenerationOutput",
    "HFGenerator",
    "Policy",
    "SamplingSettings",
    "VLLMGenerator",
    "resolve_device",
    "set_gradient_checkpointing",
]

GenerationOutput = TokenCompletion
"""One sampled response: ids (including the stop token, when one was sampled), their log-probs,
the decoded text and the finish reason ("stop" or "length")."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class SamplingSettings:
    """How actions are sampled. ``temperature == 0`` is greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    """context ``i`` of a generate call samples with ``derive_seed(seed, i)``"""


def token_prompts(
    contexts: Sequence[Sequence[int]], settings: SamplingSettings
) -> list[TokenPrompt]:
    """One backend prompt per context, each with its own seed derived from ``settings.seed``."""
    if any(len(c) == 0 for c in contexts):
        raise ValueError("every context needs at least one token")
    sampling = SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_new_tokens,
        logprobs=True,
    )
    return [
        TokenPrompt(prompt_ids=list(c), sampling=sampling, seed=derive_seed(settings.seed, i))
        for i, c in enumerate(contexts)
    ]


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Recompute a transformers model's activations in the backward pass (or stop doing so)."""
    if enabled:
        enable = (
            getattr(model, "activation_checkpointing_enable", None)
            or model.gradient_checkpointing_enable
        )
        enable()
    else:
        disable = (
            getattr(model, "activation_checkpointing_disable", None)
            or model.gradient_checkpointing_disable
        )
        disable()
    model.config.use_cache = not enabled


class ActionScorer(nn.Module):
    """Wraps a causal LM; ``forward`` returns logits only where a target token is predicted.

    Computing the output layer only at action positions saves most of the step for small models
    (the vocabulary projection dominates), and lets DDP/FSDP wrap one module whose ``forward`` is
    the whole training computation.
    """

    def __init__(self, causal_lm: nn.Module) -> None:
        super().__init__()
        self.lm = causal_lm

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits [N, V] predicting every token ``t`` with ``target_mask[b, t]`` (row-major
        order)."""
        backbone = getattr(self.lm, self.lm.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        # Position t-1 predicts token t.
        picked = hidden[:, :-1][target_mask[:, 1:]]
        return self.lm.get_output_embeddings()(picked)


class Generator(Protocol):
    def generate(
        self, contexts: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[GenerationOutput]: ...

    def sync_weights(self, model: nn.Module) -> None: ...


class HFGenerator:
    """Transformers generation from the policy's own model, through the env's :class:`HFBackend`.

    Every context samples from its own seed (``derive_seed(settings.seed, i)``): the same
    settings give the same samples whatever the batch, and the caller's random state is
    untouched.
    """

    def __init__(self, policy: Policy, max_batch_size: int = 64) -> None:
        self.backend = HFBackend(
            policy.causal_lm,
            policy.tokenizer,
            max_batch_size=max_batch_size,
            logprobs_mode="temperature",
            device=policy.device,
        )

    @property
    def max_batch_size(self) -> int:
        """contexts per ``model.generate`` call (grouped by length)"""
        return self.backend.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        self.backend.max_batch_size = value

    def sync_weights(self, model: nn.Module) -> None:
        """Nothing to do: this backend samples from the trained module itself."""

    def generate(
        self, contexts: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[GenerationOutput]:
        return self.backend.generate(token_prompts(contexts, settings))


class VLLMGenerator:
    """vLLM in-process on a GPU through the env's :class:`VLLMBackend`, prompts as token ids.

    After each optimizer update :meth:`sync_weights` loads the trainer's weights into vLLM's
    model. Log-probs are vLLM's ``processed_logprobs`` (after temperature). NOT verified on this
    machine (no GPU, and vllm pins another torch).
    """

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "bfloat16",
        gpu_memory_utilization: float = 0.4,
        max_model_len: int | None = None,
        seed: int = 0,
    ) -> None:
        from agentflow_env.llm.vllm_backend import VLLMBackend, import_vllm

        import_vllm()  # a missing vllm says how to install it before the GPU check
        if not torch.cuda.is_available():
            raise RuntimeError(
                "rollout.backend='vllm' needs a CUDA GPU; use --rollout.backend transformers"
            )
        self.backend = VLLMBackend(
            model_path,
            logprobs_mode="processed",
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=True,
        )

    def generate(
        self, contexts: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[GenerationOutput]:
        return self.backend.generate(token_prompts(contexts, settings))

    def sync_weights(self, model: nn.Module) -> None:
        """Load the trainer's current weights into vLLM's model (every rank syncs its own)."""
        self.backend.update_weights(_full_weights(model))


def _full_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's named weights, each sharded tensor gathered when reached (FSDP: every rank
    iterates, in the same order)."""
    for name, tensor in model.state_dict().items():
        yield name, full_tensor(tensor)


class Policy:
    """A causal LM planner with its tokenizer; trainable (full or LoRA)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        device: torch.device | str = "cpu",
        chat_template: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if isinstance(device, str) else device
        self.chat_template = chat_template
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "chat_template=True but the tokenizer has no chat template; use chat_template=False"
            )
        eos = eos_token_ids(self.causal_lm, tokenizer)
        self.eos_ids: list[int] = sorted(eos)
        """ids that end an action (the model's generation config's and the tokenizer's)"""
        self.pad_id: int = pad_token_id(tokenizer, eos)
        self.scorer = ActionScorer(self.causal_lm)
        self.generator: Generator = HFGenerator(self)
        self.generation_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
        """entered around every generate call (under FSDP: a check that the weights are gathered)"""
        self.shards: FSDPShards | None = None
        """the FSDP units after :meth:`shard`; None while every rank holds all weights"""

    # ---------------------------------------------------------------------------- building
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "float32",
        device: str = "auto",
        chat_template: bool = False,
        lora_rank: int = 0,
        lora_alpha: int = 32,
        lora_target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        gradient_checkpointing: bool = False,
    ) -> Policy:
        """Load model + tokenizer from a local directory or hub id; optionally add LoRA adapters."""
        dev = resolve_device(device)
        model = load_causal_lm(path, dtype=dtype, device=dev)  # a bad dtype: EngineConfigError
        tok = load_tokenizer(path)
        tok.padding_side = "left"
        if gradient_checkpointing:
            set_gradient_checkpointing(model, True)
        if lora_rank > 0:
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "model.lora_rank > 0 needs peft: pip install 'agentflow-gym[lora]'"
                ) from exc
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora_rank,
                    lora_alpha=lora_alpha,
                    target_modules=list(lora_target_modules),
                    lora_dropout=0.0,
                    task_type="CAUSAL_LM",
                ),
            )
        return cls(model, tok, device=dev, chat_template=chat_template)

    @property
    def causal_lm(self) -> nn.Module:
        """The transformers model (under any LoRA wrapper; adapters are injected in place)."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    @property
    def is_lora(self) -> bool:
        return callable(getattr(self.model, "get_base_model", None))

    def frozen_copy(self) -> Policy:
        """A frozen deep copy (the KL reference policy)."""
        model = copy.deepcopy(self.model)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        return Policy(model, self.tokenizer, device=self.device, chat_template=self.chat_template)

    def shard(self, world_size: int) -> FSDPShards:
        """Shard the weights over ``world_size`` ranks with FSDP2 (a collective: every rank
        calls it).

        One unit per transformer block and the :class:`ActionScorer` as the root; gradients are
        summed across ranks. Call it after any ``use_vllm`` and before building the optimizer
        (the parameters become sharded DTensors). Not for LoRA.
        """
        if self.is_lora:
            raise ValueError(
                "FSDP with LoRA adapters is not supported; use DDP (LoRA trains few parameters)"
            )
        if self.shards is not None:
            raise RuntimeError("the policy is already sharded")
        from torch.distributed.tensor import DTensor

        self.shards = fsdp_shard(
            self.scorer, transformer_blocks(self.causal_lm), self.device, world_size
        )
        with torch.no_grad():  # FSDP takes the module of the first forward as its root: the scorer
            self.score([[self.pad_id, self.pad_id]], [[False, True]])
        # Reshard, else the root's parameters stay full ones and an optimizer would take those.
        self.shards.reshard()
        if not all(isinstance(p, DTensor) for p in self.model.parameters()):
            raise RuntimeError(
                "FSDP left some parameters unsharded; the optimizer would update copies"
            )
        if isinstance(self.generator, HFGenerator):
            self.generation_context = self.shards.require_gathered
        return self.shards

    def gathered(self) -> AbstractContextManager[None]:
        """Full weights for transformers generation inside the block.

        Under FSDP every rank must enter it at the same point (it all-gathers on entry); a no-op
        when the weights are not sharded or generation runs in vLLM.
        """
        if self.shards is None or not isinstance(self.generator, HFGenerator):
            return contextlib.nullcontext()
        return self.shards.gathered()

    def use_vllm(self, model_path: str, **kwargs: Any) -> None:
        """Switch generation to an in-process vLLM engine (GPU).

        ``model_path`` must hold the weights the policy starts from (vLLM loads its own copy);
        :meth:`sync_generator` pushes the trained ones after each update. Not for LoRA: vLLM
        would receive adapter tensors under names its model does not have.
        """
        if self.is_lora:
            raise ValueError(
                "vLLM generation syncs full weights and does not take LoRA adapters; "
                "use --rollout.backend transformers with model.lora_rank > 0"
            )
        self.generator = VLLMGenerator(model_path, **kwargs)

    # ---------------------------------------------------------------------------- text <-> ids
    def prompt_ids(self, observation: str) -> list[int]:
        """Token ids of a raw-text prompt (the observation as it is).

        Raises:
            ValueError: the policy uses its chat template: prompts come from the episode's
                chat messages (:meth:`chat_prompt_ids`), never from the text observation.
        """
        if self.chat_template:
            raise ValueError(
                "this policy uses its chat template: build prompts from the env's "
                "info['messages'] with chat_prompt_ids(), not from the text observation"
            )
        return self.text_ids(observation)

    def chat_prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of an episode's chat messages under the tokenizer's chat template, the
        assistant turn opened (the generation prompt), so the next token starts the action."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; use chat_template=False")
        enc = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=True
        )
        ids = enc["input_ids"] if hasattr(enc, "keys") else enc
        return [int(i) for i in ids]

    def chat_prompt_text(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The text :meth:`chat_prompt_ids` tokenizes (to tell why two prompts differ)."""
        return str(
            self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
            )
        )

    def text_ids(self, text: str) -> list[int]:
        """Raw token ids of ``text`` (no special tokens added)."""
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        """Action text of sampled ids (stop tokens and other special tokens dropped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ---------------------------------------------------------------------------- sampling
    def generate(
        self, contexts: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[GenerationOutput]:
        """Sample one response per context (token ids in, token ids + log-probs out)."""
        with self.generation_context():
            return self.generator.generate(contexts, settings)

    def sync_generator(self) -> None:
        """Push the current weights to the generation engine (a no-op for transformers)."""
        self.generator.sync_weights(self.causal_lm)

    # ---------------------------------------------------------------------------- scoring
    def score(
        self,
        sequences: Sequence[Sequence[int]],
        target_masks: Sequence[Sequence[bool]],
        *,
        temperature: float = 1.0,
        with_entropy: bool = False,
        module: nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and entropies) of every target token, flat in row-major order.

        ``target_masks[b][t]`` marks token ``t`` of sequence ``b`` as scored (an action token;
        position 0 cannot be). ``module`` defaults to this policy's :class:`ActionScorer`; the
        trainer passes its DDP/FSDP-wrapped scorer. Gradients flow unless called under no_grad.
        """
        if len(sequences) != len(target_masks):
            raise ValueError("one target mask per sequence")
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        tmask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for r, (seq, m) in enumerate(zip(sequences, target_masks, strict=False)):
            if len(seq) != len(m):
                raise ValueError(f"sequence {r}: {len(seq)} tokens but a mask of {len(m)}")
            if m and m[0]:
                raise ValueError(f"sequence {r}: token 0 has no context and cannot be a target")
            ids[r, : len(seq)] = torch.as_tensor(list(seq))
            attn[r, : len(seq)] = 1
            tmask[r, : len(seq)] = torch.as_tensor(list(m), dtype=torch.bool)
        ids, attn, tmask = ids.to(self.device), attn.to(self.device), tmask.to(self.device)
        logits = (module or self.scorer)(ids, attn, tmask)
        targets = ids[tmask]
        logp = (
            torch.log_softmax(logits.float() / temperature, dim=-1)
            .gather(-1, targets.unsqueeze(-1))
            .squeeze(-1)
        )
        ent = entropy_from_logits(logits, temperature) if with_entropy else None
        return logp, ent

    # ---------------------------------------------------------------------------- saving
    def save(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Save model (safetensors; LoRA adapters merged) and tokenizer to ``path``.

        ``state_dict``: the full weights to write instead of the module's own (FSDP: gathered
        by :func:`learners.checkpoint.full_state`, since a sharded module's are shards).
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.is_lora:
            model = copy.deepcopy(self.model).merge_and_unload()
        if state_dict is not None:
            # Gathered tensors share no storage, so drop tied duplicates (lm_head tied to the
            # embedding) as transformers does for the module's own weights: the same files.
            first: dict[int, str] = {}
            tied = {
                n
                for n, p in model.named_parameters(remove_duplicate=False)
                if first.setdefault(id(p), n) != n
            }
            model.save_pretrained(
                str(out), state_dict={k: v for k, v in state_dict.items() if k not in tied}
            )
        else:
            model.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))
        return out

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(
            p.numel() for p in self.model.parameters() if p.requires_grad or not trainable_only
        )
