"""Generated Science tasks: quantitative multiple-choice questions with a verifiable key.

Each template states a physics or chemistry problem with every constant it needs, computes the
correct value from a Python expression and builds three distractors from common mistakes
(a dropped factor 1/2, an inverted ratio, a squared term forgotten, a unit slip). Options are
shuffled; ``Task.answer`` is the letter, ``Task.choices`` the option texts, the scorer ``mc``.
``metadata["expression"]`` computes the correct value (solvable with the Python tool).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from agentflow_env.tasks.base import Task
from agentflow_env.tasks.math_tasks import evaluate_arithmetic

__all__ = ["make_science_tasks", "format_option", "SCIENCE_KINDS", "LETTERS"]

LETTERS = "ABCD"
# A template returns (question stem, unit, correct expression, three distractor expressions).
_Template = tuple[str, str, str, tuple[str, str, str]]


def format_option(value: Fraction) -> str:
    """Option text: integers exactly; other values to 4 significant digits, no exponent."""
    if value.denominator == 1:
        return str(value.numerator)
    d = Decimal(value.numerator) / Decimal(value.denominator)
    exponent = d.adjusted() - 3  # keep 4 significant digits
    q = d.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_EVEN)
    text = format(q, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _kinetic(r: random.Random) -> _Template:
    m, v = r.randint(2, 50), r.randint(2, 30)
    return (
        f"An object of mass {m} kg moves at {v} m/s. What is its kinetic energy?",
        "J",
        f"0.5 * {m} * {v}**2",
        (f"{m} * {v}**2", f"0.5 * {m} * {v}", f"{m} * {v}"),
    )


def _free_fall(r: random.Random) -> _Template:
    t = r.randint(2, 9)
    return (
        f"A stone is dropped from rest and falls freely for {t} s (g = 9.8 m/s^2, no air "
        "resistance). How far does it fall?",
        "m",
        f"0.5 * 9.8 * {t}**2",
        (f"9.8 * {t}**2", f"9.8 * {t}", f"0.5 * 9.8 * {t}"),
    )


def _ohm(r: random.Random) -> _Template:
    i, res = r.randint(2, 12), r.randint(3, 60)
    return (
        f"A current of {i} A flows through a {res} ohm resistor. What is the voltage across "
        "the resistor?",
        "V",
        f"{i} * {res}",
        (f"{res} / {i}", f"{i}**2 * {res}", f"{i} + {res}"),
    )


def _power(r: random.Random) -> _Template:
    v, res = r.randint(6, 240), r.randint(2, 100)
    return (
        f"A {v} V source is connected across a {res} ohm resistor. What power does the "
        "resistor dissipate?",
        "W",
        f"{v}**2 / {res}",
        (f"{v} / {res}", f"{v} * {res}", f"{v}**2 * {res}"),
    )


def _density(r: random.Random) -> _Template:
    m, vol = r.randint(20, 900), r.randint(5, 120)
    return (
        f"A block has a mass of {m} g and a volume of {vol} cm^3. What is its density?",
        "g/cm^3",
        f"{m} / {vol}",
        (f"{vol} / {m}", f"{m} * {vol}", f"{m} / {vol}**2"),
    )


def _moles(r: random.Random) -> _Template:
    name, molar = r.choice(
        (
            ("water", 18),
            ("sodium chloride", "58.44"),
            ("glucose", 180),
            ("carbon dioxide", 44),
            ("calcium carbonate", 100),
        )
    )
    m = r.randint(5, 500)
    return (
        f"How many moles are in {m} g of {name} (molar mass {molar} g/mol)?",
        "mol",
        f"{m} / {molar}",
        (f"{molar} / {m}", f"{m} * {molar}", f"{m} / ({molar} * 2)"),
    )


def _dilution(r: random.Random) -> _Template:
    c1, v1 = r.randint(1, 12), r.randint(5, 100)
    v2 = v1 * r.randint(2, 10)
    return (
        f"{v1} mL of a {c1} M solution is diluted with water to a total volume of {v2} mL. "
        "What is the new concentration?",
        "M",
        f"{c1} * {v1} / {v2}",
        (f"{c1} * {v2} / {v1}", f"{c1} * ({v2} - {v1}) / {v2}", f"{c1} * {v1} / ({v2} - {v1})"),
    )


def _heat(r: random.Random) -> _Template:
    m, dt = r.randint(50, 2000), r.randint(2, 80)
    return (
        f"How much heat is needed to warm {m} g of water by {dt} degrees Celsius? The specific "
        "heat of water is 4.18 J/(g*degC).",
        "J",
        f"{m} * 4.18 * {dt}",
        (f"{m} * {dt}", f"{m} * 4.18 * {dt} / 1000", f"{m} * 4.18 / {dt}"),
    )


def _wave(r: random.Random) -> _Template:
    f, lam = r.randint(2, 900), r.randint(1, 40)
    return (
        f"A wave has a frequency of {f} Hz and a wavelength of {lam} m. What is its speed?",
        "m/s",
        f"{f} * {lam}",
        (f"{f} / {lam}", f"{lam} / {f}", f"{f} + {lam}"),
    )


def _momentum(r: random.Random) -> _Template:
    m, v = r.randint(2, 80), r.randint(2, 40)
    return (
        f"A cart of mass {m} kg moves at {v} m/s. What is the magnitude of its momentum?",
        "kg*m/s",
        f"{m} * {v}",
        (f"0.5 * {m} * {v}**2", f"{m} / {v}", f"{m} * {v}**2"),
    )


def _gas(r: random.Random) -> _Template:
    n, t, v = (
        r.randint(1, 10),
        r.randint(250, 600),
        r.choice(("0.01", "0.02", "0.05", "0.1", "0.5")),
    )
    return (
        f"{n} mol of an ideal gas at {t} K occupies {v} m^3. What is its pressure? "
        "(R = 8.314 J/(mol*K))",
        "Pa",
        f"{n} * 8.314 * {t} / {v}",
        (f"{n} * 8.314 / ({t} * {v})", f"{n} * {t} / {v}", f"{n} * 8.314 * {v} / {t}"),
    )


def _potential(r: random.Random) -> _Template:
    m, h = r.randint(1, 90), r.randint(2, 150)
    return (
        f"A {m} kg box is lifted {h} m straight up (g = 9.8 m/s^2). By how much does its "
        "gravitational potential energy increase?",
        "J",
        f"{m} * 9.8 * {h}",
        (f"{m} * {h}", f"0.5 * {m} * 9.8 * {h}", f"{m} * 9.8 / {h}"),
    )


SCIENCE_KINDS: dict[str, Callable[[random.Random], _Template]] = {
    "kinetic_energy": _kinetic,
    "free_fall": _free_fall,
    "ohm": _ohm,
    "power": _power,
    "density": _density,
    "moles": _moles,
    "dilution": _dilution,
    "heat": _heat,
    "wave": _wave,
    "momentum": _momentum,
    "ideal_gas": _gas,
    "potential_energy": _potential,
}
"""template name -> draw function"""


def _make_one(rng: random.Random, kind: str, task_id: str) -> Task | None:
    stem, unit, correct, distractors = SCIENCE_KINDS[kind](rng)
    values = [evaluate_arithmetic(e) for e in (correct, *distractors)]
    texts = [f"{format_option(v)} {unit}" for v in values]
    if len(set(texts)) < 4:  # a draw where two mistakes coincide with the truth: redraw
        return None
    order = list(range(4))
    rng.shuffle(order)
    choices = tuple(texts[i] for i in order)
    letter = LETTERS[order.index(0)]
    listed = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return Task(
        id=task_id,
        question=f"{stem}\n{listed}",
        answer=letter,
        scorer="mc",
        choices=choices,
        source="generated:science",
        metadata={
            "family": "science",
            "kind": kind,
            "expression": correct,
            "value": format_option(values[0]),
            "unit": unit,
            "distractors": list(distractors),
        },
    )


def make_science_tasks(
    seed: int = 0,
    num_tasks: int = 300,
    *,
    kinds: tuple[str, ...] | None = None,
    max_tries: int = 100_000,
) -> list[Task]:
    """``num_tasks`` unique quantitative multiple-choice questions (templates drawn uniformly)."""
    chosen = sorted(SCIENCE_KINDS) if kinds is None else list(kinds)
    unknown = [k for k in chosen if k not in SCIENCE_KINDS]
    if unknown or not chosen:
        raise ValueError(f"unknown science kinds {unknown}; valid: {sorted(SCIENCE_KINDS)}")
    rng = random.Random(seed)
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(max_tries):
        if len(tasks) >= num_tasks:
            break
        task = _make_one(rng, rng.choice(chosen), f"science-{seed}-{len(tasks)}")
        if task is None or task.question in seen:
            continue
        seen.add(task.question)
        tasks.append(task)
    if len(tasks) < num_tasks:
        raise ValueError(f"could only make {len(tasks)} unique science questions")
    return tasks
