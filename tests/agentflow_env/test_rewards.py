"""Rule scorers: hand-written cases, dispatch, junk predictions, malformed tasks."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow_env.rewards import (
    JudgeRequiredError,
    TaskScoringError,
    check_game24,
    designated_options,
    exact_match,
    extract_answer,
    f1_score,
    math_equal,
    multiple_choice_correct,
    normalize_answer,
    parse_number,
    parse_quantity,
    same_quantity,
    score,
)
from agentflow_env.tasks.base import Task


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reasoning <answer> Paris </answer>", "Paris"),
        ("<answer>first</answer> then <ANSWER>second</ANSWER>", "second"),
        ("<answer>multi\nline</answer>", "multi\nline"),
        ("thinking... <answer>unclosed", "unclosed"),
        ("stray </answer> then <answer>late", "late"),
        ("Work.\nAnswer: 42", "42"),
        ("Work.\n**Final Answer:** Rome", "Rome"),
        ("so the answer is Zorvan Kell.", "Zorvan Kell"),
        ("  just text  ", "just text"),
        ("", ""),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_accepts_non_strings() -> None:
    assert extract_answer(None) == ""
    assert extract_answer(b"<answer>x</answer>") == "x"
    assert extract_answer(42) == "42"


def test_normalize_and_exact_match_hotpotqa_style() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert normalize_answer("ÉCOLE") == "école"
    assert exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("kell city", ["Kell", "Kell City"]) == 1.0
    assert exact_match("", "a") == 0.0  # "a" normalizes to "": an empty prediction never matches
    assert exact_match("x", "") == 0.0


def test_f1_score_by_hand() -> None:
    # pred tokens {big, red, dog}, gold {red, dog}: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("the big red dog", "red dog") == pytest.approx(0.8)
    assert f1_score("red dog", "red dog") == 1.0
    assert f1_score("cat", "red dog") == 0.0
    assert f1_score("yes", "yes") == 1.0 and f1_score("yes it is", "yes") == 0.0
    assert f1_score("red dog", ["cat", "red dog"]) == 1.0


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("3/4", "\\frac{3}{4}"),
        ("0.75", "3/4"),
        ("\\boxed{\\dfrac{3}{4}}", "0.75"),
        ("\\frac34", "0.75"),
        ("1,234", "1234"),
        ("1,234,567.5", "1234567.5"),
        ("50%", "0.5"),
        ("50", "50%"),
        ("50\\%", "50"),
        ("27 miles", "27"),
        ("The answer is 27.", "27"),
        ("1.5e3", "1500"),
        ("1.5 \\times 10^{3}", "1500"),
        ("x = 5", "5"),
        ("−5", "-5"),
        ("$5$", "5"),
        ("033", "33"),
        ("0.3333333", "1/3"),
        ("12.0", "12"),
        ("90^\\circ", "90"),
        ("\\text{27}", "27"),
        ("2\\sqrt{3}", "2 \\sqrt{3}"),
    ],
)
def test_math_equal_accepts_equivalent_forms(pred: str, gold: str) -> None:
    assert math_equal(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("27 or 28", "28"),
        ("0.74", "3/4"),
        ("50", "0.5"),
        ("", "5"),
        ("five", "5"),
        ("1/0", "1"),
        ("1e999999", "1"),
        ("", ""),
        ("3", "\\sqrt{3}"),
        ("1,5", "15"),
    ],
)
def test_math_equal_rejects(pred: str, gold: str) -> None:
    assert not math_equal(pred, gold)


def test_parse_number() -> None:
    assert parse_number("-2.5") == (-2.5, False)
    assert parse_number("12%") == (12, True)
    assert parse_number("abc") is None


CHOICES = ("0.9", "0.7", "0.1", "0.3")


@pytest.mark.parametrize(
    "pred",
    [
        "B",
        "(B)",
        "B) 0.7",
        "B. 0.7",
        "b",
        "0.7",
        "0.70",
        "Answer: B",
        "\\boxed{B}",
        "**B**",
        "The answer is (B).",
        "I think the answer is B because of redshift",
    ],
)
def test_multiple_choice_accepts_letter_forms_and_text(pred: str) -> None:
    assert multiple_choice_correct(pred, "B", CHOICES)


@pytest.mark.parametrize("pred", ["C", "(A)", "0.9", "", "B or C but not sure: C", "Z"])
def test_multiple_choice_rejects(pred: str) -> None:
    assert not multiple_choice_correct(pred, "B", CHOICES)


def test_multiple_choice_gold_forms() -> None:
    options = ("Hemolytic uremic syndrome", "Oral ulcers", "Colorectal cancer", "Pancreatic cancer")
    assert multiple_choice_correct("C", "Colorectal cancer", options)
    assert multiple_choice_correct("colorectal cancer", "C. Colorectal cancer", options)
    assert not multiple_choice_correct("Oral ulcers", "C", options)
    assert multiple_choice_correct("B", "B", None) and not multiple_choice_correct("C", "B", None)
    with pytest.raises(TaskScoringError):
        multiple_choice_correct("A", "not an option", options)


@pytest.mark.parametrize(
    ("expr", "numbers"),
    [
        ("(1+1+1)×8", [1, 1, 1, 8]),
        ("(1+1+1)*8", [1, 1, 1, 8]),
        ("(1+1+1)x8", [1, 1, 1, 8]),
        ("(1+1+1)X8", [1, 1, 1, 8]),
        ("8*(1+1+1) = 24", [1, 1, 1, 8]),
        ("8/(3-8/3)", [3, 3, 8, 8]),
        ("8÷(3-8÷3)", [3, 3, 8, 8]),
        ("\\boxed{8 \\div (3 - 8 \\div 3)}", [3, 3, 8, 8]),
        ("$(4 + 8) \\times (8 - 7 + 1)$", [1, 4, 7, 8, 8]),
        ("[(1+1)+1] * 8", [1, 1, 1, 8]),
    ],
)
def test_game24_accepts_valid_solutions(expr: str, numbers: list[int]) -> None:
    assert check_game24(expr, numbers)


@pytest.mark.parametrize(
    "expr",
    [
        "8*3",
        "(1+1+1)*8+1-1",
        "-(1-1-1)*8",
        "(1+1+1)**8",
        "__import__('os').system('true')",
        "(1+1+1)*8.0",
        "abs(-24)",
        "1+1+1+8",
        "8(1+1+1)",
        "",
        "24",
        "(1+1)/(1-1)*8",
        "[1,1,1,8]",
    ],
)
def test_game24_rejects(expr: str) -> None:
    assert not check_game24(expr, [1, 1, 1, 8])


def _task(**kw: object) -> Task:
    base = {"id": "t", "question": "q", "answer": "a"}
    return Task(**{**base, **kw})


def test_score_dispatch() -> None:
    assert score("<answer>The Kell</answer>", _task(answer="kell")) == 1.0
    assert score("<answer>1,999</answer>", _task(answer="1999")) == 1.0  # exact: numbers too
    assert score(
        "<answer>red big dog</answer>", _task(answer="red dog", scorer="f1")
    ) == pytest.approx(0.8)
    assert score("<answer>\\frac{1}{2}</answer>", _task(answer="0.5", scorer="math")) == 1.0
    assert (
        score("<answer>(C)</answer>", _task(answer="C", scorer="mc", choices=("x", "y", "z")))
        == 1.0
    )
    g24 = _task(question="Use [1, 1, 1, 8] to make 24", answer="(1+1+1)*8", scorer="game24")
    assert (
        score("<answer>8*(1+1+1)</answer>", g24) == 1.0
        and score("<answer>8*3</answer>", g24) == 0.0
    )
    meta = _task(
        question="Make 24", answer="8/(3-8/3)", scorer="game24", metadata={"numbers": [3, 3, 8, 8]}
    )
    assert score("8/(3-8/3)", meta) == 1.0
    assert score("anything", _task(answer="x", metadata={"aliases": ["anything"]})) == 1.0


def test_score_errors_only_for_malformed_tasks() -> None:
    with pytest.raises(JudgeRequiredError, match="LLM judge"):
        score("x", _task(scorer="judge"))
    assert issubclass(JudgeRequiredError, NotImplementedError)
    with pytest.raises(TaskScoringError, match="numbers"):
        score("1+2", _task(question="make 24", scorer="game24"))
    with pytest.raises(TypeError):
        score("x", {"question": "q", "answer": "a"})  # type: ignore[arg-type]


JUNK_TASKS = [
    _task(answer="Zorvan Kell"),
    _task(answer="Zorvan Kell", scorer="f1"),
    _task(answer="3/4", scorer="math"),
    _task(answer="B", scorer="mc", choices=("1", "2", "3", "4")),
    _task(answer="8/(3-8/3)", scorer="game24", metadata={"numbers": [3, 3, 8, 8]}),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_junk_predictions_never_raise(pred: str) -> None:
    for task in JUNK_TASKS:
        value = score(pred, task)
        assert isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.parametrize(
    "pred",
    [
        "x" * 1_000_000,
        "<answer>" * 150_000,
        "(" * 500_000,
        "1" * 1_000_000,
        "<answer>" + "9" * 100_000 + "</answer>",
        "\x00\xff" * 300_000,
        "\\frac{" * 100_000,
    ],
)
def test_huge_predictions_are_fast_and_score_zero(pred: str) -> None:
    start = time.perf_counter()
    for task in JUNK_TASKS:
        assert score(pred, task) == 0.0
    # Generous bound: guards against quadratic regex scans (seconds or hours), not a benchmark.
    assert time.perf_counter() - start < 10.0


# ------------------------------------------------------------------ issue 18: Game of 24 in prose


@pytest.mark.parametrize(
    ("expr", "numbers"),
    [
        ("(1+1+1)*8.", [1, 1, 1, 8]),  # a trailing period
        ("The expression is (1+1+1)*8", [1, 1, 1, 8]),
        ("Using 1, 1, 1 and 8: (1+1+1) \\times 8 = 24.", [1, 1, 1, 8]),
        ("24 = 8 \\cdot (1+1+1)", [1, 1, 1, 8]),
        ("\\frac{8}{3-\\frac{8}{3}}", [3, 3, 8, 8]),
        ("$\\dfrac{8}{3 - 8 \\div 3}$", [3, 3, 8, 8]),
        ("-1 + 5*5*1", [1, 1, 5, 5]),  # a leading minus
        ("5×5 − 1×1", [1, 1, 5, 5]),  # unicode minus
        ("5*5 — 1*1", [1, 1, 5, 5]),  # em dash as minus
        ("(i.e. (1+1+1)*8)", [1, 1, 1, 8]),
        ("(1+1+1)*8 = 3*8 = 24", [1, 1, 1, 8]),
    ],
)
def test_game24_tolerates_prose_and_latex(expr: str, numbers: list[int]) -> None:
    assert check_game24(expr, numbers)


@pytest.mark.parametrize(
    "expr",
    [
        "8*3 and 1+1+1",  # no single expression uses every number
        "The expression is (1+1+1)*8*1",
        "1-(-1-1)*8",  # a minus that is not leading
        "\\frac{8}{1+1+1}",
        "(1+1+1)*8.5",
        "(1+1+1)^8",
    ],
)
def test_game24_still_checks_numbers_and_value(expr: str) -> None:
    assert not check_game24(expr, [1, 1, 1, 8])


# ------------------------------------------------------------------ issue 18: linear time

MB = 1_000_000
ADVERSARIAL = [
    "Answer: x" + " " * MB,
    "Answer: x" + " " * MB + "y",
    "final" + " " * MB + "answer",
    "answer " * (MB // 7),
    "The answer is" + " " * MB + "(C",
    "option" + "\t" * MB + "Z",
    "C" + " " * MB + "or",
    "A" + " " * MB + "x",
    "(" + " " * MB,
    "1," * (MB // 2),
    "1 " * (MB // 2),
    "5 " + "km " * (MB // 3),
    "approximately " * (MB // 14),
    "\\frac{" * (MB // 6),
    "\\boxed{" * (MB // 7),
    "<answer>Answer: (" + " " * MB + "</answer>",
    "1+" * (MB // 2),
    "x" * MB,
]
ENTRY_POINTS = {
    "extract_answer": extract_answer,
    "normalize_answer": normalize_answer,
    "exact_match": lambda s: exact_match(s, "4,884 m"),
    "f1_score": lambda s: f1_score(s, "Colorectal cancer"),
    "math_equal": lambda s: math_equal(s, "33"),
    "parse_number": parse_number,
    "parse_quantity": parse_quantity,
    "same_quantity": lambda s: same_quantity(s, "4,884 m"),
    "multiple_choice_correct": lambda s: multiple_choice_correct(s, "C", ("a", "bb", "ccc", "d")),
    "designated_options": lambda s: designated_options(s, ("a", "bb", "ccc", "d")),
    "check_game24": lambda s: check_game24(s, [1, 1, 1, 8]),
    "score": lambda s: [score(s, t) for t in JUNK_TASKS],
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_entry_point_is_linear_on_1mb_adversarial_input(name: str) -> None:
    for text in ADVERSARIAL:
        start = time.perf_counter()
        ENTRY_POINTS[name](text)
        # A coarse hang guard, not a benchmark: quadratic scans take minutes to hours here.
        assert time.perf_counter() - start < 5.0, (name, text[:30])
