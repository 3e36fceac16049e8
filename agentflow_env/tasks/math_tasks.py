"""Generated Math tasks: Game of 24 (only solvable instances) and arithmetic word problems.

Game of 24 tasks use the ``game24`` scorer; ``metadata`` holds ``numbers`` and one
``solution`` (a Python-syntax expression using ``*`` and ``/``). Word problems use the ``math``
scorer; ``metadata["expression"]`` is a Python expression that computes the answer exactly.
Everything is drawn from one ``random.Random`` so a seed fixes the suite.
"""

from __future__ import annotations

import ast
import operator
import random
from collections.abc import Callable, Sequence
from fractions import Fraction

from agentflow_env.tasks.base import Task

__all__ = [
    "evaluate_arithmetic",
    "format_number",
    "solve_24",
    "make_game24_task",
    "make_word_problem",
    "make_math_tasks",
    "WORD_PROBLEM_KINDS",
]

_BINOPS: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_MAX_EXPRESSION_CHARS = 10_000


def evaluate_arithmetic(expression: str) -> Fraction:
    """Evaluate an arithmetic expression exactly, without ``eval``.

    Accepts number literals, ``+ - * /``, unary ``+``/``-``, ``//``, ``%`` and ``**`` with a
    small integer exponent. Decimal literals are read as exact decimals (``4.18`` is 209/50).

    Raises:
        ValueError: on anything else (names, calls, huge exponents, division by zero, ...).
    """
    if not isinstance(expression, str) or len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError("expression must be a string of at most 10,000 characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"not an arithmetic expression: {expression[:80]!r}") from exc
    try:
        return _eval_node(tree.body)
    except ZeroDivisionError as exc:
        raise ValueError(f"division by zero in {expression[:80]!r}") from exc
    except RecursionError as exc:
        raise ValueError("expression nested too deeply") from exc


def _eval_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # str() round-trips the literal as written, so 4.18 stays the exact decimal 209/50.
        return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left), _eval_node(node.right)
        if type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node.op, ast.FloorDiv):
            return Fraction(left // right)
        if isinstance(node.op, ast.Mod):
            return left % right
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1 or abs(right) > 64:
                raise ValueError("only small integer exponents are allowed")
            return left ** int(right)
    raise ValueError(f"unsupported syntax in arithmetic expression: {type(node).__name__}")


def format_number(value: Fraction) -> str:
    """Canonical answer text: ``12``, ``-2.5`` (terminating decimals) or ``7/3``."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # terminating decimal: print it exactly
        digits = 0
        scaled = value
        while scaled.denominator != 1:
            scaled *= 10
            digits += 1
        sign = "-" if scaled < 0 else ""
        text = str(abs(scaled.numerator)).rjust(digits + 1, "0")
        return f"{sign}{text[:-digits]}.{text[-digits:]}"
    return f"{value.numerator}/{value.denominator}"


# ---------------------------------------------------------------- Game of 24

# An expression node: an int leaf, or (operator, left node, right node).
_Node = int | tuple[str, "_Node", "_Node"]
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _render(node: _Node) -> str:
    """Expression text with only the parentheses the precedence rules need."""
    if isinstance(node, int):
        return str(node)
    op, left, right = node
    prec = _PREC[op]

    def side(child: _Node, right_side: bool) -> str:
        text = _render(child)
        if isinstance(child, int):
            return text
        child_prec = _PREC[child[0]]
        needs = child_prec < prec or (right_side and child_prec == prec and op in "-/")
        return f"({text})" if needs else text

    return f"{side(left, False)}{op}{side(right, True)}"


def _pairs(a: tuple[float, _Node], b: tuple[float, _Node]) -> list[tuple[float, _Node]]:
    """Every one-operator combination of two sub-expressions (both orders for - and /)."""
    (x, nx), (y, ny) = a, b
    out = [
        (x + y, ("+", nx, ny)),
        (x * y, ("*", nx, ny)),
        (x - y, ("-", nx, ny)),
        (y - x, ("-", ny, nx)),
    ]
    if abs(y) > 1e-12:
        out.append((x / y, ("/", nx, ny)))
    if abs(x) > 1e-12:
        out.append((y / x, ("/", ny, nx)))
    return out


def _splits(mask: int) -> list[tuple[int, int]]:
    """Each unordered split of a bit mask into two non-empty parts, once."""
    out, sub = [], (mask - 1) & mask
    while sub:
        if sub < mask ^ sub:
            out.append((sub, mask ^ sub))
        sub = (sub - 1) & mask
    return out


def solve_24(numbers: Sequence[int], target: int = 24) -> str | None:
    """One expression using every number once with ``+ - * /`` that equals ``target`` exactly.

    Dynamic programming over subsets of the numbers (bit masks), keeping one expression per
    distinct value; the search runs in floats (fast) and every candidate is confirmed with exact
    rational arithmetic, so round-off never yields a wrong solution. Returns ``None`` when the
    numbers cannot make ``target``.
    """
    if not numbers:
        return None
    full = (1 << len(numbers)) - 1
    table: dict[int, dict[float, tuple[float, _Node]]] = {
        1 << i: {float(n): (float(n), int(n))} for i, n in enumerate(numbers)
    }
    for mask in range(1, full):
        if mask not in table:
            entries: dict[float, tuple[float, _Node]] = {}
            for left, right in _splits(mask):
                for a in table[left].values():
                    for b in table[right].values():
                        for item in _pairs(a, b):
                            entries.setdefault(round(item[0], 9), item)
            table[mask] = entries
    finals = (
        list(table[full].values())
        if full in table
        else [
            item
            for left, right in _splits(full)
            for a in table[left].values()
            for b in table[right].values()
            for item in _pairs(a, b)
        ]
    )
    for value, node in finals:
        if abs(value - target) < 1e-6:
            text = _render(node)
            if evaluate_arithmetic(text) == target:
                return text
    return None


def make_game24_task(
    rng: random.Random, task_id: str, *, low: int = 1, high: int = 13, max_tries: int = 1000
) -> Task:
    """A solvable Game of 24 instance with four numbers drawn from ``[low, high]``."""
    for _ in range(max_tries):
        numbers = sorted(rng.randint(low, high) for _ in range(4))
        solution = solve_24(numbers)
        if solution is not None:
            break
    else:
        raise ValueError(f"no solvable Game of 24 instance found in [{low}, {high}]")
    question = (
        f"Using the numbers {numbers}, create an expression that equals 24. Use each "
        "number exactly once, with only +, -, ×, / and parentheses."
    )
    return Task(
        id=task_id,
        question=question,
        answer=solution,
        scorer="game24",
        source="generated:math",
        metadata={"kind": "game24", "numbers": numbers, "solution": solution},
    )


# ---------------------------------------------------------------- word problems

_NAMES = (
    "Orla",
    "Tavin",
    "Mirek",
    "Zusa",
    "Keld",
    "Anouk",
    "Brisk",
    "Yanto",
    "Selva",
    "Drommel",
    "Ilka",
    "Faro",
    "Quenby",
    "Rusk",
    "Veda",
    "Holm",
)
_ITEMS = ("marbles", "stickers", "apples", "pencils", "shells", "coins", "cards", "beads")
_THINGS = ("lamp", "bicycle", "kettle", "backpack", "chair", "telescope", "clock", "tent")
_Problem = tuple[str, str]  # question, expression


def _wp_boxes(r: random.Random) -> _Problem:
    a, b, item = r.choice(_NAMES), r.choice(_NAMES), r.choice(_ITEMS)
    n, k = r.randint(2, 9), r.randint(3, 15)
    g = r.randint(1, n * k - 1)
    return (
        f"{a} buys {n} boxes with {k} {item} in each box and gives {g} {item} to {b}. "
        f"How many {item} does {a} have left?",
        f"{n} * {k} - {g}",
    )


def _wp_reading(r: random.Random) -> _Problem:
    a, p, d, q = r.choice(_NAMES), r.randint(5, 40), r.randint(2, 14), r.randint(1, 60)
    return (
        f"{a} reads {p} pages a day for {d} days and then {q} more pages on the last "
        "evening. How many pages does she read in total?",
        f"{p} * {d} + {q}",
    )


def _wp_train(r: random.Random) -> _Problem:
    v, t, w, u = r.randint(40, 120), r.randint(1, 5), r.randint(30, 110), r.randint(1, 4)
    return (
        f"A train travels at {v} km/h for {t} hours and then at {w} km/h for {u} hours. "
        "How many kilometres does it travel in total?",
        f"{v} * {t} + {w} * {u}",
    )


def _wp_share(r: random.Random) -> _Problem:
    a, item, k, m = r.choice(_NAMES), r.choice(_ITEMS), r.randint(2, 9), r.randint(3, 25)
    return (
        f"{a} has {k * m} {item} and shares them equally among {k} friends. How many "
        f"{item} does each friend get?",
        f"{k * m} / {k}",
    )


def _wp_discount(r: random.Random) -> _Problem:
    thing, price, pct = r.choice(_THINGS), r.randint(8, 300), r.choice((10, 15, 20, 25, 30, 40, 50))
    return (
        f"A {thing} costs {price} dollars. It is sold at a {pct}% discount. What is the sale "
        "price in dollars?",
        f"{price} * (100 - {pct}) / 100",
    )


def _wp_average(r: random.Random) -> _Problem:
    a, scores = r.choice(_NAMES), [r.randint(50, 100) for _ in range(4)]
    listed = ", ".join(map(str, scores[:3])) + f" and {scores[3]}"
    return (
        f"{a} scored {listed} on four tests. What is the average score?",
        f"({' + '.join(map(str, scores))}) / 4",
    )


def _wp_garden(r: random.Random) -> _Problem:
    length, width = r.randint(8, 40), r.randint(5, 30)
    side = r.randint(1, min(length, width) - 1)
    return (
        f"A garden is {length} m long and {width} m wide. A square pond with sides of {side} m "
        "is dug in it. How many square metres of garden are left?",
        f"{length} * {width} - {side} * {side}",
    )


def _wp_ages(r: random.Random) -> _Problem:
    a, b, c = r.sample(_NAMES, 3)
    x, k = r.randint(3, 15), r.randint(2, 4)
    d = r.randint(1, k * x - 1)
    return (
        f"{a} is {x} years old. {b} is {k} times as old as {a}, and {c} is {d} years younger "
        f"than {b}. What is the sum of their three ages?",
        f"{x} + {k} * {x} + ({k} * {x} - {d})",
    )


def _wp_factory(r: random.Random) -> _Problem:
    rate, n, h = r.randint(5, 60), r.randint(2, 8), r.randint(2, 10)
    d = r.randint(0, rate * n * h // 4)
    return (
        f"A machine makes {rate} parts per hour. {n} such machines run for {h} hours and "
        f"{d} of the parts are defective. How many good parts are made?",
        f"{rate} * {n} * {h} - {d}",
    )


def _wp_wages(r: random.Random) -> _Problem:
    a, w, h, n = r.choice(_NAMES), r.randint(9, 40), r.randint(5, 40), r.randint(2, 8)
    s = r.randint(0, w * h * n - 1)
    return (
        f"{a} earns {w} dollars per hour, works {h} hours a week for {n} weeks and spends "
        f"{s} dollars. How many dollars are left?",
        f"{w} * {h} * {n} - {s}",
    )


WORD_PROBLEM_KINDS: dict[str, Callable[[random.Random], _Problem]] = {
    "boxes": _wp_boxes,
    "reading": _wp_reading,
    "train": _wp_train,
    "share": _wp_share,
    "discount": _wp_discount,
    "average": _wp_average,
    "garden": _wp_garden,
    "ages": _wp_ages,
    "factory": _wp_factory,
    "wages": _wp_wages,
}
"""template name -> generator of (question, Python expression)"""


def make_word_problem(rng: random.Random, task_id: str) -> Task:
    """One arithmetic word problem (scorer ``math``) with its exact answer and expression."""
    kind = rng.choice(sorted(WORD_PROBLEM_KINDS))
    question, expression = WORD_PROBLEM_KINDS[kind](rng)
    answer = format_number(evaluate_arithmetic(expression))
    return Task(
        id=task_id,
        question=question,
        answer=answer,
        scorer="math",
        source="generated:math",
        metadata={"kind": f"word:{kind}", "expression": expression},
    )


def make_math_tasks(
    seed: int = 0,
    num_tasks: int = 500,
    *,
    game24_fraction: float = 0.5,
    max_duplicate_tries: int = 200,
) -> list[Task]:
    """A shuffled mix of Game of 24 and word problems (``game24_fraction`` of them Game of 24).

    Questions are unique while the generators can still find new ones; duplicates are allowed
    only after ``max_duplicate_tries`` misses in a row (Game of 24 has ~1,360 solvable sets).
    """
    if num_tasks < 0:
        raise ValueError(f"num_tasks must be >= 0, got {num_tasks}")
    if not 0.0 <= game24_fraction <= 1.0:
        raise ValueError(f"game24_fraction must be in [0, 1], got {game24_fraction}")
    rng = random.Random(seed)
    n_game = round(num_tasks * game24_fraction)
    kinds = ["game24"] * n_game + ["word"] * (num_tasks - n_game)
    rng.shuffle(kinds)
    tasks: list[Task] = []
    seen: set[str] = set()
    for i, kind in enumerate(kinds):
        task_id = f"math-{seed}-{i}"
        for miss in range(max_duplicate_tries + 1):
            task = (
                make_game24_task(rng, task_id)
                if kind == "game24"
                else make_word_problem(rng, task_id)
            )
            if task.question not in seen or miss == max_duplicate_tries:
                break
        seen.add(task.question)
        tasks.append(task)
    return tasks
