"""HFBackend on the real tiny model: per-row seeds, row logits processors, log-prob modes, errors;
the vLLM backend's weight chunking and lazy import (vllm itself cannot run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agentflow_env.llm import EngineConfigError, SamplingParams
from agentflow_env.llm.base import TokenPrompt
from agentflow_env.llm.hf_backend import HFBackend, load_causal_lm, load_tokenizer

Q = "Where was Ada Lane born? Give the capital of Peru."
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> HFBackend:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield HFBackend(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir))
    torch.set_num_threads(threads)


def chat_ids(backend: HFBackend, question: str) -> list[int]:
    enc = backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )
    return list(enc["input_ids"])


def sampled(ids: list[int], seed: int, **settings: object) -> TokenPrompt:
    sampling = SamplingParams(**{"temperature": 1.0, "max_tokens": 30, **settings})
    return TokenPrompt(prompt_ids=ids, sampling=sampling, seed=seed)


def teacher_forced_logits(backend: HFBackend, prompt: list[int], ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt + ids])).logits[0]
    return logits[len(prompt) - 1 : -1].float()


def test_a_row_samples_the_same_whatever_else_is_in_its_batch(backend: HFBackend) -> None:
    target = sampled(chat_ids(backend, Q), seed=7)
    (alone,) = backend.generate([target])
    others = [
        TokenPrompt(chat_ids(backend, "Short?"), SamplingParams(max_tokens=5), seed=0),
        sampled(chat_ids(backend, Q + " And the company's founder?"), seed=1),
    ]
    mixed = backend.generate([others[0], target, others[1]])
    assert mixed[1].token_ids == alone.token_ids and mixed[1].logprobs == pytest.approx(
        alone.logprobs, abs=1e-4
    )
    # the seed is what decides: identical prompts with their own seeds sample apart
    group = backend.generate(
        [sampled(target.prompt_ids, seed=s, temperature=1.5) for s in range(6)]
    )
    assert len({tuple(c.token_ids) for c in group}) >= 2


def test_row_logits_processor_sees_its_own_ids_and_constrains_only_its_row(
    backend: HFBackend,
) -> None:
    short, long = chat_ids(backend, "Short?"), chat_ids(backend, Q + " " + Q)
    forced = backend.tokenizer.convert_tokens_to_ids("Tool")
    seen: list[list[int]] = []

    def only_forced(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(ids[0].tolist())
        out = torch.full_like(scores, float("-inf"))
        out[:, forced] = 0.0
        return out

    row = TokenPrompt(
        short, SamplingParams(temperature=1.0, max_tokens=4), seed=3, logits_processor=only_forced
    )
    other = TokenPrompt(long, SamplingParams(max_tokens=6), seed=0)
    constrained, unconstrained = backend.generate([row, other])
    assert constrained.token_ids == [forced] * 4 and constrained.finish_reason == "length"
    # the processor saw this row alone: its prompt (no left padding) and its tokens so far
    assert seen == [short + [forced] * k for k in range(4)]
    assert unconstrained.token_ids == backend.generate([other])[0].token_ids
    # raw log-probs are the model's own distribution, not the constrained one
    logits = teacher_forced_logits(backend, short, constrained.token_ids)
    raw = torch.log_softmax(logits, -1)[:, forced]
    assert torch.allclose(torch.tensor(constrained.logprobs), raw, atol=1e-4)
    processed = HFBackend(backend.model, backend.tokenizer, logprobs_mode="processed")
    (only_choice,) = processed.generate([row])
    assert only_choice.logprobs == pytest.approx([0.0] * 4, abs=1e-6)


def test_temperature_logprobs_ignore_top_p_and_processed_ones_include_it(
    backend: HFBackend,
) -> None:
    prompt = chat_ids(backend, Q)
    nucleus = sampled(prompt, seed=5, temperature=0.7, top_p=0.8)
    by_mode = {
        mode: HFBackend(backend.model, backend.tokenizer, logprobs_mode=mode).generate([nucleus])[0]
        for mode in ("raw", "temperature", "processed")
    }
    ids = by_mode["raw"].token_ids
    assert all(c.token_ids == ids for c in by_mode.values())  # the mode never changes the sample
    logits = teacher_forced_logits(backend, prompt, ids)
    at = torch.tensor(ids)[:, None]
    for mode, expected in (
        ("raw", torch.log_softmax(logits, -1).gather(1, at)[:, 0]),
        ("temperature", torch.log_softmax(logits / 0.7, -1).gather(1, at)[:, 0]),
    ):
        assert torch.allclose(torch.tensor(by_mode[mode].logprobs), expected, atol=1e-4), mode
    # top-p renormalizes over the kept tokens: every sampled token is at least as likely
    processed = torch.tensor(by_mode["processed"].logprobs)
    assert bool((processed >= torch.tensor(by_mode["temperature"].logprobs) - 1e-5).all())
    assert bool((processed <= 0).all())


def test_bad_prompts_and_settings_are_rejected(backend: HFBackend) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        backend.generate([TokenPrompt(prompt_ids=[], sampling=SamplingParams(), seed=0)])
    with pytest.raises(EngineConfigError, match="logprobs_mode"):
        HFBackend(backend.model, backend.tokenizer, logprobs_mode="scaled")  # type: ignore[arg-type]
    with pytest.raises(EngineConfigError, match="max_batch_size"):
        backend.max_batch_size = 0
    with pytest.raises(EngineConfigError, match="dtype"):
        load_causal_lm("unused", dtype="int4")


# ------------------------------------------------------------------------------ vllm backend


def test_vllm_weight_chunks_are_bounded_and_consumed_lazily() -> None:
    from agentflow_env.llm.vllm_backend import _chunks

    produced: list[int] = []

    def weights():
        for i in range(5):
            produced.append(i)
            yield f"w{i}", torch.zeros(256)  # 1 KiB each

    chunks = _chunks(weights(), limit=2048)
    first = next(chunks)
    assert [n for n, _ in first] == ["w0", "w1"] and produced == [0, 1, 2]  # one tensor ahead
    assert [[n for n, _ in c] for c in chunks] == [["w2", "w3"], ["w4"]]
    big = list(_chunks([("a", torch.zeros(1024)), ("b", torch.zeros(1))], limit=16))
    assert [[n for n, _ in c] for c in big] == [["a"], ["b"]]  # an oversized tensor goes alone


def test_importing_the_backends_and_the_policy_does_not_import_vllm() -> None:
    code = (
        "import sys, agentflow_env.llm.vllm_backend, agentflow_env.llm.vllm_engine, "
        "learners.policy; assert 'vllm' not in sys.modules, 'vllm was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=REPO_ROOT)
