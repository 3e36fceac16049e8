"""Text observations to ``Box`` features: the other half of using AgentFlow with stable-baselines3.

:class:`TextFeatureWrapper` maps the text observation (and, after a
:class:`~agentflow_env.wrappers.candidates.CandidateActionWrapper`, the K candidates) to one
float32 vector in ``[-1, 1]``. Featurizers turn a batch of texts into vectors:

- :class:`HashedNGramFeaturizer`: signed feature hashing of word n-grams (blake2b, so features are
  identical across processes and Python versions — Python's ``hash`` is salted per process).
- :class:`EmbeddingFeaturizer`: a local sentence-embedding model (any transformers encoder or
  decoder loaded from a path), mean-pooled over tokens and L2-normalized.

Besides the featurizer's view of each candidate the wrapper adds a few *relation* features per
candidate (which tool it calls, whether its argument repeats the question, appears in the last
result, near words of the question, was already searched, ...). Hashed n-grams of entity names
do not carry over from one question to the next; these relations do, which is what lets a small
policy learn a rule such as "search the question, then answer with the name that the last
result mentions next to the question's words" and beat random choice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agentflow_env.format import (
    FINISH,
    ObservationView,
    parse_action,
    read_action,
    split_observation,
)
from agentflow_env.wrappers._text import STOP_WORDS, normalize, tokens
from tools.search.format import passage_titles, top_passage

__all__ = [
    "RELATION_NAMES",
    "EmbeddingFeaturizer",
    "Featurizer",
    "HashedNGramFeaturizer",
    "TextFeatureWrapper",
    "candidate_relations",
]

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


@runtime_checkable
class Featurizer(Protocol):
    """Texts to vectors: ``__call__(texts) -> float32 array of shape (len(texts), dim)``.

    Values must lie in ``[-1, 1]`` (the wrapper's ``Box`` bounds).
    """

    dim: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


# ---------------------------------------------------------------------------------- featurizers
class HashedNGramFeaturizer:
    """Signed feature hashing of word n-grams, L2-normalized.

    ## Description
    Lowercase alphanumeric tokens; every n-gram of order 1..``n`` is hashed with blake2b into one
    of ``dim`` buckets with a sign from the same digest (signed hashing keeps collisions unbiased).
    The vector is divided by its L2 norm, so every value lies in ``[-1, 1]``; an empty text maps
    to zeros. Deterministic across processes, machines and Python versions.

    ## Arguments
    ``dim``: number of buckets (>= 8); ``n``: largest n-gram order (>= 1); ``salt``: bytes mixed
    into the hash (different salts give independent hash functions).
    """

    def __init__(self, dim: int = 256, n: int = 2, *, salt: bytes = b"agentflow") -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 8:
            raise ValueError(f"dim must be an integer >= 8, got {dim!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        self.dim, self.n, self.salt = dim, n, bytes(salt)
        self._bucket = lru_cache(maxsize=200_000)(self._bucket_uncached)

    def _bucket_uncached(self, gram: str) -> tuple[int, float]:
        digest = hashlib.blake2b(gram.encode("utf-8"), digest_size=8, key=self.salt[:64]).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def _one(self, text: str) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float64)
        toks = tokens(text)
        for order in range(1, self.n + 1):
            for i in range(len(toks) - order + 1):
                index, sign = self._bucket(" ".join(toks[i : i + order]))
                out[index] += sign
        norm = np.linalg.norm(out)
        return (out / norm if norm > 0 else out).astype(np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._one(t) for t in texts])

    def __repr__(self) -> str:
        return f"HashedNGramFeaturizer(dim={self.dim}, n={self.n})"


class EmbeddingFeaturizer:
    """A local sentence-embedding model: mean pooling over tokens, then L2 normalization.

    ## Description
    Loads ``AutoTokenizer`` and ``AutoModel`` from ``model_path`` (a directory; nothing is
    downloaded: ``local_files_only=True``). A text's vector is the mean of the last hidden
    states over its non-padding tokens, divided by its L2 norm; ``dim`` is the model's hidden
    size. Texts longer than ``max_length`` tokens are cut (keeping the end, where the latest
    steps of an observation are, when ``truncation_side="left"``).

    ## Arguments
    ``model_path``; ``max_length`` (512); ``batch_size`` (16); ``device`` ("cpu");
    ``truncation_side`` ("left" | "right").
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_length: int = 512,
        batch_size: int = 16,
        device: str = "cpu",
        truncation_side: str = "left",
    ) -> None:
        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"EmbeddingFeaturizer needs a local model directory, {path} is not one"
            )
        if truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {truncation_side!r}")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.truncation_side = truncation_side
        if self.tokenizer.pad_token is None:
            # Padding positions are masked out of the mean, so any existing token can pad.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.tokenizer.pad_token is None:
            raise ValueError(f"the tokenizer at {path} has no pad, eos or unk token to pad with")
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                batch = {
                    k: v.to(self.device)
                    for k, v in batch.items()
                    if k in ("input_ids", "attention_mask")
                }
                hidden = self.model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                chunks.append(torch.nn.functional.normalize(mean, dim=-1).cpu().numpy())
        return np.clip(np.concatenate(chunks).astype(np.float32), -1.0, 1.0)


