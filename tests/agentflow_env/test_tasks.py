"""Generated task suites: determinism, validity of every answer, solution paths, options."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from agentflow_env.rewards import check_game24, math_equal, score
from agentflow_env.tasks import TaskSuite, make_suite
from agentflow_env.tasks.math_tasks import evaluate_arithmetic, format_number, solve_24
from agentflow_env.tasks.science import format_option
from agentflow_env.tasks.search_world import RELATIONS, generate_world

FAMILIES = ("search", "math", "agentic", "science")
REPO = Path(__file__).parents[2]


def _digest(suite: TaskSuite) -> str:
    payload = [t.model_dump(mode="json") for t in suite.tasks], list(suite.documents)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def suites() -> dict[str, TaskSuite]:
    return {family: make_suite(family, seed=0, num_tasks=120) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_suite_other_seed_other_suite(family: str) -> None:
    a, b = make_suite(family, seed=7, num_tasks=30), make_suite(family, seed=7, num_tasks=30)
    assert a == b and _digest(a) == _digest(b)
    c = make_suite(family, seed=8, num_tasks=30)
    assert [t.question for t in c.tasks] != [t.question for t in a.tasks]
    assert len(a.tasks) == 30 and len({t.id for t in a.tasks}) == 30
    assert len({t.question for t in a.tasks}) == 30, "questions are unique"


def test_same_suite_in_fresh_processes_with_different_hash_seeds() -> None:
    code = (
        "import hashlib, json, sys; from agentflow_env.tasks import make_suite\n"
        "out = []\n"
        "for f in ('search', 'math', 'agentic', 'science'):\n"
        "    s = make_suite(f, seed=3, num_tasks=40)\n"
        "    p = [t.model_dump(mode='json') for t in s.tasks], list(s.documents)\n"
        "    out.append(hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest())\n"
        "print(' '.join(out))"
    )
    digests = []
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
            check=True,
        )
        digests.append(run.stdout.split())
    here = [_digest(make_suite(f, seed=3, num_tasks=40)) for f in FAMILIES]
    assert digests[0] == digests[1] == here


def test_default_sizes_match_the_env_defaults() -> None:
    assert [len(make_suite(f)) for f in FAMILIES] == [500, 500, 300, 300]


def test_search_tasks_follow_their_paths_through_the_documents(
    suites: dict[str, TaskSuite],
) -> None:
    suite = suites["search"]
    docs = {d["title"]: d["text"] for d in suite.documents}
    assert len(docs) == len(suite.documents) == 248, "one document per entity, unique titles"
    assert Counter(t.metadata["hops"] for t in suite.tasks).keys() == {1, 2, 3, 4}
    for task in suite.tasks:
        path = task.metadata["path"]
        assert task.scorer == "exact" and len(path) == task.metadata["hops"]
        assert path[0]["entity"] in task.question and path[-1]["answer"] == task.answer
        for i, hop in enumerate(path):
            assert hop["entity"] in hop["query"], "the query names the entity to look up"
            assert hop["answer"] in docs[hop["entity"]], "the entity's document states the answer"
            assert docs[hop["entity"]].count(hop["entity"]) >= 3, "the name is repeated"
            if i:
                assert hop["entity"] == path[i - 1]["answer"], "hops chain"
        entities = [path[0]["entity"], *[h["answer"] for h in path]]
        assert len(set(entities)) == len(entities), "no cycles (an answer never repeats a name)"
        assert task.answer not in task.question
        assert score(task.answer, task) == 1.0


def test_hops_range_is_configurable_and_validated() -> None:
    suite = make_suite("search", seed=1, num_tasks=60, hops=(1, 3))
    assert {t.metadata["hops"] for t in suite.tasks} == {1, 2, 3}
    assert {t.metadata["hops"] for t in make_suite("search", num_tasks=20, hops=2).tasks} == {2}
    for bad in [(0, 2), (3, 1), "2", (1, 2, 3)]:
        with pytest.raises(ValueError, match="hops"):
            make_suite("search", num_tasks=5, hops=bad)


def test_world_is_consistent() -> None:
    world = generate_world(5, n_people=40, n_cities=10, n_companies=10, n_countries=3)
    for entity in world.entities.values():
        for relation, target in entity.links.items():
            assert RELATIONS[relation][0] == entity.kind
            assert world.entities[target].kind == RELATIONS[relation][1]
        if entity.kind == "person":
            assert world.follow(entity.links["spouse"], "spouse") == entity.name
        if entity.kind == "country":
            assert world.follow(entity.links["capital"], "located_in") == entity.name
        if entity.kind == "company":
            founder = world.entities[entity.links["founded_by"]]
            assert entity.facts["founded"] - founder.facts["birth_year"] >= 20
    tokens = [
        w.lower()
        for name in world.entities
        for w in name.split()
        if w
        not in (
            "Industries",
            "Labs",
            "Systems",
            "Works",
            "Holdings",
            "Dynamics",
            "Foods",
            "Motors",
            "Mills",
            "Group",
        )
    ]
    assert len(tokens) == len(set(tokens)), "every invented word is used once"
    with pytest.raises(ValueError, match="n_people"):
        generate_world(0, n_people=3)


def test_math_suite_mix_and_answers(suites: dict[str, TaskSuite]) -> None:
    tasks = suites["math"].tasks
    kinds = Counter(t.scorer for t in tasks)
    assert kinds == {"game24": 60, "math": 60}
    for task in tasks:
        if task.scorer == "game24":
            numbers = task.metadata["numbers"]
            assert len(numbers) == 4 and all(1 <= n <= 13 for n in numbers)
            assert str(numbers) in task.question
            assert check_game24(task.metadata["solution"], numbers)
            assert score(task.answer, task) == 1.0
        else:
            value = eval(task.metadata["expression"])  # our own generated arithmetic
            assert math_equal(str(value), task.answer)
            assert score(task.answer, task) == 1.0 and score(str(value + 1), task) == 0.0
    only_words = make_suite("math", num_tasks=10, game24_fraction=0.0).tasks
    assert {t.scorer for t in only_words} == {"math"}
    with pytest.raises(ValueError, match="game24_fraction"):
        make_suite("math", num_tasks=10, game24_fraction=1.5)


def test_game24_solver_is_exact_and_complete_on_known_cases() -> None:
    assert evaluate_arithmetic(solve_24([3, 3, 8, 8]) or "0") == 24  # needs fractions: 8/(3-8/3)
    assert solve_24([1, 1, 1, 1]) is None and solve_24([1, 1, 1, 2]) is None
    assert evaluate_arithmetic(solve_24([1, 5, 5, 5]) or "0") == 24  # 5*(5-1/5)


def test_arithmetic_evaluator_and_formatting() -> None:
    assert evaluate_arithmetic("4.18 * 2") == Fraction(209, 25)
    assert evaluate_arithmetic("-(2**3) // 3 + 7 % 4") == Fraction(0)
    for bad in ["__import__('os')", "a + 1", "2 ** 100000", "1/0", "[1]", "x" * 20_000]:
        with pytest.raises(ValueError):
            evaluate_arithmetic(bad)
    assert [format_number(Fraction(n, d)) for n, d in [(6, 3), (-5, 2), (1, 3), (3, 8)]] == [
        "2",
        "-2.5",
        "1/3",
        "0.375",
    ]
    assert [
        format_option(Fraction(n, d)) for n, d in [(25, 44), (90000, 1), (1, 4), (2000, 3)]
    ] == ["0.5682", "90000", "0.25", "666.7"]


def test_agentic_tasks_need_search_and_computation(suites: dict[str, TaskSuite]) -> None:
    suite = suites["agentic"]
    docs = {d["title"]: d["text"] for d in suite.documents}
    assert len(Counter(t.metadata["kind"] for t in suite.tasks)) == 6
    for task in suite.tasks:
        path = task.metadata["path"]
        assert len(path) >= 2
        for hop in path:
            assert hop["answer"] in docs[hop["entity"]] and hop["entity"] in hop["query"]
        value = eval(task.metadata["expression"])  # our own generated expression
        if task.scorer == "math":
            assert isinstance(value, int) and value > 0 and str(value) == task.answer
            numbers = [h["answer"] for h in path if h["answer"].isdigit()]
            assert all(n in task.metadata["expression"] for n in numbers[-2:]), (
                "computed from retrieved facts"
            )
        else:
            assert task.scorer == "exact" and value == task.answer
        assert task.answer not in task.question or task.scorer == "exact"
        assert score(task.answer, task) == 1.0
    with pytest.raises(ValueError, match="unknown agentic kinds"):
        make_suite("agentic", num_tasks=3, kinds=("nope",))


def test_science_options_have_one_verifiable_key(suites: dict[str, TaskSuite]) -> None:
    for task in suites["science"].tasks:
        assert task.scorer == "mc" and task.choices is not None and len(task.choices) == 4
        assert len(set(task.choices)) == 4 and task.answer in "ABCD"
        correct = task.choices["ABCD".index(task.answer)]
        value = eval(task.metadata["expression"])  # our own generated expression
        shown = float(correct.split()[0])
        assert abs(shown - value) <= 1e-3 * abs(value), (task.id, correct, value)
        for letter, choice in zip("ABCD", task.choices, strict=False):
            assert f"{letter}. {choice}" in task.question
            assert score(letter, task) == (1.0 if letter == task.answer else 0.0)
        assert score(correct, task) == 1.0


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="family must be one of"):
        make_suite("chess")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="make_suite\\('math'\\).*hops"):
        make_suite("math", hops=2)
    with pytest.raises(ValueError, match="num_tasks"):
        make_suite("science", num_tasks=0)
    with pytest.raises(ValueError, match="unique questions"):
        make_suite(
            "search",
            num_tasks=500,
            hops=1,
            n_people=4,
            n_cities=1,
            n_companies=1,
            n_countries=1,
            max_tries=2_000,
        )
