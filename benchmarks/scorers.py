"""Scorer benchmark: our rule scorers and reference scorers against labelled cases.

Cases come from the gold answers of the paper's ten files (``benchmarks/scorer_cases.py``: each
gold perturbed into correct restatements and wrong-but-close answers, labelled by construction).
Each case is scored by our :func:`agentflow_env.rewards.score` and by the reference for its
family, all run here:

- QA (``exact``): the official HotpotQA exact match (its published normalization: lowercase,
  drop ASCII punctuation, drop a/an/the, collapse spaces), re-implemented below.
- math: Hugging Face's Math-Verify (``verify(parse(gold), parse(prediction))``, defaults).
- multiple choice: an lm-eval-style "flexible extract" letter filter: the last ``(X)``, else
  the last option text found in the output, else the last ``: X``.
- Game of 24: a strict checker (digits, ``+ - * / ( )``, ``× ÷``, an optional ``= 24``, exact
  fractions) on instances a brute-force solver confirms are solvable.

Reports agreement with the labels per file (ours and the reference), agreement between the
two, and the cases each gets wrong by perturbation class.

    python benchmarks/scorers.py            # every item of the ten files
    python benchmarks/scorers.py --quick    # the first 20 items of each file
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import cache
from itertools import permutations
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

if __package__ in (
    None,
    "",
):  # run as a script (python benchmarks/x.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agentflow_env.rewards import score
from agentflow_env.tasks.base import Task
from agentflow_env.tasks.loaders import load_tasks
from benchmarks.common import machine_info
from benchmarks.scorer_cases import Case, cases_for

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "agentflow"
FILES = (
    "2wiki.json",
    "bamboogle.json",
    "hotpotqa.json",
    "musique.json",
    "gaia.json",
    "aime24.json",
    "amc23.json",
    "gpqa.json",
    "medqa.json",
    "gameof24.json",
)


# ------------------------------------------------------------------ references


def hotpot_normalize(text: str) -> str:
    """The official HotpotQA/SQuAD ``normalize_answer`` (lower, punctuation, articles, spaces)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def hotpot_em(prediction: str, golds: Sequence[str]) -> bool:
    return any(hotpot_normalize(prediction) == hotpot_normalize(g) for g in golds)


def lm_eval_letter(response: str, choices: Sequence[str]) -> str | None:
    """lm-eval-style flexible extract: last ``(X)``; else the last option text in the output
    (case and punctuation ignored); else the last ``: X``."""
    found = re.findall(r"\(([A-Z])\)", response)
    if found:
        return found[-1]

    def plain(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch not in string.punctuation)

    texts = [plain(c).strip() for c in choices]
    pattern = "|".join(re.escape(t) for t in sorted(set(texts), key=len, reverse=True) if t)
    hits = re.findall(f"({pattern})", plain(response)) if pattern else []
    if hits:
        return string.ascii_uppercase[texts.index(hits[-1])]
    found = re.findall(r":[\s]*([A-Z])", response)
    return found[-1] if found else None


def _math_verify() -> Callable[[str, str], bool] | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None

    def check(prediction: str, gold: str) -> bool:
        # Bare LaTeX is only read inside $...$ (what a model's output would have around it).
        bare = "\\" in prediction and "$" not in prediction and "\\boxed" not in prediction
        return bool(verify(parse(f"${gold}$"), parse(f"${prediction}$" if bare else prediction)))

    return check


def _values(numbers: Sequence[Fraction]) -> set[Fraction]:
    """Every value the numbers can make with + - * / (each used once): the brute-force solver."""
    if len(numbers) == 1:
        return {numbers[0]}
    out: set[Fraction] = set()
    for i, j in permutations(range(len(numbers)), 2):
        rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
        a, b = numbers[i], numbers[j]
        for v in {a + b, a - b, a * b, *([a / b] if b else [])}:
            out |= _values([*rest, v])
    return out


@cache
def _solvable(numbers: tuple[int, ...]) -> bool:
    return Fraction(24) in _values([Fraction(n) for n in numbers])


def solvable(numbers: Sequence[int]) -> bool:
    """Whether the numbers can make 24 (brute force over every order, pairing and operator)."""
    return _solvable(tuple(sorted(numbers)))


_TOKENS = re.compile(r"\s*(\d+|[-+*/()])")


def strict_game24(prediction: str, numbers: Sequence[int]) -> bool:
    """Digits, + - * / ( ) (and × ÷), optional "= 24"; shunting-yard in exact fractions."""
    text = prediction.replace("×", "*").replace("÷", "/").strip()
    text = re.sub(r"\s*=\s*24\s*$", "", text)
    pos, tokens = 0, []
    while pos < len(text):
        match = _TOKENS.match(text, pos)
        if match is None:
            return False
        tokens.append(match.group(1))
        pos = match.end()
    prec = {"+": 1, "-": 1, "*": 2, "/": 2}
    out: list[Fraction] = []
    ops: list[str] = []
    used: list[int] = []

    def apply() -> None:
        op, b, a = ops.pop(), out.pop(), out.pop()
        out.append(a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b)

    try:
        for tok in tokens:
            if tok.isdigit():
                used.append(int(tok))
                out.append(Fraction(int(tok)))
            elif tok == "(":
                ops.append(tok)
            elif tok == ")":
                while ops[-1] != "(":
                    apply()
                ops.pop()
            else:
                while ops and ops[-1] != "(" and prec[ops[-1]] >= prec[tok]:
                    apply()
                ops.append(tok)
        while ops:
            apply()
    except (IndexError, KeyError, ZeroDivisionError):
        return False
    return len(out) == 1 and out[0] == 24 and sorted(used) == sorted(numbers)


