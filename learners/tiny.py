"""Tiny chat models built entirely offline: a locally trained tokenizer and a small Qwen2.

Used by the tests (a real model where a real model can run) and by the learners' CPU preset.
Everything is seeded and runs on CPU in seconds::

    tok = train_tiny_tokenizer(texts, vocab_size=1024)
    model = build_tiny_model(tok, seed=0)
    losses = train_tiny_lm(model, tok, render_chats(tok, dialogues), steps=300, lr=3e-3, seed=0)
    save_tiny(model, tok, "tiny-model")        # loadable by AutoModelForCausalLM / AutoTokenizer

Why the tokenizer is built the way it is: a saved Qwen2 checkpoint makes ``AutoTokenizer`` return
a ``Qwen2Tokenizer``, which replaces the normalizer and pre-tokenizer with Qwen2's own (NFC, then
Qwen2's regex split, then byte-level without its own regex). Training with exactly that pipeline
keeps the token ids identical before and after a save/reload round trip.

Why the model is trained at all: a randomly initialised model emits only newlines under greedy
decoding, which makes it useless as a text-producing engine in tests.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from agentflow_env.format import finish_action, tool_action

__all__ = [
    "CHATML_TEMPLATE",
    "IM_END",
    "IM_START",
    "PAD_TOKEN",
    "QWEN2_PRETOKENIZE_REGEX",
    "SPECIAL_TOKENS",
    "build_tiny_model",
    "make_tiny_chat_model",
    "planner_like_dialogues",
    "render_chats",
    "save_tiny",
    "train_tiny_lm",
    "train_tiny_tokenizer",
]

logger = logging.getLogger(__name__)

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, IM_START, IM_END)

# Qwen2's pre-tokenizer split (the same pattern as transformers' Qwen2Tokenizer); kept here so a
# transformers upgrade that moves the constant does not break training.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# ChatML, as Qwen2.5-Instruct uses it (without the default system prompt).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def train_tiny_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 2048,
    out_dir: str | Path | None = None,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` with Qwen2's normalizer and pre-tokenizer.

    The tokenizer has ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos) as special
    tokens and a ChatML chat template. Every byte is in the base alphabet, so any text encodes.
    The result may have fewer than ``vocab_size`` tokens when the corpus has few distinct merges.
    Deterministic for a given ``texts``. Saved to ``out_dir`` when given.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + specials), "
            f"got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "left"
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def _seeded_init(model: torch.nn.Module, seed: int, std: float) -> None:
    """Re-initialise every parameter from a private generator (no global seeding)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif param.ndim == 1:
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 256,
    seed: int = 0,
    max_position_embeddings: int = 4096,
) -> Qwen2ForCausalLM:
    """A small Qwen2 causal LM (tied embeddings, fp32, CPU) sized to ``tokenizer``.

    Weights come from a generator seeded with ``seed``: the same arguments give the same model.
    """
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
        )
    eos_ids = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(PAD_TOKEN)]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Construction draws from the global RNG; fork it so building a model leaves no trace there.
    with torch.random.fork_rng(devices=[]):
        model = Qwen2ForCausalLM(config)
    _seeded_init(model, seed, config.initializer_range)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id
    )
    model.eval()
    return model


