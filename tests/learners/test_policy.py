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
