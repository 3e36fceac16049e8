"""Constrained generation on a real model: llguidance (the hf engine's), outlines-core and
xgrammar side by side, and unconstrained generation as the baseline.

Each library masks the same SmolLM2-135M-Instruct batches through the same hook (a per-row logits
processor of :class:`~agentflow_env.llm.hf_backend.HFBackend`), so only the mask computation
differs. Per library and constraint kind (choice, regex, JSON schema, Lark grammar): seconds for
the batch, new tokens, milliseconds per token spent inside the library (mask + advance, timed
around its calls), how many outputs match the constraint (judged by
:func:`agentflow_env.llm.structured.match_text`), and the one-off setup (tokenizer vocabulary,
grammar compile). A library that is not installed, or has no such constraint kind (outlines-core
has no context-free grammars), is reported as such.

    python benchmarks/structured_generation.py [--quick] [--batch 8] [--max-tokens 48]
        [--out benchmarks/results/structured_generation.json]

Needs the fetched model (``python -m agentflow_env.llm fetch smollm2-135m-instruct``) and the
``structured`` extra; outlines-core and xgrammar are measured when importable (xgrammar pulls
triton, ~1 GB, so it is not a dependency: ``pip install --no-deps --target DIR xgrammar
apache-tvm-ffi`` and ``PYTHONPATH=DIR`` measure it without).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agentflow_env.llm import Constraint, GenerationRequest, HFEngine, SamplingParams
from agentflow_env.llm.base import TokenPrompt
from agentflow_env.llm.models import fetched_path
from agentflow_env.llm.structured import compile_constraint, import_llguidance, match_text
from benchmarks.common import machine_info

console = Console()
MODEL = "smollm2-135m-instruct"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
    },
    "required": ["city", "country"],
    "additionalProperties": False,
}
CASES: dict[str, tuple[Constraint, str]] = {
    "choice": (
        Constraint.choice(["STOP", "CONTINUE"]),
        "The memory answers the question about {x}. Should the agent STOP or CONTINUE?",
    ),
    "regex": (Constraint.regex(r"[0-9]{1,4}"), "How many {x} are there? Answer with a number."),
    "json": (Constraint.json(SCHEMA), "Give the capital city of {x} as JSON."),
    "grammar": (
        Constraint.lark(
            'start: "Tool Name: " TOOL "\\nCommand: " CMD\n'
            'TOOL: "Search_Tool" | "Python_Coder_Tool"\n'
            "CMD: /[a-zA-Z0-9 ]{1,60}/"
        ),
        "Which tool finds facts about {x}? Write the tool name and the search query.",
    ),
}
TOPICS = ["France", "Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "Canada"]


class Timed:
    """Wraps a per-row processor and adds the time spent inside it to a shared counter."""

    def __init__(self, inner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], clock: list):
        self.inner, self.clock = inner, clock

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.inner(ids, scores)
        self.clock[0] += time.perf_counter() - start
        return out


def _mask_scores(scores: torch.Tensor, allowed: np.ndarray) -> torch.Tensor:
    forbid = np.ones(scores.shape[-1], dtype=bool)
    forbid[: len(allowed)] = ~allowed[: scores.shape[-1]]
    return scores.masked_fill(torch.from_numpy(forbid), float("-inf"))


# ----------------------------------------------------------------------------- the libraries
def llguidance_factory(engine: HFEngine) -> tuple[Callable[[Constraint], Any], float]:
    from agentflow_env.llm.structured import masker_for

    start = time.perf_counter()
    masker = masker_for(engine.tokenizer, engine.backend.eos_ids)  # type: ignore[union-attr]
    setup = time.perf_counter() - start
    return masker.processor, setup


class _OutlinesRow:
    def __init__(self, guide: Any, vocab: int) -> None:
        self.guide, self.start, self.fed = guide, None, 0
        self.bitmask = np.zeros((vocab + 31) // 32, dtype=np.int32)

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = ids.shape[1]
        for token in ids[0, self.start + self.fed :].tolist():
            self.guide.advance(token, return_tokens=False)
            self.fed += 1
        self.guide.write_mask_into(self.bitmask.ctypes.data, self.bitmask.size, 4)
        bits = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little").astype(bool)
        return _mask_scores(scores, bits)


def outlines_factory(engine: HFEngine) -> tuple[Callable[[Constraint], Any], float]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    from agentflow_env.llm.constraints import regex_escape

    tokenizer = engine.tokenizer
    start = time.perf_counter()
    eos = tokenizer.eos_token_id
    # the vocabulary as byte strings: outlines-core's from_pretrained needs the Hub
    mapping: dict[bytes, list[int]] = {}
    for token, i in tokenizer.get_vocab().items():
        if i == eos or i in tokenizer.all_special_ids:
            continue
        text = tokenizer.convert_tokens_to_string([token])
        mapping.setdefault(text.encode("utf-8", "surrogatepass"), []).append(i)
    vocabulary = Vocabulary(eos, mapping)
    setup = time.perf_counter() - start

    def make(constraint: Constraint) -> Any:
        if constraint.kind == "grammar":
            raise NotImplementedError("outlines-core has no context-free grammars")
        if constraint.kind == "choice":
            regex = "|".join(f"({regex_escape(c)})" for c in constraint.value)
        elif constraint.kind == "json":
            regex = build_regex_from_schema(constraint.json_schema)
        else:
            regex = constraint.pattern
        return _OutlinesRow(Guide(_index(regex, vocabulary, Index)), len(tokenizer))

    return make, setup


_INDEXES: dict[str, Any] = {}


def _index(regex: str, vocabulary: Any, index_cls: Any) -> Any:
    if regex not in _INDEXES:  # the index is the compiled grammar: built once per constraint
        _INDEXES[regex] = index_cls(regex, vocabulary)
    return _INDEXES[regex]


class _XGrammarRow:
    def __init__(self, matcher: Any, xgr: Any, vocab: int) -> None:
        self.matcher, self.xgr, self.start, self.fed = matcher, xgr, None, 0
        self.bitmask = xgr.allocate_token_bitmask(1, vocab)

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = ids.shape[1]
        for token in ids[0, self.start + self.fed :].tolist():
            self.matcher.accept_token(token)
            self.fed += 1
        self.matcher.fill_next_token_bitmask(self.bitmask)
        bits = np.unpackbits(self.bitmask.numpy().view(np.uint8), bitorder="little").astype(bool)
        return _mask_scores(scores, bits)


def xgrammar_factory(engine: HFEngine) -> tuple[Callable[[Constraint], Any], float]:
    import xgrammar as xgr

    start = time.perf_counter()
    vocab = int(engine.model.config.vocab_size)  # type: ignore[union-attr]
    info = xgr.TokenizerInfo.from_huggingface(engine.tokenizer, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info)
    setup = time.perf_counter() - start
    compiled: dict[Constraint, Any] = {}

    def make(constraint: Constraint) -> Any:
        if constraint not in compiled:
            if constraint.kind == "choice":
                from agentflow_env.llm.constraints import regex_escape

                regex = "|".join(f"({regex_escape(c)})" for c in constraint.value)
                compiled[constraint] = compiler.compile_regex(regex)
            elif constraint.kind == "regex":
                compiled[constraint] = compiler.compile_regex(constraint.pattern)
            elif constraint.kind == "json":
                compiled[constraint] = compiler.compile_json_schema(constraint.json_schema)
            else:
                compiled[constraint] = compiler.compile_lark(constraint.grammar)
        return _XGrammarRow(xgr.GrammarMatcher(compiled[constraint]), xgr, vocab)

    return make, setup


LIBRARIES: dict[str, Callable[[HFEngine], tuple[Callable[[Constraint], Any], float]]] = {
    "llguidance": llguidance_factory,
    "outlines-core": outlines_factory,
    "xgrammar": xgrammar_factory,
}


# ----------------------------------------------------------------------------- measuring
def run_case(
    engine: HFEngine,
    kind: str,
    make: Callable[[Constraint], Any] | None,
    batch: int,
    max_tokens: int,
) -> dict[str, Any]:
    constraint, template = CASES[kind]
    sampling = SamplingParams(max_tokens=max_tokens)
    prompts = [
        engine._encode(GenerationRequest.chat(template.format(x=TOPICS[i % len(TOPICS)])))
        for i in range(batch)
    ]
    clock = [0.0]
    compile_s = 0.0
    rows = []
    for ids in prompts:
        processor = None
        if make is not None:
            start = time.perf_counter()
            processor = Timed(make(constraint), clock)
            compile_s += time.perf_counter() - start
        rows.append(TokenPrompt(ids, sampling, seed=0, logits_processor=processor))
    start = time.perf_counter()
    completions = engine.backend.generate(rows)  # type: ignore[union-attr]
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for c in completions)
    matched = sum(match_text(constraint, c.text) == "complete" for c in completions)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "library_ms_per_token": 1000 * clock[0] / max(tokens, 1),
        "library_share": clock[0] / seconds,
        "processor_setup_s": compile_s,
        "matched": matched,
        "outputs": batch,
        "example": completions[0].text,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 2, 16 tokens")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: see NOTES)")
    p.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "structured_generation.json")
    )
    args = p.parse_args(argv)
    batch, max_tokens = (2, 16) if args.quick else (args.batch, args.max_tokens)
    path = fetched_path(MODEL)
    if path is None:
        console.print(f"[red]{MODEL} is not fetched: python -m agentflow_env.llm fetch {MODEL}")
        return 2
    import_llguidance()
    torch.set_num_threads(args.threads)
    engine = HFEngine(path, max_batch_size=batch)
    for kind in CASES:  # compile every constraint once (cached), outside the timings
        compile_constraint(CASES[kind][0])
    results: list[dict[str, Any]] = []
    baseline = {kind: run_case(engine, kind, None, batch, max_tokens) for kind in CASES}
    for kind, row in baseline.items():
        results.append({"library": "none", "kind": kind, "setup_s": 0.0, **row})
    for name, factory in LIBRARIES.items():
        try:
            make, setup = factory(engine)
        except ImportError as exc:
            results.append({"library": name, "kind": "all", "skipped": f"not installed: {exc}"})
            continue
        for kind in CASES:
            try:
                row = run_case(engine, kind, make, batch, max_tokens)
            except NotImplementedError as exc:
                results.append({"library": name, "kind": kind, "skipped": str(exc)})
                continue
            row["vs_unconstrained_tokens_per_s"] = (
                row["tokens_per_s"] / baseline[kind]["tokens_per_s"]
            )
            results.append({"library": name, "kind": kind, "setup_s": setup, **row})
    engine.close()
    table = Table(title=f"Constrained generation, {MODEL}, batch {batch}, greedy")
    for col in ("library", "kind", "tok/s", "ms/tok in library", "share", "matched", "setup s"):
        table.add_column(col)
    for r in results:
        if "skipped" in r:
            table.add_row(r["library"], r["kind"], r["skipped"][:60], "", "", "", "")
            continue
        table.add_row(
            r["library"],
            r["kind"],
            f"{r['tokens_per_s']:.1f}",
            f"{r['library_ms_per_token']:.2f}",
            f"{100 * r['library_share']:.1f}%",
            f"{r['matched']}/{r['outputs']}",
            f"{r['setup_s']:.2f}",
        )
    console.print(table)
    out = {
        "model": MODEL,
        "batch": batch,
        "max_tokens": max_tokens,
        "quick": args.quick,
        "machine": machine_info(threads=args.threads),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
