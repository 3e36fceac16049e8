"""Lay turn samples out as scoring sequences, packing append-only turns into one sequence.

When turn k+1's prompt ids start with turn k's prompt + response ids, both turns fit in one
sequence: the prompt + response of the last turn, with targets on every response token. The
log-probs of each response are then exactly those of its own single-turn sample (a causal LM
sees the same prefix), so the loss is the same and one forward pass replaces several.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from learners.rollout import TurnSample

__all__ = ["ScoringSequence", "pack_samples"]


@dataclass
class ScoringSequence:
    """Token ids, which of them are scored, and which turn sample each scored token belongs to."""

    ids: list[int] = field(default_factory=list)
    target_mask: list[bool] = field(default_factory=list)
    token_sample: list[int] = field(default_factory=list)
    """sample index (into the list given to :func:`pack_samples`) of each target, in order"""
    old_logprobs: list[float] = field(default_factory=list)
    """sampling log-prob of each target, in order"""
    traj: int = -1

    @property
    def num_targets(self) -> int:
        return len(self.token_sample)


def _extend(seq: ScoringSequence, sample: TurnSample, index: int) -> None:
    start = len(seq.ids)
    seq.ids.extend(sample.prompt_ids[start:])
    seq.target_mask.extend([False] * (len(sample.prompt_ids) - start))
    seq.ids.extend(sample.response_ids)
    seq.target_mask.extend([True] * len(sample.response_ids))
    seq.token_sample.extend([index] * len(sample.response_ids))
    if len(sample.logprobs) != len(sample.response_ids):
        raise ValueError(
            f"sample {index}: {len(sample.response_ids)} response ids but "
            f"{len(sample.logprobs)} log-probs"
        )
    seq.old_logprobs.extend(sample.logprobs)


def pack_samples(samples: Sequence[TurnSample], pack: bool = True) -> list[ScoringSequence]:
    """One sequence per trajectory segment whose turns extend each other; else one per turn.

    Samples with an empty response produce no targets and are skipped.
    """
    by_traj: dict[int, list[int]] = {}
    for k, s in enumerate(samples):
        by_traj.setdefault(s.traj, []).append(k)
    out: list[ScoringSequence] = []
    for traj, idx in by_traj.items():
        idx = sorted(idx, key=lambda k: samples[k].turn)
        current: ScoringSequence | None = None
        for k in idx:
            s = samples[k]
            if not s.response_ids:
                continue
            fits = (
                pack
                and current is not None
                and len(s.prompt_ids) >= len(current.ids)
                and s.prompt_ids[: len(current.ids)] == current.ids
            )
            if not fits:
                current = ScoringSequence(traj=traj)
                out.append(current)
            assert current is not None
            _extend(current, s, k)
    return out
