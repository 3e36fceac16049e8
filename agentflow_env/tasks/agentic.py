"""Generated Agentic tasks: search the generated world, then compute.

Each question needs several searches (people's birth years, founding years, populations,
employee counts live in the world's documents) and one computation over the facts found.
``metadata["path"]`` lists the searches (same hop format as :mod:`search_world`) and
``metadata["expression"]`` is a Python expression over the retrieved numbers that computes the
answer. Numeric answers use the ``math`` scorer; "who is older" questions use ``exact``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from agentflow_env.tasks.base import Task
from agentflow_env.tasks.search_world import World, generate_world, hop

__all__ = ["make_agentic_tasks", "AGENTIC_KINDS"]

# A template returns (question, path, expression, answer, scorer) or None when the draw is unusable.
_Draw = tuple[str, list[dict[str, str]], str, str, str] | None


def _born(world: World, person: str) -> dict[str, str]:
    year = str(world.entities[person].facts["birth_year"])
    return hop(f"{person} born in", person, year, "birth_year", f"Find the birth year of {person}.")


def _person_ref(world: World, rng: random.Random) -> tuple[str, str, list[dict[str, str]]]:
    """A person named directly or through one relation: (phrase, name, hops to resolve it)."""
    way = rng.choice(("name", "mayor", "founder", "spouse"))
    if way == "mayor":
        city = rng.choice(world.of_kind("city")).name
        return (
            f"the mayor of {city}",
            world.follow(city, "mayor"),
            [world.relation_hop(city, "mayor")],
        )
    if way == "founder":
        company = rng.choice(world.of_kind("company")).name
        return (
            f"the founder of {company}",
            world.follow(company, "founded_by"),
            [world.relation_hop(company, "founded_by")],
        )
    person = rng.choice(world.of_kind("person")).name
    if way == "spouse":
        return (
            f"the spouse of {person}",
            world.follow(person, "spouse"),
            [world.relation_hop(person, "spouse")],
        )
    return person, person, []


def _age_gap(world: World, rng: random.Random) -> _Draw:
    (pa, a, ha), (pb, b, hb) = _person_ref(world, rng), _person_ref(world, rng)
    ya, yb = (world.entities[n].facts["birth_year"] for n in (a, b))
    if a == b or ya == yb:
        return None
    if ya > yb:  # phrase it so the answer is positive: A is the older one
        (pa, a, ha, ya), (pb, b, hb, yb) = (pb, b, hb, yb), (pa, a, ha, ya)
    path = [*ha, _born(world, a), *hb, _born(world, b)]
    return f"How many years older is {pa} than {pb}?", path, f"{yb} - {ya}", str(yb - ya), "math"


def _older(world: World, rng: random.Random) -> _Draw:
    (pa, a, ha), (pb, b, hb) = _person_ref(world, rng), _person_ref(world, rng)
    ya, yb = (world.entities[n].facts["birth_year"] for n in (a, b))
    if a == b or ya == yb or not (ha or hb):
        return None
    path = [*ha, _born(world, a), *hb, _born(world, b)]
    expression = f"{a!r} if {ya} < {yb} else {b!r}"
    return (
        f"Who was born earlier: {pa} or {pb}? Answer with the person's name.",
        path,
        expression,
        a if ya < yb else b,
        "exact",
    )


def _founding_age(world: World, rng: random.Random) -> _Draw:
    company = rng.choice(world.of_kind("company"))
    founder = world.follow(company.name, "founded_by")
    birth = world.entities[founder].facts["birth_year"]
    founded = company.facts["founded"]
    path = [world.relation_hop(company.name, "founded_by"), _born(world, founder)]
    return (
        f"How old was the founder of {company.name} in the year {company.name} was founded?",
        path,
        f"{founded} - {birth}",
        str(founded - birth),
        "math",
    )


def _city_before_company(world: World, rng: random.Random) -> _Draw:
    company = rng.choice(world.of_kind("company"))
    city = world.follow(company.name, "headquartered_in")
    c_year, co_year = world.entities[city].facts["founded"], company.facts["founded"]
    path = [
        world.relation_hop(company.name, "headquartered_in"),
        hop(f"{city} founded in", city, str(c_year), "founded", f"Find when {city} was founded."),
    ]
    return (
        f"How many years before {company.name} was founded was the city where it is "
        "headquartered founded?",
        path,
        f"{co_year} - {c_year}",
        str(co_year - c_year),
        "math",
    )


def _population_sum(world: World, rng: random.Random) -> _Draw:
    person = rng.choice(world.of_kind("person")).name
    country = rng.choice(world.of_kind("country")).name
    born, capital = world.follow(person, "born_in"), world.follow(country, "capital")
    if born == capital:
        return None
    p1, p2 = (world.entities[c].facts["population"] for c in (born, capital))
    path = [
        world.relation_hop(person, "born_in"),
        hop(f"{born} population", born, str(p1), "population", f"Find the population of {born}."),
        world.relation_hop(country, "capital"),
        hop(
            f"{capital} population",
            capital,
            str(p2),
            "population",
            f"Find the population of {capital}.",
        ),
    ]
    return (
        f"What is the combined population of the city where {person} was born and the "
        f"capital of {country}?",
        path,
        f"{p1} + {p2}",
        str(p1 + p2),
        "math",
    )


def _employee_gap(world: World, rng: random.Random) -> _Draw:
    person = rng.choice(world.of_kind("person")).name
    employer = world.follow(person, "works_for")
    other = rng.choice(world.of_kind("company")).name
    e1, e2 = (world.entities[c].facts["employees"] for c in (employer, other))
    if other == employer or e1 == e2:
        return None
    path = [
        world.relation_hop(person, "works_for"),
        hop(
            f"{employer} employees",
            employer,
            str(e1),
            "employees",
            f"Find how many employees {employer} has.",
        ),
        hop(
            f"{other} employees",
            other,
            str(e2),
            "employees",
            f"Find how many employees {other} has.",
        ),
    ]
    if e1 > e2:
        question = f"How many more employees does the company {person} works for have than {other}?"
        return question, path, f"{e1} - {e2}", str(e1 - e2), "math"
    question = f"How many fewer employees does the company {person} works for have than {other}?"
    return question, path, f"{e2} - {e1}", str(e2 - e1), "math"


AGENTIC_KINDS: dict[str, Callable[[World, random.Random], _Draw]] = {
    "age_gap": _age_gap,
    "older": _older,
    "founding_age": _founding_age,
    "city_before_company": _city_before_company,
    "population_sum": _population_sum,
    "employee_gap": _employee_gap,
}
"""template name -> draw function"""


def make_agentic_tasks(
    seed: int = 0,
    num_tasks: int = 300,
    *,
    world: World | None = None,
    kinds: tuple[str, ...] | None = None,
    max_tries: int = 100_000,
    **world_kwargs: int,
) -> tuple[list[Task], World]:
    """``num_tasks`` unique search-and-compute questions over ``world`` (from ``seed`` if None).

    ``kinds`` restricts the templates (default: all of :data:`AGENTIC_KINDS`, drawn uniformly).
    """
    chosen = sorted(AGENTIC_KINDS) if kinds is None else list(kinds)
    unknown = [k for k in chosen if k not in AGENTIC_KINDS]
    if unknown or not chosen:
        raise ValueError(f"unknown agentic kinds {unknown}; valid: {sorted(AGENTIC_KINDS)}")
    world = world or generate_world(seed, **world_kwargs)
    rng = random.Random(f"agentic-questions:{seed}")
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(max_tries):
        if len(tasks) >= num_tasks:
            break
        kind = rng.choice(chosen)
        draw = AGENTIC_KINDS[kind](world, rng)
        if draw is None or draw[0] in seen:
            continue
        question, path, expression, answer, scorer = draw
        seen.add(question)
        tasks.append(
            Task(
                id=f"agentic-{seed}-{len(tasks)}",
                question=question,
                answer=answer,
                scorer=scorer,
                source="generated:agentic",  # type: ignore[arg-type]
                metadata={
                    "family": "agentic",
                    "kind": kind,
                    "hops": len(path),
                    "path": path,
                    "expression": expression,
                    "world_seed": world.seed,
                },
            )
        )
    if len(tasks) < num_tasks:
        raise ValueError(
            f"could only make {len(tasks)} unique agentic questions; use a bigger world"
        )
    return tasks, world
