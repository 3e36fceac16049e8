"""Numbers in answers (issue 18): QA quantities with units, eras and magnitudes compared exactly;
math answers compared exactly as numbers and symbolically (Math-Verify) as expressions, from any
thread, with a time bound."""

from __future__ import annotations

import importlib.util
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from agentflow_env.rewards import math_equal, parse_quantity, same_quantity, score
from agentflow_env.rewards import mathexpr as mathexpr_module
from agentflow_env.rewards.symbolic import SymbolicChecker
from agentflow_env.tasks.base import Task

HAS_MATH_VERIFY = importlib.util.find_spec("math_verify") is not None
needs_math_verify = pytest.mark.skipif(
    not HAS_MATH_VERIFY, reason="math-verify is not installed (pip install -e '.[math]')"
)


def _exact(pred: str, gold: str) -> float:
    return score(f"<answer>{pred}</answer>", Task(id="t", question="q", answer=gold))


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("4,884 metres", "4,884 m"),
        ("4884", "4,884 m"),  # bare number, the unit is the question's: credited
        ("140 miles", "140 mi"),
        ("1045 BCE", "1045 BC"),
        ("1045 B.C.", "1045 BC"),
        ("2,000,000", "2 million"),
        ("2 million people", "2 million"),
        ("1335907", "1,335,907"),
        ("3 miles", "approximately 3 mi"),
        ("3 million", "almost 3 million"),
        ("400", "about 400 years"),
        ("177 m", "582 feet (177 m)"),
        ("582 ft", "582 feet (177 m)"),
        ("10,310,371", "10,310,371 (2016 est.)"),
        ("92%", "92 percent"),
        ("72,641 dollars", "$72,641"),
        ("320 kph", "320 km/h"),
        ("310 km²", "310 square kilometers"),
        ("12 episodes", "12"),  # the prediction names what the number counts
        ("56 thousand", "56000"),
        ("1.80", "1.8"),
    ],
)
def test_exact_credits_the_same_quantity(pred: str, gold: str) -> None:
    assert _exact(pred, gold) == 1.0


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("4884 feet", "4,884 m"),  # wrong unit
        ("140 km", "140 mi"),
        ("1045 AD", "1045 BC"),  # wrong era
        ("1045", "1045 BC"),
        ("2", "2 million"),  # wrong magnitude
        ("2 billion", "2 million"),
        ("3", "almost 3 million"),
        ("5 Fingers", "5 Flights Up"),  # title words, not a unit
        ("5", "5 Flights Up"),
        ("16", "16 Blocks"),
        ("1,335,908", "1,335,907"),  # integers compare exactly (no relative tolerance)
        ("400 days", "about 400 years"),
        ("72,641 euros", "$72,641"),
        ("1970s", "1970"),
        ("79", "7, 9"),
        ("4/15/18", "04/15/18"),  # a date, not a fraction
        ("0.18", "0.1777"),
        ("1950", "5 January 1964"),
        ("582 feet (178 m)", "582 feet (177 m)"),  # every stated quantity must be right
        ("16,024 ft (4,884 m)", "4,884 m"),
    ],
)
def test_exact_rejects_a_different_quantity(pred: str, gold: str) -> None:
    assert _exact(pred, gold) == 0.0