# ------------------------------------------------------------------------ relation features
RELATION_NAMES: tuple[str, ...] = (
    "valid",
    "finish",
    "tool_other",
    "question_recall",
    "arg_in_question",
    "arg_in_last_result",
    "arg_in_any_result",
    "arg_is_title",
    "arg_early_in_result",
    "arg_repeated",
    "context_overlap",
    "arg_length",
    "is_padding_repeat",
    "arg_in_top_passage",
    "top_context_overlap",
)
"""Per-candidate relation features, in order, after ``max_tools`` one-hot tool slots."""
PROGRESS_EXTRA = 5
"""progress features after the turn one-hot: last result is an error / empty, question coverage by
the top passage of the last result, by the last result, by any result"""


def _stem(token: str) -> str:
    """Crude suffix stripping so that "founder", "founded" and "founding" meet."""
    for suffix in ("ing", "ers", "er", "ed", "es", "s"):
        if len(token) > len(suffix) + 3 and token.endswith(suffix):
            return token[: -len(suffix)]
    return token


def _content(text: str) -> list[str]:
    """Stemmed content words."""
    return [_stem(t) for t in tokens(text) if t not in STOP_WORDS]


def _fraction(part: Sequence[str], whole: set[str]) -> float:
    return sum(t in whole for t in part) / len(part) if part else 0.0


