"""Quantities in answers: a number with its hedge, currency, magnitude, era and unit.

``"approximately 3 mi"`` is ``3 mi``; ``"2 million"`` is 2,000,000; ``"1045 BC"`` is the year
-1045; ``"$72,641"`` is 72,641 USD; ``"582 feet (177 m)"`` is either of its two quantities.
Two quantities are the same when their values are exactly equal (rational arithmetic, no
tolerance) and their units agree: both the same unit, or one side bare while the other names a
unit of measure this module knows (``"4,884"`` for ``"4,884 m"``: the question fixes the unit).
Words that are not a known unit (``"5 Flights Up"``, a title) must be written the same on both
sides, except that a prediction may name what a bare gold number counts (``"12 episodes"`` for
``"12"``). Text that is not one quantity (dates, ranges, lists, times) parses as None and is
left to exact match.

Every pattern is anchored and bounded; inputs longer than :data:`MAX_QUANTITY_CHARS` are not
quantities, so parsing is linear-time on any model output.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Quantity", "parse_quantity", "parse_quantities", "same_quantity", "units_agree"]

MAX_QUANTITY_CHARS = 200
_NUMBER = (
    r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d{1,3})?"
    r"|[-+]?\.\d+(?:[eE][-+]?\d{1,3})?"
)
_NUMBER_RE = re.compile(_NUMBER)
_FRACTION_RE = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_HEDGE = re.compile(
    r"(?:approximately|approx\.?|about|around|roughly|almost|nearly|circa|ca\.|c\.|~|≈)\s*",
    re.IGNORECASE,
)
_CURRENCY_PREFIX = re.compile(r"(US\$|USD|EUR|GBP|[$€£¥₹])\s*", re.IGNORECASE)
_REMAINDER = re.compile(r"[A-Za-z°²³/.'’ ]{0,60}")
_SQUARED = re.compile(r"(?<=[A-Za-z])2\b")
_CUBED = re.compile(r"(?<=[A-Za-z])3\b")
_PAREN_TAIL = re.compile(r"\(([^()]{1,80})\)\s*$")
_MINUS = str.maketrans({"−": "-", "–": "-", "‒": "-", "﹣": "-", "－": "-"})

_MAGNITUDES = {
    "thousand": 10**3,
    "million": 10**6,
    "mn": 10**6,
    "billion": 10**9,
    "bn": 10**9,
    "trillion": 10**12,
}
# A number followed by one of these is part of a phrase ("27 or 28"), not a quantity.
_CONNECTIVES = {"or", "and", "to", "plus", "minus", "times", "over", "divided", "by", "not"}
_ERAS = {"bc": -1, "bce": -1, "ad": 1, "ce": 1}
_CURRENCY_SYMBOLS = {
    "$": "usd",
    "us$": "usd",
    "usd": "usd",
    "€": "eur",
    "eur": "eur",
    "£": "gbp",
    "gbp": "gbp",
    "¥": "jpy",
    "₹": "inr",
}


def _synonyms(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {name: canonical for canonical, names in table.items() for name in names}


# Written forms -> canonical unit (lowercase, dots removed). Kept to units that answers use;
# single letters that are also words or eras ("s", "c", "f", "in") are left out on purpose.
_UNITS = _synonyms(
    {
        "%": ("%", "percent", "per cent", "pct"),
        "m": ("m", "meter", "meters", "metre", "metres"),
        "km": ("km", "kilometer", "kilometers", "kilometre", "kilometres"),
        "cm": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
        "mm": ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
        "mi": ("mi", "mile", "miles"),
        "ft": ("ft", "foot", "feet"),
        "inch": ("inch", "inches"),
        "yd": ("yd", "yard", "yards"),
        "km2": (
            "km2",
            "km²",
            "sq km",
            "square km",
            "square kilometer",
            "square kilometers",
            "square kilometre",
            "square kilometres",
        ),
        "mi2": ("mi2", "mi²", "sq mi", "square mile", "square miles"),
        "m2": (
            "m2",
            "m²",
            "sq m",
            "square meter",
            "square meters",
            "square metre",
            "square metres",
        ),
        "acre": ("acre", "acres"),
        "ha": ("ha", "hectare", "hectares"),
        "km/h": ("km/h", "kph", "kmh", "km per hour", "kilometers per hour", "kilometres per hour"),
        "mph": ("mph", "mi/h", "miles per hour"),
        "m/s": ("m/s", "meters per second", "metres per second"),
        "kg": ("kg", "kilogram", "kilograms", "kilo", "kilos"),
        "g": ("g", "gram", "grams"),
        "lb": ("lb", "lbs", "pound", "pounds"),
        "t": ("tonne", "tonnes", "metric ton", "metric tons"),
        "year": ("year", "years", "yr", "yrs", "year old", "years old"),
        "month": ("month", "months"),
        "week": ("week", "weeks"),
        "day": ("day", "days"),
        "hour": ("hour", "hours", "hr", "hrs"),
        "minute": ("minute", "minutes", "min", "mins"),
        "second": ("second", "seconds", "sec", "secs"),
        "°c": ("°c", "degrees celsius", "degree celsius", "celsius"),
        "°f": ("°f", "degrees fahrenheit", "degree fahrenheit", "fahrenheit"),
        "usd": ("usd", "dollar", "dollars", "us dollars"),
        "eur": ("eur", "euro", "euros"),
        "gbp": ("gbp", "pounds sterling"),
        "jpy": ("jpy", "yen"),
        "inr": ("inr", "rupee", "rupees"),
    }
)


@dataclass(frozen=True)
class Quantity:
    """A parsed answer: ``value`` (magnitude applied, negative for BC years), ``unit``
    (canonical, ``""`` when none), whether that unit is a known unit of measure, whether it was
    a percentage, and how many decimals the number was written with (None: not a decimal)."""

    value: Fraction
    unit: str = ""
    known_unit: bool = True
    percent: bool = False
    decimals: int | None = None


def _number(text: str) -> tuple[Fraction, int | None] | None:
    try:
        value = Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    digits = text.lower().split("e")[0]
    return value, (len(digits.split(".", 1)[1]) if "." in digits else None)


def _tail(rest: str, attached: bool) -> tuple[str, bool, int, int] | None:
    """(unit, known, magnitude, era sign) from what follows the number, or None."""
    rest = _SQUARED.sub("²", _CUBED.sub("³", rest))  # NFKC made "km²" read "km2"
    if not _REMAINDER.fullmatch(rest):
        return None
    words = rest.replace(".", " ").replace("’", "'").lower().split()
    magnitude, era = 1, 1
    if words and words[0] in _MAGNITUDES:
        magnitude = _MAGNITUDES[words.pop(0)]
    if words and words[-1] in _ERAS:
        era = _ERAS[words.pop()]
    elif len(words) >= 2 and "".join(words[-2:]) in _ERAS:  # "B. C." written with a space
        era = _ERAS["".join(words[-2:])]
        del words[-2:]
    phrase = " ".join(words)
    if _CONNECTIVES.intersection(words):
        return None
    if not phrase:
        return "", True, magnitude, era
    if phrase in _UNITS:
        return _UNITS[phrase], True, magnitude, era
    if attached or len(words) > 3:
        return None  # "3rd", "1970s", "U2", a sentence: not a number followed by a unit
    return phrase, False, magnitude, era


def parse_quantity(text: object, *, fractions: bool = False) -> Quantity | None:
    """The one quantity ``text`` states, or None (see the module docstring for the forms).

    ``fractions`` also reads ``a/b`` (math answers; off for QA, where ``3/4`` may be a date).
    """
    if not isinstance(text, str) or len(text) > MAX_QUANTITY_CHARS:
        return None
    text = unicodedata.normalize("NFKC", text).translate(_MINUS).strip().strip("*").strip()
    text = text.rstrip(".").strip()
    hedge = _HEDGE.match(text)
    if hedge:
        text = text[hedge.end() :]
    sign, currency = "", ""
    if text[:1] in "-+" and _CURRENCY_PREFIX.match(text, 1):
        sign, text = text[0], text[1:]
    prefix = _CURRENCY_PREFIX.match(text)
    if prefix:
        currency = _CURRENCY_SYMBOLS[prefix.group(1).lower()]
        text = sign + text[prefix.end() :]
    match = (_FRACTION_RE.match(text) if fractions else None) or _NUMBER_RE.match(text)
    if match is None:
        return None
    if match.re is _FRACTION_RE:
        num, den = _number(match.group(1)), _number(match.group(2))
        if num is None or den is None or den[0] == 0:
            return None
        value, decimals = num[0] / den[0], None
    else:
        parsed = _number(match.group(0))
        if parsed is None:
            return None
        value, decimals = parsed
    rest = text[match.end() :]
    attached = bool(rest) and not rest[0].isspace()
    rest = rest.strip()
    percent = rest.startswith("%")
    if percent:
        rest, attached = rest[1:].strip(), False
    tail = _tail(rest, attached and not currency)
    if tail is None:
        return None
    unit, known, magnitude, era = tail
    if percent or unit == "%":
        if unit not in ("", "%"):
            return None
        unit, percent = "%", True
    if currency:
        if unit not in ("", currency):
            return None
        unit, known = currency, True
    return Quantity(value * magnitude * era, unit, known, percent, decimals)


def parse_quantities(text: object, *, fractions: bool = False) -> list[Quantity]:
    """The quantity ``text`` states and, for ``"582 feet (177 m)"``, the one in parentheses."""
    if not isinstance(text, str) or len(text) > MAX_QUANTITY_CHARS:
        return []
    found = parse_quantity(text, fractions=fractions)
    if found is not None:
        return [found]
    paren = _PAREN_TAIL.search(text)
    if paren is None:
        return []
    main = parse_quantity(text[: paren.start()], fractions=fractions)
    inner = parse_quantity(paren.group(1), fractions=fractions)
    return [q for q in (main, inner) if q is not None] if main is not None else []


def units_agree(pred: Quantity, gold: Quantity) -> bool:
    """Same unit; or a bare prediction for a gold in a known unit; or a prediction that names
    what a bare gold number counts. A gold's unknown words (a title) must be matched."""
    if pred.unit == gold.unit:
        return True
    if not pred.unit:
        return gold.known_unit
    return not gold.unit


def same_quantity(prediction: object, gold: object) -> bool:
    """Whether ``prediction`` states the quantity ``gold`` states (exact value, agreeing units).

    Either side may carry a parenthesized alternative (``"582 feet (177 m)"``): every quantity
    the prediction states must be one the gold states (``"582 feet (178 m)"`` is wrong).
    """
    preds, golds = parse_quantities(prediction), parse_quantities(gold)
    return bool(preds) and all(
        any(p.value == g.value and units_agree(p, g) for g in golds) for p in preds
    )
