"""The trainable planner: a causal LM that samples actions and scores given token ids.

Token-in / token-out: :meth:`Policy.generate` takes prompt token ids and returns the sampled
token ids with their log-probs; the learner keeps those ids, and :meth:`Policy.score` computes
log-probs of exactly those ids again for the loss. Decoded text only goes to the environment.

Generation backends: :class:`HFGenerator` (transformers ``generate`` with a KV cache, batched,
CPU or GPU) and :class:`VLLMGenerator` (vLLM in-process on a GPU, weights synced after each
update; written against vLLM's offline ``LLM`` API, imported lazily, not exercised here because
this machine has no GPU).

Under FSDP (:meth:`Policy.shard`) the weights are sharded across ranks: transformers generation
must run inside :meth:`Policy.gathered` (entered by every rank at the same point), and the
vLLM weight sync gathers one tensor at a time.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

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
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


@dataclass
class GenerationOutput:
    """One sampled response: ids (including the stop token, when one was sampled) and log-probs."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: Literal["stop", "length"]
    extra: dict[str, Any] = field(default_factory=dict)


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
    """Batched sampling with transformers ``generate`` (left padding, KV cache).

    Sampling draws from torch's global generator inside ``torch.random.fork_rng`` seeded from
    ``settings.seed``: the caller's random state is untouched and runs are reproducible.
    Log-probs are ``log_softmax(logits / temperature)`` of the raw logits at each sampled token:
    with ``top_p == 1`` that is the distribution sampled from and the one the loss uses.
    """

    def __init__(self, policy: Policy, max_batch_size: int = 64) -> None:
        self.policy = policy
        self.max_batch_size = max_batch_size

    def sync_weights(self, model: nn.Module) -> None:
        """Nothing to do: this backend samples from the trained module itself."""

    def generate(
        self, contexts: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[GenerationOutput]:
        # Chunks of similar lengths: left padding to the longest context of a chunk is wasted work
        # in the prefill and in every decoding step's attention.
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
        outs: list[GenerationOutput | None] = [None] * len(contexts)
        for start in range(0, len(order), self.max_batch_size):
            idx = order[start : start + self.max_batch_size]
            for i, out in zip(
                idx,
                self._generate_chunk([contexts[i] for i in idx], settings, settings.seed + start),
                strict=False,
            ):
                outs[i] = out
        return outs  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_chunk(
        self, contexts: Sequence[Sequence[int]], settings: SamplingSettings, seed: int
    ) -> list[GenerationOutput]:
        pol = self.policy
        if any(len(c) == 0 for c in contexts):
            raise ValueError("every context needs at least one token")
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), pol.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, c in enumerate(contexts):
            ids[r, width - len(c) :] = torch.as_tensor(list(c), dtype=torch.long)
            mask[r, width - len(c) :] = 1
        greedy = settings.temperature == 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=settings.max_new_tokens,
            do_sample=not greedy,
            eos_token_id=pol.eos_ids,
            pad_token_id=pol.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
            use_cache=True,
            # transformers turns synced_gpus on for FSDP modules (a per-token collective); ranks
            # generate different numbers of times, and Policy.gathered() already holds full weights.
            synced_gpus=False,
        )
        if not greedy:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        model = pol.model
        was_training = model.training
        model.eval()
        devices = [pol.device.index or 0] if pol.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            result = model.generate(
                input_ids=ids.to(pol.device), attention_mask=mask.to(pol.device), **kwargs
            )
        model.train(was_training)
        new = result.sequences[:, width:].cpu()
        logits = torch.stack(result.logits, dim=1).float().cpu()  # [B, steps, V]
        temp = settings.temperature if not greedy else 1.0
        logp = torch.log_softmax(logits / temp, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        return [self._trim(new[r].tolist(), logp[r].tolist()) for r in range(len(contexts))]

    def _trim(self, ids: list[int], logps: list[float]) -> GenerationOutput:
        eos = set(self.policy.eos_ids)
        for k, tok in enumerate(ids):
            if tok in eos:
                ids, logps = ids[: k + 1], logps[: k + 1]
                return GenerationOutput(ids, logps, self.policy.decode(ids), "stop")
        return GenerationOutput(ids, logps, self.policy.decode(ids), "length")


class VLLMGenerator:
    """vLLM in-process (``vllm.LLM``) on a GPU, prompts given as token ids.

    After each optimizer update :meth:`sync_weights` loads the trainer's weights into vLLM's
    model. Written against vLLM's offline API (``LLM``, ``SamplingParams``, ``TokensPrompt``);
    NOT verified on this machine (no GPU, and vllm pins another torch).
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
        try:
            import vllm  # noqa: F401 - lazy: an optional extra that needs a GPU
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "rollout.backend='vllm' needs vllm: pip install 'agentflow-gym[vllm]' "
                "on a CUDA machine, or use --rollout.backend transformers"
            ) from exc
        if not torch.cuda.is_available():
            raise RuntimeError(
                "rollout.backend='vllm' needs a CUDA GPU; use --rollout.backend transformers"
            )
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enable_prefix_caching=True,
        )

    def generate(
        self, contexts: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[GenerationOutput]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_new_tokens,
            logprobs=0,
            seed=settings.seed,
        )
        prompts = [TokensPrompt(prompt_token_ids=list(c)) for c in contexts]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outputs:
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            # logprobs=0 returns, per position, a dict that holds the sampled token's entry.
            lps = [
                float(step[tok].logprob)
                for step, tok in zip(comp.logprobs or [], ids, strict=False)
            ]
            reason: Literal["stop", "length"] = (
                "length" if comp.finish_reason == "length" else "stop"
            )
            results.append(GenerationOutput(ids, lps, comp.text, reason))
        return results

    def sync_weights(self, model: nn.Module) -> None:
        """Load the trainer's current weights into vLLM's model (in-process, same GPU)."""
        engine = self.llm.llm_engine
        executor = engine.model_executor
        worker = getattr(executor.driver_worker, "worker", executor.driver_worker)
        target = worker.model_runner.model
        state = model.state_dict()
        # FSDP: each sharded tensor is gathered in turn (every rank syncs, in the same order).
        target.load_weights((name, full_tensor(tensor)) for name, tensor in state.items())
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights


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
        eos = (
            getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            or tokenizer.eos_token_id
        )
        self.eos_ids: list[int] = [
            int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])
        ]
        pad = tokenizer.pad_token_id
        self.pad_id: int = int(pad if pad is not None else self.eos_ids[0])
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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dev = resolve_device(device)
        tok = AutoTokenizer.from_pretrained(str(path))
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype]).to(dev)
        if gradient_checkpointing:
            enable = (
                getattr(model, "activation_checkpointing_enable", None)
                or model.gradient_checkpointing_enable
            )
            enable()
            model.config.use_cache = False
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
        """Switch generation to an in-process vLLM engine (GPU)."""
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