def candidate_relations(
    view: ObservationView, candidate: str, max_tools: int = 4, repeated: bool = False
) -> np.ndarray:
    """Relation features of one candidate to the observation (values in [0, 1]).

    Layout: ``max_tools`` one-hot slots for the tools in the order the observation lists them,
    then :data:`RELATION_NAMES`. The candidate's *argument* is its command (tool call) or its
    ``<answer>`` (finish).
    """
    out = np.zeros(max_tools + len(RELATION_NAMES), dtype=np.float32)
    rel = {name: max_tools + i for i, name in enumerate(RELATION_NAMES)}
    out[rel["is_padding_repeat"]] = float(repeated)
    if not candidate:
        return out
    action = parse_action(candidate, view.tool_names)
    if action.error is not None:
        return out
    out[rel["valid"]] = 1.0
    if action.tool_name == FINISH:
        out[rel["finish"]] = 1.0
        arg = action.answer or ""
    else:
        index = (
            view.tool_names.index(action.tool_name) if action.tool_name in view.tool_names else -1
        )
        out[index if 0 <= index < max_tools else rel["tool_other"]] = 1.0
        arg = action.tool_input
    arg_toks = _content(arg)
    q_toks = _content(view.question)
    last = view.last_result
    out[rel["question_recall"]] = _fraction(q_toks, set(arg_toks))
    out[rel["arg_in_question"]] = _fraction(arg_toks, set(q_toks))
    out[rel["arg_in_last_result"]] = _fraction(arg_toks, set(_content(last)))
    out[rel["arg_in_any_result"]] = _fraction(
        arg_toks, {t for s in view.steps for t in _content(s.result)}
    )
    key = normalize(arg)
    titles = {normalize(t) for t in passage_titles(last)}
    out[rel["arg_is_title"]] = float(bool(key) and key in titles)
    position = normalize(last).find(key) if key else -1
    out[rel["arg_early_in_result"]] = (
        1.0 - position / max(1, len(normalize(last))) if position >= 0 else 0.0
    )
    commands = {normalize(read_action(s.action).command or "") for s in view.steps}
    out[rel["arg_repeated"]] = float(bool(key) and key in commands)
    out[rel["context_overlap"]] = _context_overlap(last, arg_toks, q_toks)
    top = top_passage(last)
    out[rel["arg_in_top_passage"]] = _fraction(arg_toks, set(_content(top)))
    out[rel["top_context_overlap"]] = _context_overlap(top, arg_toks, q_toks)
    out[rel["arg_length"]] = min(len(arg_toks), 10) / 10.0
    return out


def _context_overlap(text: str, arg_toks: list[str], q_toks: list[str]) -> float:
    """Best share of the question's words found in a sentence of ``text`` that mentions the arg.

    The words of the argument itself are not counted, so answering with the subject of the
    question does not score; answering with the name that sits next to the question's relation
    words does.
    """
    if not arg_toks or not q_toks:
        return 0.0
    arg_set = set(arg_toks)
    question = set(q_toks) - arg_set
    if not question:
        return 0.0
    best = 0.0
    for sentence in _SENTENCE.split(text):
        words = set(_content(sentence))
        if arg_set <= words:
            best = max(best, len(question & words) / len(question))
    return best


def _progress(view: ObservationView, max_turns_feature: int) -> np.ndarray:
    """Turn one-hot, last-result flags, question coverage by the top passage / last / any result."""
    out = np.zeros(max_turns_feature + PROGRESS_EXTRA, dtype=np.float32)
    out[min(view.turn, max_turns_feature) - 1] = 1.0
    out[-5] = float(view.last_result.startswith("Error"))
    out[-4] = float(bool(view.steps) and not view.last_result.strip())
    question = _content(view.question)
    out[-3] = _fraction(question, set(_content(top_passage(view.last_result))))
    out[-2] = _fraction(question, set(_content(view.last_result)))
    out[-1] = _fraction(question, {t for s in view.steps for t in _content(s.result)})
    return out


