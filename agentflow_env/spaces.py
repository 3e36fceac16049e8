"""Text spaces with an explicit charset.

``gymnasium.spaces.Text`` defaults to 62 alphanumerics, which rejects ordinary prose. We use the
Basic Multilingual Plane minus NUL and surrogates (building its tables costs ~0.1 s, so it is
done once per length); observations are
sanitized so that they always belong to the space.
"""

from __future__ import annotations

import copy
import functools
import re

from gymnasium import spaces

__all__ = ["MIN_ACTION_SPACE_LENGTH", "TEXT_CHARSET", "action_space", "text_space", "sanitize_text"]

TEXT_CHARSET: str = "".join(chr(i) for i in range(1, 0x10000) if not 0xD800 <= i < 0xE000)
_OUTSIDE = re.compile("[\x00\ud800-\udfff\U00010000-\U0010ffff]")


@functools.lru_cache(maxsize=8)
def _prototype(max_length: int) -> spaces.Text:
    return spaces.Text(max_length=max_length, min_length=0, charset=TEXT_CHARSET)


def text_space(max_length: int) -> spaces.Text:
    """A Text space over :data:`TEXT_CHARSET`.

    Building the charset tables takes ~0.1 s, paid once per length: each call returns a shallow
    copy of a cached space (the tables are never mutated) with its own, unseeded generator.
    """
    space = copy.copy(_prototype(max_length))
    space._np_random = None  # never share a sampling generator between spaces
    return space


MIN_ACTION_SPACE_LENGTH = 100_000
"""The action space admits at least this many characters. The env accepts any string (it
parses the whole action and records at most ``max_action_chars`` of it), so the space is wide
on purpose: ``contains`` should not reject a policy's long output that the env handles."""


def action_space(max_observation_chars: int) -> spaces.Text:
    """The action space of an env whose observations hold up to ``max_observation_chars``."""
    return text_space(max(max_observation_chars, MIN_ACTION_SPACE_LENGTH))


def sanitize_text(text: str, max_length: int | None = None) -> str:
    """Replace characters outside :data:`TEXT_CHARSET` with U+FFFD and cap the length."""
    if (
        not text.isascii()
    ):  # ASCII (most text) is inside the charset, minus NUL; isascii is a fast scan
        text = _OUTSIDE.sub("\ufffd", text)
    elif "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if max_length is not None and len(text) > max_length:
        marker = "\n...[truncated]"
        text = text[: max_length - len(marker)] + marker
    return text