def save_tiny(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    path: str | Path,
    do_sample: bool = True,
) -> Path:
    """Save model (safetensors), tokenizer and generation config to ``path``; returns the path.

    ``do_sample=True`` is written to ``generation_config.json`` because ``transformers serve``
    ignores a request's ``temperature`` unless the model's generation config samples; requests
    with ``temperature=0`` still decode greedily there.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    eos_ids = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(PAD_TOKEN)]
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=do_sample,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
    )
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def train_tiny_lm(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    steps: int = 300,
    lr: float = 3e-3,
    seed: int = 0,
    batch_size: int = 16,
    max_length: int = 128,
) -> list[float]:
    """Train ``model`` as a language model on ``texts`` (next-token loss on every real token).

    Batches are drawn with a ``torch.Generator`` seeded with ``seed``; AdamW with a short linear
    warm-up. Returns the loss of every step. The model is left in eval mode.
    """
    if not texts:
        raise ValueError("train_tiny_lm needs at least one text")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    encoded = [
        ids[:max_length] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ]
    pad_id = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / warmup))
    losses: list[float] = []
    model.train()
    for step in range(steps):
        idx = torch.randint(len(encoded), (batch_size,), generator=gen).tolist()
        rows = [encoded[i] for i in idx]
        width = max(len(r) for r in rows)
        input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            logger.debug("tiny LM step %d loss %.3f", step, losses[-1])
    model.eval()
    return losses


_PLACES = ("Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Accra", "Doha", "Riga", "Sofia")
_COUNTRIES = (
    "France",
    "Peru",
    "Norway",
    "Egypt",
    "Ecuador",
    "Vietnam",
    "Ghana",
    "Qatar",
    "Latvia",
    "Bulgaria",
)
_PEOPLE = (
    "Ada Lane",
    "Bo Chen",
    "Cy Park",
    "Dee Moss",
    "Eli Ford",
    "Fay Gold",
    "Gus Hart",
    "Ivy Rowe",
)


def planner_like_dialogues(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` short synthetic chats in which the assistant writes AgentFlow-planner-style steps.

    Half search for a fact (``Tool Name: Search_Tool`` + ``Command:``), half finish with an
    ``<answer>``; drawn from ``random.Random(seed)``. Meant for warming tiny models up, not for
    teaching them anything true.
    """
    rng = random.Random(seed)
    out: list[list[dict[str, str]]] = []
    for _ in range(n):
        k = rng.randrange(len(_PLACES))
        person = rng.choice(_PEOPLE)
        if rng.random() < 0.5:
            question = f"Where was {person} born? Give the capital of {_COUNTRIES[k]}."
            reply = tool_action(
                "Search_Tool",
                f"capital of {_COUNTRIES[k]}",
                sub_goal=f"find the capital of {_COUNTRIES[k]}",
                justification=f"I need the capital of {_COUNTRIES[k]}.",
            )
        else:
            question = (
                f"The search said the capital of {_COUNTRIES[k]} is {_PLACES[k]}. Answer now."
            )
            reply = finish_action(_PLACES[k], justification="the result names the city.")
        out.append([{"role": "user", "content": question}, {"role": "assistant", "content": reply}])
    return out


def render_chats(
    tokenizer: PreTrainedTokenizerFast, dialogues: Iterable[Sequence[dict[str, str]]]
) -> list[str]:
    """Render whole dialogues (including the assistant turns) with the tokenizer's chat template."""
    return [tokenizer.apply_chat_template(list(d), tokenize=False) for d in dialogues]


def make_tiny_chat_model(
    path: str | Path,
    *,
    num_dialogues: int = 400,
    vocab_size: int = 1024,
    steps: int = 250,
    lr: float = 3e-3,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    batch_size: int = 16,
) -> Path:
    """Build, briefly train and save a tiny chat model that writes planner-like text and stops.

    One call for tests and demos: tokenizer + Qwen2 + ``steps`` of LM training on
    :func:`planner_like_dialogues`, saved with :func:`save_tiny`. Returns ``path``.
    """
    dialogues = planner_like_dialogues(num_dialogues, seed=seed)
    raw = [m["content"] for d in dialogues for m in d]
    tok = train_tiny_tokenizer(raw, vocab_size=vocab_size)
    model = build_tiny_model(tok, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
    losses = train_tiny_lm(
        model,
        tok,
        render_chats(tok, dialogues),
        steps=steps,
        lr=lr,
        seed=seed,
        batch_size=batch_size,
    )
    logger.info("tiny chat model: loss %.3f -> %.3f over %d steps", losses[0], losses[-1], steps)
    return save_tiny(model, tok, path)
