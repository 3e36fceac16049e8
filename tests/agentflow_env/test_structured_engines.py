"""Constraints through every engine: the hf engine on a real instruct model (SmolLM2-135M, masks
from llguidance), the callable engine's check, the openai engine against a real local server that
honours constraints (the project's own, ``python -m agentflow_env.llm serve``), against real
servers that ignore or refuse them (``transformers serve``, a scripted HTTP server), and the vLLM
mapping (needs vllm and a GPU: skipped here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agentflow_env.llm import (
    CallableEngine,
    Constraint,
    ConstraintUnsupportedError,
    ConstraintViolationError,
    GenerationRequest,
    GenerationResult,
    HFEngine,
    InvalidConstraintError,
    SamplingParams,
)
from agentflow_env.llm.base import TokenPrompt
from agentflow_env.llm.hf_backend import HFBackend
from agentflow_env.llm.openai_engine import OpenAIEngine
from agentflow_env.llm.structured import masker_for, match_text
from tests.agentflow_env.test_openai_engine import ScriptedServer

chat = GenerationRequest.chat
VERDICT = Constraint.choice(["STOP", "CONTINUE"])
NUMBER = Constraint.regex(r"[0-9]{1,3}")
CAPITAL = Constraint.json(
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "country": {"type": "string", "maxLength": 20},
        },
        "required": ["city", "country"],
        "additionalProperties": False,
    }
)
STEP = Constraint.lark(
    'start: "Tool Name: " TOOL "\\nCommand: " CMD\n'
    'TOOL: "Search_Tool" | "Python_Coder_Tool"\n'
    "CMD: /[a-zA-Z ]{1,40}/"
)
ASKS = {
    VERDICT: "The answer is known: Paris. Should the agent STOP or CONTINUE?",
    NUMBER: "How many legs does a spider have?",
    CAPITAL: "Give the capital of France and its country as JSON.",
    STEP: "Which tool finds the capital of Peru? Write the tool and the search query.",
}


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> Iterator[HFEngine]:
    # One thread: on a shared 2-core machine competing threads slow every small op (conftest).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = HFEngine(smollm2_dir, seed=0)
    yield engine
    engine.close()
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- hf engine
def test_hf_output_matches_every_kind_in_one_mixed_batch(smollm2: HFEngine) -> None:
    requests = [chat(q, constraint=c, max_tokens=40) for c, q in ASKS.items()]
    requests.append(chat(ASKS[NUMBER], max_tokens=8))  # an unconstrained row beside them
    results = smollm2.generate(requests)
    for (constraint, _), result in zip(ASKS.items(), results, strict=False):
        assert match_text(constraint, result.text) == "complete", (constraint.kind, result.text)
        assert result.finish_reason == "stop"
    answer = json.loads(results[2].text)
    assert set(answer) == {"city", "country"}
    assert not results[-1].text.strip().isdigit()  # free text stays free


@pytest.mark.slow
def test_hf_sampled_rows_match_and_a_seed_repeats_them(smollm2: HFEngine) -> None:
    request = chat(ASKS[STEP], constraint=STEP, temperature=1.0, n=3, seed=5, max_tokens=40)
    first = smollm2.generate([request])
    assert all(match_text(STEP, r.text) == "complete" for r in first)
    assert [r.text for r in smollm2.generate([request])] == [r.text for r in first]


def test_hf_text_cut_by_max_tokens_is_a_prefix(smollm2: HFEngine) -> None:
    (result,) = smollm2.generate([chat(ASKS[CAPITAL], constraint=CAPITAL, max_tokens=3)])
    assert result.finish_reason == "length" and match_text(CAPITAL, result.text) == "prefix"


def test_processed_logprobs_are_under_the_mask(smollm2: HFEngine) -> None:
    """``processed`` log-probs are the masked distribution's: recomputed here by teacher forcing
    through a fresh mask of the same constraint; the raw model's are lower."""
    model, tokenizer = smollm2.model, smollm2.tokenizer
    backend = HFBackend(model, tokenizer, logprobs_mode="processed")  # type: ignore[arg-type]
    ids = smollm2._encode(chat(ASKS[STEP]))
    sampling = SamplingParams(temperature=1.0, max_tokens=30, logprobs=True)
    (masked,) = backend.generate([TokenPrompt(ids, sampling, seed=3, constraint=STEP)])
    backend.logprobs_mode = "raw"
    (raw,) = backend.generate([TokenPrompt(ids, sampling, seed=3, constraint=STEP)])
    assert masked.token_ids == raw.token_ids and match_text(STEP, masked.text) == "complete"
    tokens = masked.token_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids + tokens])).logits[0, len(ids) - 1 : -1].float()
    mask = masker_for(tokenizer, backend.eos_ids).processor(STEP)
    expected = [
        torch.log_softmax(mask(torch.tensor([ids + tokens[:t]]), logits[t : t + 1]), -1)[
            0, tok
        ].item()
        for t, tok in enumerate(tokens)
    ]
    assert masked.logprobs == pytest.approx(expected, abs=1e-3)
    assert all(r <= m + 1e-4 for r, m in zip(raw.logprobs, masked.logprobs, strict=True))
    assert sum(raw.logprobs) < sum(masked.logprobs)


def test_hf_refuses_a_bad_constraint_before_generating(smollm2: HFEngine) -> None:
    bad = chat("x", constraint=Constraint.regex("[unclosed"), max_tokens=4)
    with pytest.raises(InvalidConstraintError, match="unclosed"):
        smollm2.generate([chat("fine", max_tokens=2), bad])


