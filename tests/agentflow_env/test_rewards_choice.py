"""Multiple choice (issue 18): every common letter form, option text in a sentence, roman-numeral
options, and no credit for a wrong option whose text only collides with the gold's."""

from __future__ import annotations

import pytest

from agentflow_env.rewards import designated_options, multiple_choice_correct, score
from agentflow_env.tasks.base import Task

MEDQA = ("Hemolytic uremic syndrome", "Oral ulcers", "Colorectal cancer", "Pancreatic cancer")


@pytest.mark.parametrize(
    "pred",
    [
        "C",
        "(C)",
        "C)",
        "C.",
        "C:",
        "[C]",
        "c",
        "(c)",
        "C, because ulcerative colitis raises the risk",
        "C - Colorectal cancer",
        "C — Colorectal cancer",
        "C (Colorectal cancer)",
        "C Colorectal cancer",
        "C. Colorectal cancer",
        "Answer: C",
        "Final answer: (C)",
        "The answer is (C)",
        "The correct answer is C.",
        "the answer is C because of the colitis",
        "\\boxed{C}",
        "**C**",
        "$\\boxed{\\text{C}}$",
        "Colorectal cancer",
        "colorectal cancer.",
        "The patient is at greatest risk of colorectal cancer.",
        "Answer: Colorectal cancer",
    ],
)
def test_letter_forms_and_option_text(pred: str) -> None:
    assert multiple_choice_correct(pred, "C", MEDQA), pred


@pytest.mark.parametrize(
    "pred",
    [
        "(A) or (B)",
        "C or D",
        "C, D",
        "C and D",
        "B",
        "Oral ulcers",
        "cancer",  # in two options: designates neither
        "It is colorectal cancer or pancreatic cancer",
        "A 34-year-old man",  # the article, not option A
        "the answer is a cancer",
        "",
        "Z",
    ],
)
def test_wrong_or_ambiguous_predictions(pred: str) -> None:
    assert not multiple_choice_correct(pred, "C", MEDQA), pred


def test_two_letters_designate_nothing() -> None:
    assert designated_options("(A) or (B)", MEDQA) is None
    assert designated_options("The answer is (C), not (A).", MEDQA) == {2}


def test_roman_numeral_options_keep_their_prefix() -> None:
    options = (
        "i) NaOH, ii) H2O2, iii) HCl",
        "i) KOH, ii) H2O, iii) HBr",
        "i) LiAlH4, ii) H3O+",
        "i) NaBH4, ii) H2O",
    )
    assert multiple_choice_correct("i) KOH, ii) H2O, iii) HBr", "B", options)
    assert multiple_choice_correct("B", "B", options)
    assert not multiple_choice_correct("i) NaOH, ii) H2O2, iii) HCl", "B", options)


@pytest.mark.parametrize(
    ("options", "gold", "wrong"),
    [
        (("l", "L", "2l", "2L"), "B", "l"),  # case distinguishes the options here
        (("12", "-12", "6", "-6"), "A", "-12"),  # signs matter
        (("1+α", "1−α", "α", "2α"), "A", "1-α"),  # operators matter (unicode minus too)
        (("$E = q/L^2$", "$E = q/l^2$", "$E = 0$", "$E = q$"), "A", "E = q/l^2"),
    ],
)
def test_collisions_after_normalization_are_not_credited(
    options: tuple[str, ...], gold: str, wrong: str
) -> None:
    assert not multiple_choice_correct(wrong, gold, options)
    right = options["ABCD".index(gold)]
    assert multiple_choice_correct(right, gold, options)


def test_sign_of_a_number_outside_the_options_matters() -> None:
    assert not multiple_choice_correct("-12", "A", ("12", "5", "7", "9"))
    assert multiple_choice_correct("12.0", "A", ("12", "5", "7", "9"))


def test_identical_option_texts_are_the_same_answer() -> None:
    options = ("200 mL", "200 mL", "180 mL", "100 mL")  # GPQA item 272
    assert multiple_choice_correct("B", "A", options)
    assert multiple_choice_correct("200 mL", "A", options)
    assert not multiple_choice_correct("C", "A", options)
    assert designated_options("200 mL", options) == {0, 1}


def test_symbols_are_option_text() -> None:
    options = ("↓ ↓ ↓", "↑ ↓ normal", "↓ ↑ ↑", "↓ ↑ ↓")  # a MedQA item
    assert multiple_choice_correct("↓ ↑ ↓", "D", options)
    assert not multiple_choice_correct("↓ ↑ ↑", "D", options)


def test_score_dispatches_mc() -> None:
    task = Task(id="t", question="q", answer="C", scorer="mc", choices=MEDQA)
    assert score("reasoning...\nAnswer: C - Colorectal cancer", task) == 1.0
    assert score("<answer>(A) or (C)</answer>", task) == 0.0
