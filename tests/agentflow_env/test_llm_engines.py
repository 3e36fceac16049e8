"""Engines other than openai: callable, transformers (real tiny model), vllm (GPU only), specs."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

from agentflow_env.llm import (
    CallableEngine,
    Engine,
    EngineConfigError,
    EngineDependencyError,
    EngineError,
    GenerationRequest,
    GenerationResult,
    LogprobsUnavailableError,
    make_engine,
    parse_spec,
)
from agentflow_env.llm.hf_engine import HFEngine
from learners.tiny import IM_END

Q = "Where was Ada Lane born? Give the capital of Peru."
chat = GenerationRequest.chat


def scripted_planner(request: GenerationRequest) -> str:
    """Importable for the python: spec test."""
    return "Tool Name: Finish\n<answer>42</answer>"


# ------------------------------------------------------------------------------ callable


def test_callable_engine_text_results_and_n_calls() -> None:
    counter = itertools.count()
    engine = CallableEngine(lambda req: f"sample {next(counter)}")
    out = engine.generate([chat("a"), chat("b", n=3)])
    assert [r.text for r in out] == ["sample 0", "sample 1", "sample 2", "sample 3"]
    assert all(r.finish_reason == "stop" and r.error is None for r in out)
    assert isinstance(engine, Engine) and engine.generate([]) == []


def test_callable_engine_sequences_batches_and_results() -> None:
    seq = CallableEngine(lambda req: ["x", GenerationResult(text="y", finish_reason="length")])
    assert [(r.text, r.finish_reason) for r in seq.generate([chat("q", n=2)])] == [
        ("x", "stop"),
        ("y", "length"),
    ]
    seen: list[int] = []

    def batch(requests):
        seen.append(len(requests))
        return [r.messages[-1].content.upper() for r in requests for _ in range(r.sampling.n)]

    engine = CallableEngine(batch, batched=True)
    assert [r.text for r in engine.generate([chat("a"), chat("b", n=2)])] == ["A", "B", "B"]
    assert seen == [2]


def test_callable_engine_applies_stop_strings() -> None:
    engine = CallableEngine(lambda req: "Tool Name: Finish\n<answer>7</answer> trailing")
    (res,) = engine.generate([chat("q", stop=("</answer>",))])
    assert res.text == "Tool Name: Finish\n<answer>7" and res.finish_reason == "stop"
    (raw,) = CallableEngine(engine.fn, apply_stop=False).generate([chat("q", stop=("</answer>",))])
    assert raw.text.endswith("trailing")


def test_callable_engine_rejects_bad_outputs_loudly() -> None:
    with pytest.raises(EngineError, match="expected a str"):
        CallableEngine(lambda req: 42).generate([chat("q")])
    with pytest.raises(EngineError, match="sequence of 2"):
        CallableEngine(lambda req: ["only one"]).generate([chat("q", n=2)])
    with pytest.raises(EngineError, match="expected a sequence of 3"):
        CallableEngine(lambda reqs: ["a"], batched=True).generate([chat("q", n=3)])
    with pytest.raises(LogprobsUnavailableError, match="logprobs"):
        CallableEngine(lambda req: "text").generate([chat("q", logprobs=True)])
    with pytest.raises(TypeError):
        CallableEngine("not callable")  # type: ignore[arg-type]


def test_callable_engine_lets_the_functions_own_errors_through() -> None:
    def broken(req):
        raise KeyError("scripted planner bug")

    with pytest.raises(KeyError, match="scripted planner bug"):
        CallableEngine(broken).generate([chat("q")])


def test_callable_engine_passes_logprobs_through() -> None:
    engine = CallableEngine(lambda req: GenerationResult(text="a", token_ids=[5], logprobs=[-0.1]))
    (res,) = engine.generate([chat("q", logprobs=True)])
    assert res.token_ids == [5] and res.logprobs == [-0.1]


# ------------------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    ("spec", "kind", "target", "url"),
    [
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini", None),
        (
            "openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1",
            "openai",
            "Qwen/Qwen2.5-7B-Instruct",
            "http://127.0.0.1:8000/v1",
        ),
        (
            "openai:org/model:fp8@https://api.example.com/v1",
            "openai",
            "org/model:fp8",
            "https://api.example.com/v1",
        ),
        ("hf:/models/tiny", "hf", "/models/tiny", None),
        ("transformers:Qwen/Qwen2.5-0.5B", "hf", "Qwen/Qwen2.5-0.5B", None),
        ("vllm:Qwen/Qwen2.5-7B-Instruct", "vllm", "Qwen/Qwen2.5-7B-Instruct", None),
        ("python:pkg.mod:fn", "python", "pkg.mod:fn", None),
    ],
)
def test_parse_spec_valid_forms(spec: str, kind: str, target: str, url: str | None) -> None:
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.target, parsed.base_url) == (kind, target, url)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "gpt-4o",
        "foo:bar",
        "openai:",
        "openai:m@ftp://host",
        "openai:@http://h/v1",
        "hf:",
        "python:nomodule",
        "python:json:no_such_function",
    ],
)
def test_bad_specs_get_a_clear_error_listing_valid_forms(spec: str) -> None:
    with pytest.raises(EngineConfigError, match="Valid forms: openai:MODEL@http"):
        make_engine(spec)


def test_make_engine_adapts_objects_and_callables() -> None:
    engine = CallableEngine(scripted_planner)
    assert make_engine(engine) is engine
    with pytest.raises(EngineConfigError, match="existing engine"):
        make_engine(engine, batched=True)
    wrapped = make_engine(scripted_planner)
    assert isinstance(wrapped, CallableEngine) and wrapped.generate([chat("q")])[0].text.endswith(
        "</answer>"
    )

    class GenerateOnly:  # engine-like but without close(): adapted as a batched function
        def generate(self, requests):
            return [GenerationResult(text="g") for r in requests for _ in range(r.sampling.n)]

    adapted = make_engine(GenerateOnly())
    assert isinstance(adapted, Engine) and [r.text for r in adapted.generate([chat("q", n=2)])] == [
        "g",
        "g",
    ]
    by_path = make_engine(f"python:{__name__}:scripted_planner")
    assert by_path.generate([chat("q")])[0].text == scripted_planner(chat("q"))
    with pytest.raises(EngineConfigError, match="cannot make an engine"):
        make_engine(3.14)  # type: ignore[arg-type]


def test_make_engine_builds_openai_engine_without_touching_the_network() -> None:
    engine = make_engine("openai:some-model@http://127.0.0.1:9/v1", max_retries=0)
    try:
        assert engine.model == "some-model" and engine.base_url == "http://127.0.0.1:9/v1"
    finally:
        engine.close()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_spec_without_vllm_says_how_to_get_it() -> None:
    with pytest.raises(EngineDependencyError, match="pip install 'agentflow-gym\\[vllm\\]'"):
        make_engine("vllm:Qwen/Qwen2.5-0.5B-Instruct")


# ------------------------------------------------------------------------------ transformers


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFEngine:
    # A tiny model gains nothing from 2 OpenMP threads, and on a shared CPU they thrash.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = HFEngine(tiny_model_dir, seed=0)
    yield engine
    engine.close()
    torch.set_num_threads(threads)


def test_hf_greedy_chat_generates_planner_text_and_stops_at_eos(hf: HFEngine) -> None:
    (res,) = hf.generate([chat(Q)])
    assert "Tool Name:" in res.text and res.finish_reason == "stop"
    assert res.token_ids[-1] == hf.tokenizer.convert_tokens_to_ids(IM_END)  # EOS kept in the ids
    assert res.text == hf.tokenizer.decode(res.token_ids, skip_special_tokens=True)
    prompt = hf.tokenizer.apply_chat_template(
        [{"role": "user", "content": Q}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    assert res.prompt_tokens == len(prompt) and res.completion_tokens == len(res.token_ids)
    assert isinstance(hf, Engine)


def test_hf_max_tokens_and_stop_strings_are_honoured(hf: HFEngine) -> None:
    (full,) = hf.generate([chat(Q)])
    short, stopped = hf.generate([chat(Q, max_tokens=4), chat(Q, stop=("Sub-Goal",))])
    assert short.completion_tokens == 4 and short.finish_reason == "length"
    assert short.token_ids == full.token_ids[:4]
    cut = full.text.index("Sub-Goal")
    assert stopped.text == full.text[:cut] and stopped.finish_reason == "stop"
    ids = stopped.token_ids
    assert ids == full.token_ids[: len(ids)]  # a prefix of what the model would have written
    assert "Sub-Goal" in hf.tokenizer.decode(ids) and "Sub-Goal" not in hf.tokenizer.decode(
        ids[:-1]
    )


def test_hf_seeded_sampling_is_reproducible_whatever_the_batch(hf: HFEngine) -> None:
    target = chat(Q, temperature=1.0, seed=11, n=2, logprobs=True, max_tokens=40)
    alone = hf.generate([target])
    others = [
        chat("Short?", temperature=0.0, max_tokens=3),
        GenerationRequest(
            prompt="Justification: a much longer raw prompt " * 3, sampling={"seed": 1}
        ),
    ]
    mixed = hf.generate([others[0], target, others[1]])[1:3]
    assert [r.token_ids for r in alone] == [r.token_ids for r in mixed]
    assert [r.text for r in alone] == [r.text for r in mixed]
    small_batches = HFEngine(hf.model, hf.tokenizer, max_batch_size=1).generate(
        [others[0], target]
    )[1:]
    assert [r.token_ids for r in small_batches] == [r.token_ids for r in alone]


def test_hf_temperature_seed_and_top_p_change_the_samples(hf: HFEngine) -> None:
    rng_state = torch.random.get_rng_state()
    greedy = hf.generate([chat(Q, n=3)])
    hot = hf.generate([chat(Q, temperature=1.5, n=8, seed=5, max_tokens=40)])
    nucleus = hf.generate([chat(Q, temperature=1.5, top_p=1e-6, n=3, seed=5)])
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # sampling used private generators
    assert len({r.text for r in greedy}) == 1
    assert len({r.text for r in hot}) >= 2
    assert {r.text for r in nucleus} == {
        greedy[0].text
    }  # top_p that small keeps only the top token
    reseeded = hf.generate([chat(Q, temperature=1.5, n=8, seed=5, max_tokens=40)])
    assert [r.text for r in reseeded] == [r.text for r in hot]


def test_hf_results_are_request_major_with_n(hf: HFEngine) -> None:
    out = hf.generate(
        [chat(Q, max_tokens=2, n=2), chat(Q, max_tokens=3), chat(Q, max_tokens=1, n=3)]
    )
    assert [r.completion_tokens for r in out] == [2, 2, 3, 1, 1, 1]


def _teacher_forced_logits(hf: HFEngine, res: GenerationResult) -> torch.Tensor:
    prompt = hf.tokenizer.apply_chat_template(
        [{"role": "user", "content": Q}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    ids = torch.tensor([list(prompt) + res.token_ids])
    with torch.no_grad():
        logits = hf.model(ids).logits[0, len(prompt) - 1 : -1]
    return logits, torch.tensor(res.token_ids)


def test_hf_logprobs_match_a_teacher_forced_forward_pass(hf: HFEngine) -> None:
    (res,) = hf.generate([chat(Q, temperature=1.0, seed=3, logprobs=True, max_tokens=40)])
    logits, ids = _teacher_forced_logits(hf, res)
    expected = torch.log_softmax(logits, -1).gather(1, ids[:, None])[:, 0]
    assert len(res.logprobs) == len(res.token_ids)
    assert torch.allclose(torch.tensor(res.logprobs), expected, atol=1e-4)
    processed = HFEngine(hf.model, hf.tokenizer, logprobs_mode="processed")
    (hot,) = processed.generate([chat(Q, temperature=2.0, seed=3, logprobs=True, max_tokens=40)])
    logits, ids = _teacher_forced_logits(hf, hot)
    expected = torch.log_softmax(logits / 2.0, -1).gather(1, ids[:, None])[:, 0]
    assert torch.allclose(torch.tensor(hot.logprobs), expected, atol=1e-4)


def test_hf_raw_prompts_and_make_engine_spec(tiny_model_dir: Path) -> None:
    engine = make_engine(f"hf:{tiny_model_dir}")
    try:
        (res,) = engine.generate(
            [
                GenerationRequest(
                    prompt="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                    sampling={"max_tokens": 12},
                )
            ]
        )
        assert isinstance(engine, HFEngine) and res.completion_tokens <= 12 and res.text.strip()
    finally:
        engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.generate([chat(Q)])


def test_hf_per_row_prefill_gives_what_each_request_gets_alone(hf: HFEngine) -> None:
    # A mixed batch: greedy and seeded sampled rows, n > 1 (one prefill shared by its rows),
    # prompts of different lengths (left padding), and a one-token raw prompt (nothing left to
    # prefill, so that chunk falls back to the padded batch prefill).
    requests = [
        chat(Q, max_tokens=20, logprobs=True),
        chat("Short?", temperature=1.0, seed=4, n=2, max_tokens=20, logprobs=True),
        chat(
            Q + " " + Q + " Then the company?",
            temperature=0.7,
            seed=9,
            max_tokens=20,
            logprobs=True,
        ),
    ]
    one_token = GenerationRequest(prompt="a", sampling={"max_tokens": 5})
    per_row = HFEngine(hf.model, hf.tokenizer, prefill="per_row")
    batched = HFEngine(hf.model, hf.tokenizer, prefill="batched")
    assert per_row._use_per_row(per_row._rows(requests))
    alone = [res for r in requests for res in per_row.generate([r])]  # chunks of one: no padding
    together = per_row.generate(requests)
    padded = batched.generate(requests)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.token_ids for r in padded] == [r.token_ids for r in alone]
    for a, b in zip(together, alone, strict=True):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    assert together[1].token_ids != together[2].token_ids  # n=2 rows still sample independently
    mixed = per_row.generate([*requests, one_token])
    assert not per_row._use_per_row(per_row._rows([*requests, one_token]))
    assert [r.token_ids for r in mixed[:4]] == [r.token_ids for r in alone]
    assert 1 <= mixed[4].completion_tokens <= 5
    # "auto": per-row prefill on CPU only for long prompts, where it is the cheaper one
    auto = HFEngine(hf.model, hf.tokenizer)
    assert not auto._use_per_row(auto._rows(requests))
    long = [chat(Q * 80, max_tokens=2), chat(Q * 78, max_tokens=2)]
    assert min(len(r.prompt_ids) for r in auto._rows(long)) >= 512
    assert auto._use_per_row(auto._rows(long))
    with pytest.raises(EngineConfigError, match="prefill must be"):
        HFEngine(hf.model, hf.tokenizer, prefill="sometimes")  # type: ignore[arg-type]


def test_hf_bad_configuration_errors(hf: HFEngine, tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="cannot load"):
        HFEngine(tmp_path / "missing")
    with pytest.raises(EngineConfigError, match="dtype"):
        HFEngine(hf.model.config.name_or_path, dtype="float8")
    with pytest.raises(EngineConfigError, match="max_batch_size"):
        HFEngine(hf.model, hf.tokenizer, max_batch_size=0)
    no_template = HFEngine(hf.model, hf.tokenizer)
    no_template.tokenizer = type(hf.tokenizer).from_pretrained(hf.model.config.name_or_path)
    no_template.tokenizer.chat_template = None
    with pytest.raises(EngineConfigError, match="no chat template"):
        no_template.generate([chat(Q)])


# ------------------------------------------------------------------------------ vllm (GPU only)


def needs_vllm_gpu(fn):
    """Markers ``vllm`` + ``gpu``; skipped unless vllm is importable and CUDA is available."""
    for mark in (
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        pytest.mark.skipif(
            importlib.util.find_spec("vllm") is None, reason="vllm is not installed"
        ),
        pytest.mark.gpu,
        pytest.mark.vllm,
    ):
        fn = mark(fn)
    return fn


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir: Path):
    from agentflow_env.llm.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        str(tiny_model_dir), gpu_memory_utilization=0.2, enforce_eager=True, dtype="float32"
    )
    yield engine
    engine.close()


@needs_vllm_gpu
def test_vllm_generate_honours_settings_and_returns_logprobs(vllm_engine, hf: HFEngine) -> None:
    greedy, short, seeded_a, seeded_b = (
        vllm_engine.generate([chat(Q)]),
        vllm_engine.generate([chat(Q, max_tokens=3)]),
        vllm_engine.generate([chat(Q, temperature=1.0, seed=4, n=2, logprobs=True)]),
        vllm_engine.generate([chat(Q, temperature=1.0, seed=4, n=2, logprobs=True)]),
    )
    assert greedy[0].text == hf.generate([chat(Q)])[0].text
    assert short[0].completion_tokens == 3 and short[0].finish_reason == "length"
    assert [r.token_ids for r in seeded_a] == [r.token_ids for r in seeded_b]
    assert all(len(r.logprobs) == len(r.token_ids) for r in seeded_a)


@needs_vllm_gpu
def test_vllm_update_weights_changes_and_restores_outputs(vllm_engine, hf: HFEngine) -> None:
    before = vllm_engine.generate([chat(Q, max_tokens=20)])[0].text
    state = {k: v.detach().clone() for k, v in hf.model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.5 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    assert vllm_engine.update_weights(noisy) == len(noisy)
    assert vllm_engine.generate([chat(Q, max_tokens=20)])[0].text != before
    vllm_engine.update_weights(state)
    assert vllm_engine.generate([chat(Q, max_tokens=20)])[0].text == before