# ----------------------------------------------------------------------------------- wrapper
class TextFeatureWrapper(gym.ObservationWrapper[np.ndarray, Any, Any]):
    """Observation text (and candidates) to one ``Box`` vector for stable-baselines3 and co.

    ## Description
    Wraps a text env (``Text`` observations) or a
    :class:`~agentflow_env.wrappers.candidates.CandidateActionWrapper` (``Dict`` with ``text``
    and ``candidates``). The vector is the concatenation of:

    1. ``featurizer(observation text)`` — ``featurizer.dim`` values;
    2. ``featurizer(question)`` — the question alone (its relation words tell how many hops);
    3. progress features: a one-hot of the current step (``max_turns_feature`` slots, the last
       one shared by later steps), whether the last result was an error, whether it was empty,
       and the share of the question's content words found in the top passage of the last
       result, the last result, and any result (what is still unresolved tells whether to
       answer or search on);
    4. for each of the K candidates: ``featurizer(candidate)`` then, when ``relations`` is true,
       :func:`candidate_relations` (``max_tools`` tool slots + :data:`RELATION_NAMES`).

    ``layout`` maps each part's name to its ``slice`` of the vector.

    ## Observation Space
    ``Box(-1, 1, (D,), float32)`` with D = 2 * dim + max_turns_feature + 5 + K * (dim + R), where
    R = max_tools + len(RELATION_NAMES) with relations, else 0.

    ## Arguments
    ``env``; ``featurizer`` (:class:`Featurizer`); ``relations`` (True); ``max_tools`` (4);
    ``max_turns_feature`` (8).
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        featurizer: Featurizer,
        *,
        relations: bool = True,
        candidate_text: bool = True,
        max_tools: int = 4,
        max_turns_feature: int = 8,
    ) -> None:
        super().__init__(env)
        space = env.observation_space
        if isinstance(space, spaces.Text):
            self.k = 0
        elif (
            isinstance(space, spaces.Dict)
            and isinstance(space.spaces.get("text"), spaces.Text)
            and isinstance(space.spaces.get("candidates"), spaces.Tuple)
        ):
            candidates = space.spaces["candidates"]
            assert isinstance(candidates, spaces.Tuple)  # checked above; narrows the type
            self.k = len(candidates.spaces)
        else:
            raise TypeError(
                "TextFeatureWrapper needs a Text observation space or CandidateActionWrapper's "
                f"Dict(text, candidates), got {space}"
            )
        dim = getattr(featurizer, "dim", None)
        if not callable(featurizer) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise TypeError(
                "featurizer must be callable(texts) -> array and have an integer dim >= 1"
            )
        if max_tools < 1 or max_turns_feature < 1:
            raise ValueError("max_tools and max_turns_feature must be >= 1")
        if self.k and not (relations or candidate_text):
            raise ValueError(
                "candidates need relations=True or candidate_text=True, "
                "or the policy cannot tell them apart"
            )
        self.featurizer = featurizer
        self.relations, self.max_tools, self.max_turns_feature = (
            relations,
            max_tools,
            max_turns_feature,
        )
        self.candidate_text = candidate_text
        self.dim = int(dim)
        self.candidate_dim = self.dim if candidate_text else 0
        rel_dim = max_tools + len(RELATION_NAMES) if relations else 0
        self.layout: dict[str, slice] = {}
        offset = 0
        for name, size in [
            ("observation", self.dim),
            ("question", self.dim),
            ("progress", max_turns_feature + PROGRESS_EXTRA),
        ] + [(f"candidate_{i}", self.candidate_dim + rel_dim) for i in range(self.k)]:
            self.layout[name] = slice(offset, offset + size)
            offset += size
        self.size = offset
        """length of the feature vector"""
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(offset,), dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        if isinstance(observation, dict):
            text, candidates = observation["text"], list(observation["candidates"])
        else:
            text, candidates = observation, []
        if len(candidates) != self.k:
            raise ValueError(f"expected {self.k} candidates, got {len(candidates)}")
        view = split_observation(text)
        texts = [text, view.question, *(candidates if self.candidate_text else [])]
        vectors = np.asarray(self.featurizer(texts), dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(
                f"featurizer returned shape {vectors.shape}, expected {(len(texts), self.dim)}"
            )
        out = np.zeros(self.size, dtype=np.float32)
        out[self.layout["observation"]] = vectors[0]
        out[self.layout["question"]] = vectors[1]
        out[self.layout["progress"]] = _progress(view, self.max_turns_feature)
        for i, candidate in enumerate(candidates):
            part = out[self.layout[f"candidate_{i}"]]
            if self.candidate_text:
                part[: self.dim] = vectors[2 + i]
            if self.relations:
                repeated = bool(candidate) and candidate in candidates[:i]
                part[self.candidate_dim :] = candidate_relations(
                    view, candidate, self.max_tools, repeated
                )
        return np.clip(out, -1.0, 1.0)
