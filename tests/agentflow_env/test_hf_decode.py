"""The CPU decoding loop that drops finished rows (``agentflow_env.llm.hf_decode``): what it
returns equals ``model.generate``'s, and ended rows leave the forward pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from agentflow_env.llm import SamplingParams
from agentflow_env.llm.base import TokenPrompt
from agentflow_env.llm.constraints import Constraint
from agentflow_env.llm.hf_backend import HFBackend, load_causal_lm, load_tokenizer

Q = "Where was Ada Lane born? Give the capital of Peru."


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path) -> tuple[Any, Any]:
    return load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _ids(tokenizer: Any, text: str) -> list[int]:
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )
    return list(enc["input_ids"])


def _rows(tokenizer: Any) -> list[TokenPrompt]:
    """Rows that end at different steps and for different reasons."""
    s = SamplingParams
    return [
        TokenPrompt(_ids(tokenizer, Q), s(max_tokens=3, logprobs=True), seed=0),
        TokenPrompt(_ids(tokenizer, "Short?"), s(temperature=1.0, max_tokens=25), seed=4),
        TokenPrompt(
            _ids(tokenizer, Q + " " + Q), s(temperature=0.7, max_tokens=12, stop=["e"]), seed=9
        ),
        TokenPrompt(
            _ids(tokenizer, "Pick one."),
            s(temperature=1.0, max_tokens=25),
            seed=2,
            constraint=Constraint.regex("(yes|no) [a-z]{1,6}"),
        ),
        TokenPrompt(_ids(tokenizer, Q + " Then?"), s(temperature=1.0, max_tokens=18), seed=5),
    ]


def test_dropping_finished_rows_returns_what_generate_returns(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    model, tokenizer = model_and_tokenizer
    shrinking = HFBackend(model, tokenizer, prefill="per_row")
    whole = HFBackend(model, tokenizer, prefill="batched")  # model.generate, padded batch
    rows = _rows(tokenizer)
    assert shrinking._use_per_row(rows) and not whole._use_per_row(rows)
    got, want = shrinking.generate(rows), whole.generate(rows)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert [r.finish_reason for r in got] == [r.finish_reason for r in want]
    assert [r.text for r in got] == [r.text for r in want]
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    lengths = sorted(len(r.token_ids) for r in got)
    assert lengths[0] < lengths[-1]  # the rows did end at different steps
    assert got[2].finish_reason == "stop" and got[0].finish_reason == "length"


def test_ended_rows_leave_the_forward_pass(model_and_tokenizer: tuple[Any, Any]) -> None:
    model, tokenizer = model_and_tokenizer
    rows = _rows(tokenizer)
    batch_sizes: list[int] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        batch_sizes.append((kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[0])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        results = HFBackend(model, tokenizer, prefill="per_row").generate(rows)
    finally:
        handle.remove()
    decoding = batch_sizes[len({tuple(r.prompt_ids) for r in rows}) :]  # after the prefills
    assert decoding[0] == len(rows) and decoding == sorted(decoding, reverse=True)
    assert decoding[-1] == 1 and len(decoding) == max(len(r.token_ids) for r in results)
    # each step runs exactly the rows still writing: the shortest row (3 tokens) left after 3
    assert decoding[3] < len(rows)
