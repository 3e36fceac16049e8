"""Shared fixtures (imported by every test: keep this file small and its imports cheap)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO_ROOT.parent / "shared" / "benchmarks" / "agentflow"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 chat model (local BPE tokenizer, ChatML template), briefly trained so that it
    writes planner-like steps and stops on ``<|im_end|>``. Built once per session (seconds)."""
    import torch

    from learners.tiny import make_tiny_chat_model

    # One thread: on a shared 2-core machine, two OpenMP threads competing with other processes
    # made this ~15x slower (measured 196 s vs 13 s under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_tiny_chat_model(
            tmp_path_factory.mktemp("tiny-model") / "model", steps=150, seed=0
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_benchmarks_dir() -> Path:
    """``<repo>/../shared/benchmarks/agentflow`` (the paper's 10 evaluation files), or skip."""
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"../shared/benchmarks/agentflow not found: {SHARED_BENCHMARKS} does not exist")
    return SHARED_BENCHMARKS


REAL_MODEL = "smollm2-135m-instruct"
FETCH_HINT = f"python -m agentflow_env.llm fetch {REAL_MODEL}"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The fetched SmolLM2-135M-Instruct checkpoint (a real instruct model), or skip.

    CI fetches it (``.ci/run`` runs the README's test command, which fetches it first).
    """
    from agentflow_env.llm.models import fetched_path

    path = fetched_path(REAL_MODEL)
    if path is None:
        pytest.skip(f"the real model {REAL_MODEL} is not fetched: run `{FETCH_HINT}`")
    return path


@pytest.fixture
def sigint_caught() -> Iterator[None]:
    """SIGINT handled by Python in this process (and so at its default in the processes it
    starts, whose Python then catches it), even where the test run inherited SIGINT ignored (a
    job started in the background by a non-interactive shell): tests that stop a child with
    Ctrl-C, or check what a worker catches, need it."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