# ----------------------------------------------------------------------------- callable engine
def test_callable_output_is_checked_against_the_constraint() -> None:
    engine = CallableEngine(lambda r: "CONTINUE" if r.constraint else "anything")
    assert engine.generate([chat("q", constraint=VERDICT), chat("q")])[0].text == "CONTINUE"
    wrong = CallableEngine(lambda r: "Maybe", name="judge")
    with pytest.raises(ConstraintViolationError, match="judge broke.*'Maybe'.*STOP"):
        wrong.generate([chat("q", constraint=VERDICT)])


def test_callable_prefix_is_fine_only_when_cut_short() -> None:
    cut = CallableEngine(lambda r: GenerationResult(text='{"city": "Li', finish_reason="length"))
    assert cut.generate([chat("q", constraint=CAPITAL)])[0].text == '{"city": "Li'
    ended = CallableEngine(lambda r: '{"city": "Li')
    with pytest.raises(ConstraintViolationError, match="stops before the end"):
        ended.generate([chat("q", constraint=CAPITAL)])
    stopped = CallableEngine(lambda r: "CONT\nmore")  # the stop string cuts it to a prefix
    assert stopped.generate([chat("q", constraint=VERDICT, stop=["\n"])])[0].text == "CONT"


# ----------------------------------------------------------------------------- openai engine
@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.mark.parametrize(
    ("dialect", "constraint", "sent"),
    [
        ("vllm", VERDICT, {"structured_outputs": {"choice": ["STOP", "CONTINUE"]}}),
        ("vllm", STEP, {"structured_outputs": {"grammar": STEP.grammar}}),
        ("vllm-guided", NUMBER, {"guided_regex": "[0-9]{1,3}"}),
        ("sglang", VERDICT, {"regex": "(STOP)|(CONTINUE)"}),
        ("openai", CAPITAL, {"response_format": {"type": "json_schema"}}),
    ],
)
def test_a_server_that_ignores_the_constraint_is_an_error_not_a_result(
    scripted: ScriptedServer, dialect: str, constraint: Constraint, sent: dict
) -> None:
    with OpenAIEngine("m", scripted.url, structured_outputs=dialect, max_retries=0) as engine:  # type: ignore[arg-type]
        with pytest.raises(ConstraintViolationError, match="ignored the constraint"):
            engine.generate([chat("q", constraint=constraint)])
    body = scripted.records[-1]["body"]
    for key, value in sent.items():
        if key == "response_format":
            assert body[key]["type"] == value["type"]
            assert body[key]["json_schema"]["schema"] == CAPITAL.schema_dict
        else:
            assert body[key] == value


def test_a_matching_reply_passes_and_a_refused_field_is_typed(scripted: ScriptedServer) -> None:
    scripted.text = "STOP"
    with OpenAIEngine("m", scripted.url, max_retries=0) as engine:
        assert engine.generate([chat("q", constraint=VERDICT)])[0].text == "STOP"
        scripted.script = [
            {"status": 422, "body": {"detail": "Unexpected fields: {'structured_outputs'}"}}
        ]
        with pytest.raises(ConstraintUnsupportedError, match="refused the constraint.*422"):
            engine.generate([chat("q", constraint=VERDICT)])
        sent = len(scripted.records)
        with pytest.raises(InvalidConstraintError):
            engine.generate([chat("q", constraint=Constraint.lark("start: nothing_here"))])
        assert len(scripted.records) == sent  # refused before any request


@pytest.mark.slow
def test_own_server_honours_constraints_through_the_openai_engine(smollm2_dir: Path) -> None:
    from agentflow_env.llm import serve_hf

    with serve_hf(smollm2_dir, name="smollm2", timeout_s=180) as server:
        assert server.model == "smollm2"
        with OpenAIEngine(server.model, server.url, timeout_s=300, max_retries=0) as engine:
            requests = [chat(q, constraint=c, max_tokens=40) for c, q in ASKS.items()]
            requests.append(GenerationRequest(prompt="Count: 1, 2,", constraint=NUMBER))
            results = engine.generate(requests)
        with OpenAIEngine(server.model, server.url, structured_outputs="openai") as engine:
            (as_json,) = engine.generate([chat(ASKS[CAPITAL], constraint=CAPITAL)])
    for constraint, result in zip([*ASKS, NUMBER], results, strict=True):
        assert match_text(constraint, result.text) == "complete", (constraint.kind, result.text)
    assert set(json.loads(as_json.text)) == {"city", "country"}


@pytest.mark.slow
def test_transformers_serve_ignores_response_format_and_refuses_structured_outputs(
    tiny_model_dir: Path,
) -> None:
    from agentflow_env.llm import serve_transformers

    with serve_transformers(tiny_model_dir, timeout_s=120) as server:
        ask = chat(ASKS[CAPITAL], constraint=CAPITAL, max_tokens=30)
        with OpenAIEngine(server.model, server.url, structured_outputs="openai") as engine:
            with pytest.raises(ConstraintViolationError, match="ignored the constraint"):
                engine.generate([ask])
        with OpenAIEngine(server.model, server.url, max_retries=0) as engine:
            with pytest.raises(ConstraintUnsupportedError, match="structured_outputs"):
                engine.generate([ask])


# ----------------------------------------------------------------------------- vllm
@pytest.mark.vllm
@pytest.mark.gpu
def test_vllm_engine_enforces_each_kind() -> None:  # pragma: no cover - needs vllm and a GPU
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from agentflow_env.llm.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        "Qwen/Qwen2.5-0.5B-Instruct",
        gpu_memory_utilization=0.3,
        structured_outputs_config={"backend": "guidance"},
    )
    try:
        results = engine.generate([chat(q, constraint=c, max_tokens=40) for c, q in ASKS.items()])
        for constraint, result in zip(ASKS, results, strict=True):
            assert match_text(constraint, result.text) == "complete"
    finally:
        engine.close()
