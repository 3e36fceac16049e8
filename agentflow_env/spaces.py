"""Text spaces with an explicit charset.

``gymnasium.spaces.Text`` defaults to 62 alphanumerics, which rejects ordinary prose. We use the
Basic Multilingual Plane minus NUL and surrogates (constructing it costs ~30 ms); observations are
sanitized so that they always belong to the space.
"""

from __future__ import annotations

import re

from gymnasium import spaces

__all__ = ["TEXT_CHARSET", "text_space", "sanitize_text"]

TEXT_CHARSET: str = "".join(chr(i) for i in range(1, 0x10000) if not 0xD800 <= i < 0xE000)
_OUTSIDE = re.compile("[\x00\ud800-\udfff\U00010000-\U0010ffff]")


def text_space(max_length: int) -> spaces.Text:
    return spaces.Text(max_length=max_length, min_length=0, charset=TEXT_CHARSET)


def sanitize_text(text: str, max_length: int | None = None) -> str:
    """Replace characters outside :data:`TEXT_CHARSET` with U+FFFD and cap the length."""
    text = _OUTSIDE.sub("\ufffd", text)
    if max_length is not None and len(text) > max_length:
        marker = "\n...[truncated]"
        text = text[: max_length - len(marker)] + marker
    return text