def test_parse_quantity_forms() -> None:
    assert parse_quantity("approximately 3 mi") == parse_quantity("3 miles")
    q = parse_quantity("1045 BC")
    assert q is not None and q.value == -1045 and q.unit == ""
    q = parse_quantity("$1.5 billion")
    assert q is not None and q.value == 1_500_000_000 and q.unit == "usd"
    q = parse_quantity("5 Flights Up")
    assert q is not None and q.unit == "flights up" and not q.known_unit
    assert parse_quantity("3/4") is None and parse_quantity("3/4", fractions=True) is not None
    for text in ("5 January 1964", "24:00", "1:41.614", "75,000 to 100,000", "3rd", "U2", ""):
        assert parse_quantity(text) is None, text
    assert parse_quantity("1" * 201) is None  # bounded input
    assert same_quantity("582 ft", "582 feet (177 m)") and not same_quantity("582 m", "582 feet")


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("808.9999", "809"),  # integer golds need the integer
        ("3159.003", "3159"),
        ("0.999999", "1"),
        ("0.3334", "1/3"),  # neither rounded nor truncated
        ("0.33", "1/3"),  # fewer than 3 places
        ("2 million", "2"),
        ("27 or 28", "28"),
        ("-33", "33"),
        ("3", "\\sqrt{3}"),
        ("6.28", "2\\pi"),
        ("\\frac{3159003}{1000}", "3159"),
    ],
)
def test_math_rejects_near_misses(pred: str, gold: str) -> None:
    assert not math_equal(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [("0.333", "\\frac{1}{3}"), ("0.6667", "2/3"), ("0.6666", "2/3"), ("-0.333", "-1/3")],
)
def test_math_accepts_decimals_of_repeating_fractions(pred: str, gold: str) -> None:
    assert math_equal(pred, gold)


SYMBOLIC = [
    ("2^5+1", "33"),
    ("\\sqrt{1089}", "33"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\{2,1\\}", "\\{1,2\\}"),
    ("2\\pi", "2 \\pi"),
    ("x^2+1", "1+x^2"),
    ("\\boxed{\\frac{66}{2}}", "33"),
]


@needs_math_verify
@pytest.mark.parametrize(("pred", "gold"), SYMBOLIC)
def test_math_symbolic_equivalence(pred: str, gold: str) -> None:
    assert math_equal(pred, gold)
    assert score(pred, Task(id="t", question="q", answer=gold, scorer="math")) == 1.0


def test_math_without_math_verify_is_exact_on_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback (no library): integers exact, fractions and decimals, expressions as text."""
    monkeypatch.setattr(mathexpr_module, "symbolic_equal", lambda pred, gold: None)
    assert math_equal("33", "33") and math_equal("\\frac{3}{4}", "0.75")
    assert math_equal("1,234", "1234") and math_equal("50%", "0.5")
    assert not math_equal("808.9999", "809") and not math_equal("2^5+1", "33")
    assert math_equal("2 \\sqrt{3}", "2\\sqrt{3}")  # same text


@needs_math_verify
def test_symbolic_check_from_worker_threads() -> None:
    """The env scores from worker threads: no signal-based timeout may be involved."""
    results: dict[int, bool] = {}

    def run(i: int) -> None:
        pred, gold = SYMBOLIC[i % len(SYMBOLIC)]
        results[i] = math_equal(pred, gold) and not math_equal(pred, "34")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {i: True for i in range(8)}


@needs_math_verify
def test_symbolic_check_is_time_bounded_and_recovers() -> None:
    checker = SymbolicChecker(timeout_s=2.0)
    try:
        assert checker.equal("2^5+1", "33") is True  # starts the child
        out: list[bool | None] = []
        start = time.perf_counter()
        thread = threading.Thread(target=lambda: out.append(checker.equal("9^{9^{9^{9}}}", "1")))
        thread.start()
        thread.join(timeout=60)
        assert out == [None] and time.perf_counter() - start < 30  # killed after ~2 s
        assert checker.equal("\\sqrt{1089}", "33") is True  # a fresh child answers
        assert checker.equal("x" * 401, "33") is None  # over the size bound: not parsed
    finally:
        checker.close()
    with pytest.raises(ValueError, match="timeout_s"):
        SymbolicChecker(timeout_s=0)


def test_parse_number_keeps_its_api() -> None:
    from agentflow_env.rewards import parse_number

    assert parse_number("2 million") == (Fraction(2_000_000), False)
    assert parse_number("\\frac{3}{4}") == (Fraction(3, 4), False)


def test_symbolic_checker_reports_a_missing_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that cannot import Math-Verify says why once; the checker then answers None."""
    shadow = tmp_path / "math_verify"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('math_verify hidden for this test')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    checker = SymbolicChecker(timeout_s=5.0)
    try:
        assert checker.equal("2^5+1", "33") is None
        assert checker.unavailable is not None and "hidden for this test" in checker.unavailable
        assert checker.equal("2^5+1", "33") is None  # no new child per request
    finally:
        checker.close()
