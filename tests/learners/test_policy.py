"""Policy options: LoRA (peft) trains only adapters and saves merged weights; bad input is typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learners.policy import Policy, SamplingSettings, resolve_device


def test_lora_trains_adapters_only_and_saves_merged(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    pol = Policy.from_pretrained(
        tiny_model_dir,
        device="cpu",
        lora_rank=4,
        lora_target_modules=("q_proj", "v_proj"),
        gradient_checkpointing=True,
    )
    assert pol.is_lora and 0 < pol.num_parameters(trainable_only=True) < pol.num_parameters() // 5
    ctx = pol.text_ids("Query: hi\n### Step 1\n")
    out = pol.generate([ctx], SamplingSettings(temperature=1.0, max_new_tokens=6, seed=0))[0]
    seq, mask = ctx + out.token_ids, [False] * len(ctx) + [True] * len(out.token_ids)
    pol.model.train()
    logp, _ = pol.score([seq], [mask])
    (-logp.sum()).backward()
    grads = {n: p.grad for n, p in pol.model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)
    with torch.no_grad():
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        with pol.model.disable_adapter():
            base, _ = pol.score([seq], [mask])
        adapted, _ = pol.score([seq], [mask])
    assert not torch.allclose(base, adapted)
    saved = Policy.from_pretrained(pol.save(tmp_path / "merged"), device="cpu")
    assert not saved.is_lora
    with torch.no_grad():
        merged, _ = saved.score([seq], [mask])
    assert torch.allclose(merged, adapted, atol=1e-4)


def test_chat_template_prompt(tiny_model_dir: Path) -> None:
    pol = Policy.from_pretrained(tiny_model_dir, device="cpu", chat_template=True)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    text = pol.tokenizer.decode(pol.chat_prompt_ids(messages))
    assert text == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert pol.chat_prompt_text(messages) == text
    with pytest.raises(ValueError, match="chat_prompt_ids"):
        pol.prompt_ids("hello")  # a chat policy never reads the text observation
    raw = Policy.from_pretrained(tiny_model_dir, device="cpu")
    assert raw.tokenizer.decode(raw.prompt_ids("hello")) == "hello"


def test_bad_input_is_rejected(tiny_model_dir: Path) -> None:
    pol = Policy.from_pretrained(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="token 0"):
        pol.score([[1, 2]], [[True, True]])
    with pytest.raises(ValueError, match="mask of"):
        pol.score([[1, 2, 3]], [[False, True]])
    with pytest.raises(ValueError, match="at least one token"):
        pol.generate([[]], SamplingSettings())
    with pytest.raises(ValueError, match="dtype"):
        Policy.from_pretrained(tiny_model_dir, dtype="int8")
    assert resolve_device("cpu").type == "cpu"


def test_vllm_backend_needs_a_gpu() -> None:
    from learners.policy import VLLMGenerator

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the vLLM path is exercised elsewhere")
    with pytest.raises((ImportError, RuntimeError), match="vllm|CUDA"):
        VLLMGenerator("unused")


def test_length_grouped_chunks_keep_each_context_its_own_output(tiny_model_dir: Path) -> None:
    pol = Policy.from_pretrained(tiny_model_dir, device="cpu")
    prompts = [
        "Query: a much longer question about many things\n### Step 1\n",
        "Q: hi\n",
        "Query: medium length\n### Step 1\n",
        "Q\n",
        "Query: x y z\n",
    ]
    contexts = [pol.text_ids(p) for p in prompts]
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=8)
    pol.generator.max_batch_size = 2  # 3 chunks, contexts reordered by length inside generate
    chunked = pol.generate(contexts, greedy)
    alone = [pol.generate([c], greedy)[0] for c in contexts]  # no padding at all
    assert [o.token_ids for o in chunked] == [o.token_ids for o in alone]
    for ctx, out in zip(contexts, chunked, strict=False):  # log-probs belong to their own context
        mask = [False] * len(ctx) + [True] * len(out.token_ids)
        with torch.no_grad():
            logp, _ = pol.score([ctx + out.token_ids], [mask])
        assert torch.allclose(
            logp.reshape(-1).double(), torch.tensor(out.logprobs, dtype=torch.float64), atol=1e-4
        )


def test_policy_generates_through_the_env_backend_from_the_weights_it_trains(
    tiny_model_dir: Path,
) -> None:
    from agentflow_env.llm import GenerationRequest
    from agentflow_env.llm.hf_engine import HFEngine

    pol = Policy.from_pretrained(tiny_model_dir, device="cpu")
    assert pol.generator.backend.model is pol.causal_lm  # no copy: the trained module samples
    text = "Query: Where was Ada Lane born?\n### Step 1\n"
    ctx = pol.text_ids(text)
    engine = HFEngine(pol.causal_lm, pol.tokenizer)
    request = GenerationRequest(prompt=text, sampling={"max_tokens": 12})
    assert engine._encode(request) == ctx
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=12)

    def both() -> tuple[list[int], list[int]]:
        return pol.generate([ctx], greedy)[0].token_ids, engine.generate([request])[0].token_ids

    before, from_engine = both()
    assert before == from_engine  # one implementation: the same ids from the same weights
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an "update": both see it at once
        for p in pol.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    after, from_engine = both()
    assert after == from_engine and after != before


def test_each_context_samples_from_its_own_seed(tiny_model_dir: Path) -> None:
    pol = Policy.from_pretrained(tiny_model_dir, device="cpu")
    a, b, c = (pol.text_ids(p) for p in ("Query: a\n### Step 1\n", "Q: b\n", "Query: c c c\n"))
    hot = SamplingSettings(temperature=1.5, max_new_tokens=16, seed=9)
    rng_state = torch.random.get_rng_state()
    first = pol.generate([a, b], hot)[0]
    assert pol.generate([a, c], hot)[0].token_ids == first.token_ids  # whatever else is sampled
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the global RNG is untouched
    group = pol.generate([a] * 6, hot)  # one question's group: every trajectory its own draw
    assert len({tuple(o.token_ids) for o in group}) >= 2


def test_vllm_generation_refuses_lora_adapters(tiny_model_dir: Path) -> None:
    pytest.importorskip("peft")
    pol = Policy.from_pretrained(tiny_model_dir, device="cpu", lora_rank=4)
    with pytest.raises(ValueError, match="LoRA"):
        pol.use_vllm(str(tiny_model_dir))


@pytest.mark.gpu
@pytest.mark.vllm
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vllm_policy_logprobs_match_the_loss_and_follow_weight_syncs(tiny_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    pol = Policy.from_pretrained(tiny_model_dir, device="cuda")
    pol.use_vllm(str(tiny_model_dir), dtype="float32", gpu_memory_utilization=0.2)
    ctx = [pol.text_ids("Query: Where was Ada Lane born?\n### Step 1\n")] * 4
    outs = pol.generate(ctx, SamplingSettings(temperature=0.7, max_new_tokens=16, seed=3))
    assert len({tuple(o.token_ids) for o in outs}) >= 2  # per-context seeds, not one for all
    seqs = [c + o.token_ids for c, o in zip(ctx, outs, strict=True)]
    masks = [[False] * len(c) + [True] * len(o.token_ids) for c, o in zip(ctx, outs, strict=True)]
    with torch.no_grad():
        logp, _ = pol.score(seqs, masks, temperature=0.7)
    sampled = torch.tensor([x for o in outs for x in o.logprobs], device=logp.device)
    assert torch.allclose(logp, sampled, atol=1e-3)
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=16)
    before = pol.generate(ctx[:1], greedy)[0].token_ids
    state = {k: v.detach().clone() for k, v in pol.model.state_dict().items()}
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for p in pol.model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen, device=p.device))
    pol.sync_generator()
    assert pol.generate(ctx[:1], greedy)[0].token_ids != before
    pol.model.load_state_dict(state)
    pol.sync_generator()
    assert pol.generate(ctx[:1], greedy)[0].token_ids == before
