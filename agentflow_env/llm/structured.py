"""Constraints compiled with llguidance: token masks for transformers, and checks of finished text.

The one place that talks to llguidance (the ``structured`` extra). Why llguidance: it takes all
four constraint kinds (choice, regex, JSON schema, Lark grammar) natively, computes a mask in
well under a millisecond per token, builds its tokenizer from a local Hugging Face tokenizer with
no network, and is the library behind vLLM's ``guidance`` backend, so a Lark grammar means the
same thing in both engines; ``benchmarks/structured_generation.py`` compares it with
outlines-core and xgrammar (numbers in the README).

- :func:`compile_constraint` turns a :class:`~agentflow_env.llm.constraints.Constraint` into an
  llguidance grammar, or raises :class:`InvalidConstraintError` with the compiler's message;
- :class:`TokenMasker` (one per transformers tokenizer) makes per-row logits processors for
  :class:`~agentflow_env.llm.hf_backend.HFBackend`: each masks, at every step, the tokens the
  constraint does not allow after the row's tokens so far; when the constraint is complete only
  EOS (or a continuation the constraint allows) remains. The mask is applied by hand (no
  ``llguidance.torch``, which calls ``torch.compile``: 13 s on first use and a C compiler);
- :func:`match_text` judges a finished text (``complete`` / ``prefix`` / ``mismatch``) on its
  UTF-8 bytes, whatever model wrote it, and :func:`violation` turns that into the message an
  engine raises for a completion that ignored its constraint. JSON is checked with any
  whitespace allowed (servers format JSON their own way; the hf engine allows one space at most);
- :func:`constraint_fields` says a constraint in a server's terms (:data:`STRUCTURED_DIALECTS`:
  vLLM's ``structured_outputs``, its older ``guided_*`` fields, SGLang's, OpenAI's
  ``response_format``), for :class:`~agentflow_env.llm.openai_engine.OpenAIEngine`; it needs no
  llguidance.
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from agentflow_env.llm.common import (
    ConstraintUnsupportedError,
    EngineDependencyError,
    InvalidConstraintError,
)
from agentflow_env.llm.constraints import Constraint, regex_escape

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONSTRAINT_FIELDS",
    "STRUCTURED_DIALECTS",
    "ConstraintProcessor",
    "Match",
    "TokenMasker",
    "check_constraint",
    "compile_constraint",
    "constraint_fields",
    "import_llguidance",
    "masker_for",
    "match_text",
    "violation",
]

Match = Literal["complete", "prefix", "mismatch"]
"""``complete``: the text matches; ``prefix``: it can still be completed into a match (a text cut
by ``max_tokens`` or a stop string); ``mismatch``: no continuation matches"""

INSTALL_HINT = "pip install 'agentflow-gym[structured]'"


def import_llguidance() -> Any:
    """The llguidance module, or :class:`EngineDependencyError` saying how to get it."""
    try:
        import llguidance
        import llguidance.hf  # noqa: F401  (from_tokenizer)
    except ImportError as exc:
        raise EngineDependencyError(
            f"constrained generation needs llguidance: {INSTALL_HINT} (import error: {exc})"
        ) from exc
    return llguidance


@functools.lru_cache(maxsize=512)
def compile_constraint(constraint: Constraint, lenient_json: bool = False) -> str:
    """The llguidance grammar of ``constraint`` (cached), checked for errors.

    ``lenient_json``: JSON may carry any whitespace between tokens (for checking text that a
    server formatted); otherwise at most one space (a small model under a JSON grammar that
    allows any whitespace can fill ``max_tokens`` with blank lines).

    Raises:
        InvalidConstraintError: a bad regex, grammar or schema (llguidance's message).
        EngineDependencyError: llguidance is not installed.
    """
    llg = import_llguidance()
    if constraint.kind == "choice":
        grammar = llg.grammar_from("choice", json.dumps(list(constraint.choices or ())))
    elif constraint.kind == "regex":
        grammar = llg.grammar_from("regex", constraint.pattern)
    elif constraint.kind == "grammar":
        grammar = llg.grammar_from("lark", constraint.grammar)
    else:
        options = {"whitespace_flexible": True} if lenient_json else {"whitespace_pattern": "[ ]?"}
        try:
            grammar = llg.LLMatcher.grammar_from_json_schema(
                constraint.json_schema, overrides=options
            )
        except ValueError as exc:
            raise InvalidConstraintError(f"bad JSON schema constraint: {exc}") from exc
    error = llg.LLMatcher.validate_grammar(grammar, _byte_tokenizer())
    if error:
        raise InvalidConstraintError(
            f"cannot compile the {constraint.kind} constraint "
            f"({constraint.describe()}): {error.strip()}"
        )
    return str(grammar)


def check_constraint(constraint: Constraint) -> None:
    """Raise :class:`InvalidConstraintError` now if ``constraint`` cannot be compiled."""
    compile_constraint(constraint)


StructuredDialect = Literal["vllm", "vllm-guided", "sglang", "openai"]
STRUCTURED_DIALECTS: tuple[str, ...] = get_args(StructuredDialect)
"""how a constraint is sent: ``vllm`` (``structured_outputs: {choice|regex|json|grammar}``,
vLLM >= 0.11 and ``python -m agentflow_env.llm serve``), ``vllm-guided`` (``guided_choice``,
``guided_regex``, ``guided_json``, ``guided_grammar``: older vLLM), ``sglang`` (``regex``,
``json_schema``, ``ebnf``; a choice goes as a regex; a Lark grammar needs SGLang's llguidance
grammar backend) or ``openai`` (``response_format`` ``json_schema``, strict: JSON constraints of
chat requests only)"""
CONSTRAINT_FIELDS = (
    "structured_outputs",
    "guided_",
    "response_format",
    "json_schema",
    "regex",
    "ebnf",
    "grammar",
)
"""words that name a constraint field in a server's refusal (HTTP 400/422) of one"""


def constraint_fields(
    constraint: Constraint, dialect: str, chat: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(standard request parameters, extra body fields) that ask a server of ``dialect`` for
    ``constraint``.

    Raises:
        ConstraintUnsupportedError: the dialect has no way to say it (e.g. a regex in the OpenAI
            API, or any constraint on a raw-prompt request there).
    """
    kind, value = constraint.kind, constraint.value
    if dialect == "openai":
        if kind != "json" or not chat:
            raise ConstraintUnsupportedError(
                f"the OpenAI API takes only JSON-schema constraints on chat requests, not a "
                f"{kind} constraint{'' if chat else ' on a raw prompt'}; use a vLLM/SGLang "
                "server (structured_outputs='vllm'/'sglang') or the hf engine"
            )
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "constraint", "schema": value, "strict": True},
        }
        return {"response_format": response_format}, {}
    if dialect == "vllm":
        return {}, {"structured_outputs": {kind: value}}
    if dialect == "vllm-guided":
        return {}, {f"guided_{kind}": value}
    if dialect == "sglang":
        if kind == "choice":
            return {}, {"regex": "|".join(f"({regex_escape(c)})" for c in value)}
        key = {"regex": "regex", "json": "json_schema", "grammar": "ebnf"}[kind]
        return {}, {key: constraint.json_schema if kind == "json" else value}
    raise ConstraintUnsupportedError(
        f"unknown structured_outputs dialect {dialect!r}; valid: {', '.join(STRUCTURED_DIALECTS)}"
    )


# ----------------------------------------------------------------------------- text checks
class _ByteVocabulary:
    """A tokenizer whose tokens are the 256 bytes (and an EOS): llguidance then judges text."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b""]
    special_token_ids = [256]

    def __call__(self, data: bytes) -> list[int]:
        return list(data)


@functools.lru_cache(maxsize=1)
def _byte_tokenizer() -> Any:
    llg = import_llguidance()
    return llg.LLTokenizer(llg.TokenizerWrapper(_ByteVocabulary()))


def match_text(constraint: Constraint, text: str) -> Match:
    """Whether ``text`` matches ``constraint``, can still be completed into a match, or neither."""
    llg = import_llguidance()
    matcher = llg.LLMatcher(
        _byte_tokenizer(), compile_constraint(constraint, lenient_json=True), log_level=0
    )
    if not matcher.consume_tokens(list(text.encode("utf-8"))):
        return "mismatch"
    return "complete" if matcher.is_accepting() else "prefix"


def violation(constraint: Constraint, text: str, *, cut_short: bool) -> str | None:
    """Why ``text`` breaks ``constraint``, or ``None`` when it is fine.

    ``cut_short``: the completion ended at ``max_tokens`` or a stop string, so a prefix of a
    matching text is fine; otherwise the whole text must match.
    """
    found = match_text(constraint, text)
    if found == "complete" or (found == "prefix" and cut_short):
        return None
    what = "is not a prefix of any text" if found == "mismatch" else "stops before the end of"
    return f"the completion {_excerpt(text)} {what} matching the constraint {constraint.describe()}"


def _excerpt(text: str, limit: int = 160) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# ----------------------------------------------------------------------------- token masks
class TokenMasker:
    """Per-row constraint processors for one transformers tokenizer (its llguidance tokenizer,
    ~1 s to build, is made once here).

    Args:
        tokenizer: a fast Hugging Face tokenizer.
        eos_ids: every id that ends generation (all are allowed where the constraint is done).
    """

    def __init__(self, tokenizer: Any, eos_ids: Iterable[int]) -> None:
        llg = import_llguidance()
        self.eos_ids = sorted(eos_ids)
        try:
            self.lltokenizer = llg.hf.from_tokenizer(tokenizer, eos_token=self.eos_ids)
        except ValueError as exc:  # a slow (Python) tokenizer
            raise EngineDependencyError(
                f"constrained generation needs a fast tokenizer (tokenizers library): {exc}"
            ) from exc
        self.vocab = int(self.lltokenizer.vocab_size)

    def processor(self, constraint: Constraint) -> ConstraintProcessor:
        """A fresh, stateful processor for one completion."""
        llg = import_llguidance()
        matcher = llg.LLMatcher(self.lltokenizer, compile_constraint(constraint), log_level=0)
        if matcher.is_error():  # compile_constraint validated it: a tokenizer-specific problem
            raise InvalidConstraintError(
                f"cannot use the constraint {constraint.describe()}: {matcher.get_error()}"
            )
        return ConstraintProcessor(matcher, self.vocab, self.eos_ids)


_MASKERS: weakref.WeakKeyDictionary[Any, TokenMasker] = weakref.WeakKeyDictionary()
_MASKERS_LOCK = threading.Lock()


def masker_for(tokenizer: Any, eos_ids: Iterable[int]) -> TokenMasker:
    """The :class:`TokenMasker` of ``tokenizer`` (built once per tokenizer object)."""
    with _MASKERS_LOCK:
        masker = _MASKERS.get(tokenizer)
        if masker is None or masker.eos_ids != sorted(eos_ids):
            masker = TokenMasker(tokenizer, eos_ids)
            _MASKERS[tokenizer] = masker
        return masker


class ConstraintProcessor:
    """``(ids [1, L], scores [1, V]) -> scores`` with every token the constraint forbids at
    ``-inf``; ``ids`` are the row's prompt and its tokens so far (the first call sees the prompt
    alone). Tokens past the tokenizer's vocabulary (padding rows of the output layer) are always
    forbidden.

    If the matcher ever fails (a token outside the mask was fed: not expected), only EOS is
    allowed from then on and :attr:`error` says why.
    """

    def __init__(self, matcher: Any, vocab: int, eos_ids: list[int]) -> None:
        self.matcher = matcher
        self.vocab = vocab
        self.eos_ids = eos_ids
        self.prompt_len: int | None = None
        self.fed = 0
        self.error: str | None = None
        self._bias: np.ndarray | None = None  # reused each step: 0 where allowed, -inf where not

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if self.prompt_len is None:
            self.prompt_len = int(ids.shape[1])
        new = ids[0, self.prompt_len + self.fed :].tolist()
        self.fed += len(new)
        if self.error is None and new and not self.matcher.consume_tokens(new):
            self.error = self.matcher.get_error() or "the constraint rejected a token"
        width = int(scores.shape[-1])
        if self._bias is None or len(self._bias) != width:
            self._bias = np.full(width, -np.inf, dtype=np.float32)  # past the tokenizer: -inf
        n = min(self.vocab, width)
        bias = self._bias
        allowed = self.error is None
        if allowed:
            bits = np.unpackbits(
                np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8),
                count=n,
                bitorder="little",
            )
            # 0 where a bit is set, -inf where not, branch-free (np.where / masked_fill branch per
            # token: ~400 us for a 49k vocabulary with a mixed mask, this ~80 us)
            with np.errstate(divide="ignore"):
                np.divide(np.float32(-1.0), bits, out=bias[:n], dtype=np.float32, casting="unsafe")
            np.add(bias[:n], np.float32(1.0), out=bias[:n])
            allowed = bool(bits.any())
        if not allowed:  # a failed matcher (not expected) or an empty mask: end the row
            bias[:] = -np.inf
            bias[[i for i in self.eos_ids if i < width]] = 0.0
        # One torch op: each small torch op is slow on a busy CPU's thread pool.
        return scores + torch.from_numpy(bias).to(scores.device, scores.dtype)