# ------------------------------------------------------------------ run


def _reference(
    case: Case, math_verify: Callable[[str, str], bool] | None
) -> tuple[str, bool | None]:
    task: Task = case.task
    if task.scorer == "exact":
        return "HotpotQA EM", hotpot_em(
            case.prediction, [task.answer, *task.metadata.get("aliases", [])]
        )
    if task.scorer == "math":
        if math_verify is None:
            return "Math-Verify (not installed)", None
        return "Math-Verify", math_verify(case.prediction, task.answer)
    if task.scorer == "mc":
        assert task.choices is not None
        return "lm-eval MC filter", lm_eval_letter(case.prediction, task.choices) == task.answer
    numbers = task.metadata["numbers"]
    return "strict checker + solver", solvable(numbers) and strict_game24(case.prediction, numbers)


def run(limit: int | None) -> dict[str, Any]:
    math_verify = _math_verify()
    cases: list[Case] = []
    for name in FILES:
        raw = json.loads((DATA / name).read_text(encoding="utf-8"))[:limit]
        cases += cases_for(name, load_tasks(DATA / name, limit=limit), raw)
    score("\\sqrt{4}", Task(id="warm-up", question="q", answer="2", scorer="math"))  # start
    start = time.perf_counter()  # the Math-Verify child (~2 s, once per process) before timing
    ours = [score(c.prediction, c.task) >= 0.5 for c in cases]
    ours_s = time.perf_counter() - start
    refs = [_reference(c, math_verify) for c in cases]
    files, classes = [], defaultdict(lambda: {"cases": 0, "ours_wrong": 0, "reference_wrong": 0})
    for name in FILES:
        idx = [i for i, c in enumerate(cases) if c.file == name]
        judged = [i for i in idx if refs[i][1] is not None]
        files.append(
            {
                "file": name,
                "scorer": cases[idx[0]].task.scorer,
                "reference": refs[idx[0]][0],
                "cases": len(idx),
                "ours_vs_label": sum(ours[i] == cases[i].label for i in idx) / len(idx),
                "reference_vs_label": (
                    sum(refs[i][1] == cases[i].label for i in judged) / len(judged)
                    if judged
                    else None
                ),
                "ours_vs_reference": (
                    sum(ours[i] == refs[i][1] for i in judged) / len(judged) if judged else None
                ),
            }
        )
    for i, case in enumerate(cases):
        row = classes[(case.task.scorer, case.kind, case.label)]
        row["cases"] += 1
        row["ours_wrong"] += ours[i] != case.label
        row["reference_wrong"] += refs[i][1] is not None and refs[i][1] != case.label
    wrong = [
        {
            "file": c.file,
            "kind": c.kind,
            "prediction": c.prediction[:120],
            "gold": c.task.answer[:120],
            "label": c.label,
            "ours": ours[i],
        }
        for i, c in enumerate(cases)
        if ours[i] != c.label
    ]
    return {
        "cases": len(cases),
        "files": files,
        "classes": [
            {"scorer": s, "kind": k, "label": lab, **v}
            for (s, k, lab), v in sorted(classes.items())
        ],
        "ours_total_vs_label": sum(o == c.label for o, c in zip(ours, cases, strict=True))
        / len(cases),
        "ours_disagreements": wrong[:100],
        "ours_seconds": ours_s,
        "ours_cases_per_s": len(cases) / ours_s,
        "math_verify": math_verify is not None,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _print(console: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"Scorers vs labels ({report['cases']:,} cases)")
    for col in (
        "file",
        "scorer",
        "cases",
        "ours = label",
        "reference",
        "ref = label",
        "ours = ref",
    ):
        table.add_column(col, justify="right" if col != "reference" else "left")
    for f in report["files"]:
        table.add_row(
            f["file"],
            f["scorer"],
            str(f["cases"]),
            _pct(f["ours_vs_label"]),
            f["reference"],
            _pct(f["reference_vs_label"]),
            _pct(f["ours_vs_reference"]),
        )
    console.print(table)
    table = Table(title="Cases each scorer gets wrong, by perturbation class")
    for col in ("scorer", "class", "label", "cases", "ours wrong", "reference wrong"):
        table.add_column(col)
    for c in report["classes"]:
        if c["ours_wrong"] or c["reference_wrong"]:
            table.add_row(
                c["scorer"],
                c["kind"],
                "right" if c["label"] else "wrong",
                str(c["cases"]),
                str(c["ours_wrong"]),
                str(c["reference_wrong"]),
            )
    console.print(table)
    console.print(
        f"ours: {_pct(report['ours_total_vs_label'])} of {report['cases']:,} cases agree with "
        f"the label; {report['ours_cases_per_s']:,.0f} cases/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the first 20 items of each file")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scorers.json"))
    args = parser.parse_args(argv)
    console = Console(width=120)
    if DATA.is_dir():
        report = {"benchmark": "scorers", "quick": args.quick, **run(20 if args.quick else None)}
        _print(console, report)
    else:  # a checkout without ../shared: say so in the result instead of failing the suite
        report = {"benchmark": "scorers", "quick": args.quick, "skipped": f"no files at {DATA}"}
        console.print(f"[yellow]skipped: the ten benchmark files are not at {DATA}[/yellow]")
    report["machine"] = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
