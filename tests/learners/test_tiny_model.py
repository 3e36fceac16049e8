"""learners.tiny: an offline tokenizer + tiny Qwen2 that reload identically and talk."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from learners.tiny import (
    IM_END,
    IM_START,
    PAD_TOKEN,
    build_tiny_model,
    planner_like_dialogues,
    render_chats,
    save_tiny,
    train_tiny_lm,
    train_tiny_tokenizer,
)

CORPUS = [
    "The capital of France is Paris; it's 2,140,526 people in 2019.",
    "Justification: I'll search.\nSub-Goal: find 12345 and 678\nTool Name: Search_Tool",
    "Café naïve résumé — ‘quotes’ and 日本語 text, tabs\tand   spaces\r\n",
    "x = [i**2 for i in range(10)]  # python 3.11\n\n\nprint(x)",
] * 20

TRICKY = [
    "Hello  world\n\n  Café   naïve",
    "It's 2024: 1234567 apples, 89.5% of them they've eaten.",
    f"{IM_START}user\nhi{IM_END}\n{IM_START}assistant\n",
    "unseen ✓ symbols ∑ and emoji 🙂 plus ñ (NFD: n\u0303)",
    "  leading spaces and trailing  \n",
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from 2 OpenMP threads, which thrash on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tiny_tokenizer(CORPUS, vocab_size=600)


def test_tokenizer_ids_identical_after_save_and_autotokenizer_reload(
    tokenizer, tmp_path: Path
) -> None:
    model = build_tiny_model(
        tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    )
    save_tiny(model, tokenizer, tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    # the reason for the Qwen2-style pipeline: AutoTokenizer swaps in Qwen2's own pre-tokenizer
    assert type(reloaded).__name__ == "Qwen2Tokenizer"
    for text in TRICKY + CORPUS[:4]:
        before = tokenizer(text)["input_ids"]
        after = reloaded(text)["input_ids"]
        assert before == after, text
        assert reloaded.decode(after) == tokenizer.decode(before)
    assert reloaded.eos_token == IM_END and reloaded.pad_token == PAD_TOKEN
    assert reloaded.convert_tokens_to_ids(IM_START) == tokenizer.convert_tokens_to_ids(IM_START)


def test_a_plain_byte_level_tokenizer_would_change_ids_after_reload(tmp_path: Path) -> None:
    """Control experiment: GPT-2-style byte-level BPE (no Qwen2 split) does not survive a reload."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=[PAD_TOKEN, IM_START, IM_END],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    plain = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN)
    save_tiny(
        build_tiny_model(plain, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
        plain,
        tmp_path,
    )
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert any(plain(t)["input_ids"] != reloaded(t)["input_ids"] for t in TRICKY + CORPUS[:4])


def test_every_string_encodes_and_decodes_losslessly(tokenizer) -> None:
    for text in TRICKY:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_special_tokens_and_chatml_template(tokenizer) -> None:
    assert len(tokenizer(IM_START)["input_ids"]) == 1
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == PAD_TOKEN
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == f"{IM_START}system\nS{IM_END}\n{IM_START}user\nQ?{IM_END}\n{IM_START}assistant\n"
    decoded = tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)
    assert IM_START not in decoded and "Q?" in decoded


def test_bad_arguments_are_rejected(tokenizer) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_tiny_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_model(tokenizer, hidden_size=30, num_heads=4)
    model = build_tiny_model(
        tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    )
    with pytest.raises(ValueError, match="at least one text"):
        train_tiny_lm(model, tokenizer, [], steps=1)


def test_model_is_seeded_tied_and_leaves_global_rng_alone(tokenizer) -> None:
    rng_before = torch.random.get_rng_state()
    a = build_tiny_model(tokenizer, seed=3)
    b = build_tiny_model(tokenizer, seed=3)
    c = build_tiny_model(tokenizer, seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    assert a.lm_head.weight.data_ptr() == a.model.embed_tokens.weight.data_ptr()
    assert a.config.vocab_size == len(tokenizer) and a.config.hidden_size == 64
    assert sum(p.numel() for p in a.parameters()) < 1_000_000


def test_training_is_deterministic_and_lowers_the_loss(tokenizer) -> None:
    texts = render_chats(tokenizer, planner_like_dialogues(64, seed=1))
    runs = []
    for _ in range(2):
        model = build_tiny_model(
            tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=1
        )
        runs.append(train_tiny_lm(model, tokenizer, texts, steps=30, lr=5e-3, seed=7, batch_size=8))
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) / 5 < 0.7 * sum(runs[0][:5]) / 5
    assert not model.training


def test_save_and_reload_gives_the_same_logits(tokenizer, tmp_path: Path) -> None:
    model = build_tiny_model(tokenizer, seed=5)
    save_tiny(model, tokenizer, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([tokenizer("Tool Name: Search_Tool")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-6)
    # transformers serve only honours a request's temperature when the model samples by default
    assert reloaded.generation_config.do_sample is True
    assert set(reloaded.generation_config.eos_token_id) == {
        tokenizer.convert_tokens_to_ids(IM_END),
        tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    }


def test_shared_fixture_model_writes_planner_text_and_stops(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "Where was Ada Lane born? Give the capital of Peru."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=80, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    text = tok.decode(new, skip_special_tokens=True)
    assert text.strip() and "Tool Name:" in text, text  # a random-init model would emit newlines
    assert tok.convert_tokens_to_ids(IM_END) in new  # it learned to stop
