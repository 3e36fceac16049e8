"""A procedurally generated world of fictional entities, its documents, and multi-hop questions.

The world has people, cities, companies and countries linked by eight relations (born in,
works for, spouse, headquartered in, founded by, located in, mayor, capital) plus numeric facts
(birth and founding years, populations, employees). Every entity gets one document whose title
is its name and whose every sentence repeats the name, so a BM25 query made of the name and a
relation word finds that document first (other documents mention the name only once).

Questions chain relations (``hops`` of them) from a named start entity; the answer is only
reachable by searching, because every name is invented. ``Task.metadata["path"]`` is the
solution: one ``{"query", "entity", "answer", "relation", "goal"}`` dict per hop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentflow_env.tasks.base import Task

__all__ = [
    "Entity",
    "World",
    "RELATIONS",
    "generate_world",
    "make_search_tasks",
    "hop",
    "relation_phrase",
    "chain_question",
]

_ONSETS = (
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "vr",
    "z",
    "th",
    "sh",
    "q",
)
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ai", "ia", "ou", "y")
_CODAS = ("n", "r", "l", "k", "x", "th", "m", "v", "rn", "sk", "nd")
_COMPANY_SUFFIXES = (
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
# Suffixes a stemmer may strip: two names differing only by one of these could merge in BM25.
_STEM_SUFFIXES = (
    "ation",
    "ment",
    "ness",
    "ing",
    "ous",
    "ive",
    "ize",
    "ate",
    "ent",
    "ant",
    "al",
    "er",
    "ic",
    "ed",
    "es",
    "ly",
    "s",
    "e",
    "y",
    "i",
)
_RESERVED = {
    "born",
    "works",
    "married",
    "headquartered",
    "founded",
    "located",
    "mayor",
    "capital",
    "country",
    "city",
    "company",
    "person",
    "population",
    "employees",
    "the",
    "and",
    "for",
    "was",
    "has",
    "are",
    "not",
    "can",
    "will",
    "with",
    "this",
}


@dataclass
class Entity:
    """One world entity; ``links`` maps relation -> the related entity's name, ``facts`` numbers."""

    name: str
    kind: str  # "person" | "city" | "company" | "country"
    links: dict[str, str] = field(default_factory=dict)
    facts: dict[str, int] = field(default_factory=dict)


# relation -> (subject kind, object kind, query template, question template, noun phrase, goal)
RELATIONS: dict[str, tuple[str, str, str, str, str, str]] = {
    "born_in": (
        "person",
        "city",
        "{x} born in",
        "In which city was {x} born?",
        "the city where {x} was born",
        "Find the city where {x} was born.",
    ),
    "works_for": (
        "person",
        "company",
        "{x} works for",
        "Which company does {x} work for?",
        "the company {x} works for",
        "Find the company {x} works for.",
    ),
    "spouse": (
        "person",
        "person",
        "{x} married to",
        "Who is the spouse of {x}?",
        "the spouse of {x}",
        "Find the spouse of {x}.",
    ),
    "headquartered_in": (
        "company",
        "city",
        "{x} headquartered in",
        "In which city is {x} headquartered?",
        "the city where {x} is headquartered",
        "Find the city where {x} is headquartered.",
    ),
    "founded_by": (
        "company",
        "person",
        "{x} founded by",
        "Who founded {x}?",
        "the founder of {x}",
        "Find the founder of {x}.",
    ),
    "located_in": (
        "city",
        "country",
        "{x} located in",
        "In which country is {x} located?",
        "the country where {x} is located",
        "Find the country where {x} is located.",
    ),
    "mayor": (
        "city",
        "person",
        "{x} mayor",
        "Who is the mayor of {x}?",
        "the mayor of {x}",
        "Find the mayor of {x}.",
    ),
    "capital": (
        "country",
        "city",
        "{x} capital",
        "What is the capital of {x}?",
        "the capital of {x}",
        "Find the capital of {x}.",
    ),
}


def relation_phrase(relation: str, inner: str) -> str:
    """The noun phrase for ``relation`` applied to ``inner`` (e.g. "the founder of X")."""
    return RELATIONS[relation][4].format(x=inner)


def hop(query: str, entity: str, answer: str, relation: str, goal: str) -> dict[str, str]:
    """One solution step: search ``query``; ``entity``'s document states ``answer``."""
    return {"query": query, "entity": entity, "answer": answer, "relation": relation, "goal": goal}


@dataclass
class World:
    """All entities by name (insertion order is generation order) and their documents."""

    entities: dict[str, Entity]
    seed: int = 0

    def of_kind(self, kind: str) -> list[Entity]:
        """Entities of one kind (``person``, ``city``, ``company``, ``country``), in order."""
        return [e for e in self.entities.values() if e.kind == kind]

    def follow(self, name: str, relation: str) -> str:
        """The name of the entity ``relation`` points to from entity ``name``."""
        return self.entities[name].links[relation]

    def relation_hop(self, name: str, relation: str) -> dict[str, str]:
        """The solution step that follows ``relation`` from entity ``name``."""
        _, _, query, _, _, goal = RELATIONS[relation]
        return hop(
            query.format(x=name), name, self.follow(name, relation), relation, goal.format(x=name)
        )

    def documents(self) -> list[dict[str, str]]:
        """One ``{"id", "title", "text"}`` document per entity."""
        return [
            {"id": f"doc-{i}", "title": e.name, "text": _describe(e)}
            for i, e in enumerate(self.entities.values())
        ]


def _describe(e: Entity) -> str:
    """The entity's facts as sentences that each start with (or contain) its name."""
    n, links, facts = e.name, e.links, e.facts
    if e.kind == "person":
        return (
            f"{n} is a person. {n} was born in {links['born_in']} in {facts['birth_year']}. "
            f"{n} works for {links['works_for']}. {n} is married to {links['spouse']}."
        )
    if e.kind == "city":
        return (
            f"{n} is a city. {n} is located in {links['located_in']}. The mayor of {n} is "
            f"{links['mayor']}. {n} was founded in {facts['founded']}. {n} has a population "
            f"of {facts['population']}."
        )
    if e.kind == "company":
        return (
            f"{n} is a company. {n} is headquartered in {links['headquartered_in']}. {n} was "
            f"founded by {links['founded_by']} in {facts['founded']}. {n} has "
            f"{facts['employees']} employees."
        )
    return (
        f"{n} is a country. The capital of {n} is {links['capital']}. {n} has a population "
        f"of {facts['population']}."
    )


class _Namer:
    """Unique invented words: no two share a lowercase form or a crude stem."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.stems: set[str] = set()

    @staticmethod
    def _stem(word: str) -> str:
        w = word.lower()
        for suffix in _STEM_SUFFIXES:
            if w.endswith(suffix) and len(w) - len(suffix) >= 3:
                return w[: -len(suffix)]
        return w

    def word(self, min_syllables: int = 2, max_syllables: int = 3) -> str:
        """A new capitalized word of a few syllables, distinct from every earlier one."""
        for _ in range(10_000):
            parts = [
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS)
                for _ in range(self.rng.randint(min_syllables, max_syllables))
            ]
            word = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
            stem = self._stem(word)
            if len(word) <= 10 and word.lower() not in _RESERVED and stem not in self.stems:
                self.stems.add(stem)
                return word
        raise RuntimeError("ran out of unique names")  # pragma: no cover - 10k tries


def generate_world(
    seed: int = 0,
    *,
    n_people: int = 160,
    n_cities: int = 40,
    n_companies: int = 40,
    n_countries: int = 8,
) -> World:
    """A consistent world: every link points at an existing entity of the right kind.

    Couples are disjoint pairs (so ``n_people`` must be even); mayors and founders are distinct
    people; every country has at least one city and its capital is one of them; companies are
    founded 20-50 years after their founder's birth.
    """
    if n_people < 2 or n_people % 2 or n_cities < n_countries or n_countries < 1 or n_companies < 1:
        raise ValueError(
            "need an even n_people >= 2, n_countries >= 1, n_cities >= n_countries, "
            f"n_companies >= 1 (got {n_people}, {n_cities}, {n_companies}, {n_countries})"
        )
    if n_people < n_cities + n_companies:
        raise ValueError(
            "n_people must be >= n_cities + n_companies (mayors and founders are distinct)"
        )
    rng = random.Random(seed)
    namer = _Namer(rng)
    countries = [Entity(namer.word(2, 3), "country") for _ in range(n_countries)]
    cities = [Entity(namer.word(2, 3), "city") for _ in range(n_cities)]
    companies = [
        Entity(f"{namer.word(2, 2)} {rng.choice(_COMPANY_SUFFIXES)}", "company")
        for _ in range(n_companies)
    ]
    people = [Entity(f"{namer.word(2, 2)} {namer.word(1, 2)}", "person") for _ in range(n_people)]

    for i, city in enumerate(cities):  # round robin first so every country has a city
        country = countries[i] if i < n_countries else rng.choice(countries)
        city.links["located_in"] = country.name
        city.facts["founded"] = rng.randint(1100, 1900)
        city.facts["population"] = rng.randint(5_000, 3_000_000)
    for country in countries:
        own = [c for c in cities if c.links["located_in"] == country.name]
        country.links["capital"] = rng.choice(own).name
        country.facts["population"] = sum(c.facts["population"] for c in own) + rng.randint(
            10_000, 5_000_000
        )
    order = list(range(n_people))
    rng.shuffle(order)
    for a, b in zip(order[0::2], order[1::2], strict=False):
        people[a].links["spouse"], people[b].links["spouse"] = people[b].name, people[a].name
    for person in people:
        person.links["born_in"] = rng.choice(cities).name
        person.links["works_for"] = rng.choice(companies).name
        person.facts["birth_year"] = rng.randint(1930, 2000)
    officials = rng.sample(people, n_cities + n_companies)
    for city, mayor in zip(cities, officials[:n_cities], strict=False):
        city.links["mayor"] = mayor.name
    for company, founder in zip(companies, officials[n_cities:], strict=False):
        company.links["founded_by"] = founder.name
        company.links["headquartered_in"] = rng.choice(cities).name
        company.facts["founded"] = min(founder.facts["birth_year"] + rng.randint(20, 50), 2024)
        company.facts["employees"] = rng.randint(20, 90_000)
    entities = {e.name: e for e in [*people, *cities, *companies, *countries]}
    return World(entities=entities, seed=seed)


def _random_chain(
    world: World, rng: random.Random, hops: int, names: Sequence[str]
) -> tuple[str, list[str]] | None:
    """A start entity and ``hops`` relations visiting only distinct entities (None if stuck)."""
    start = rng.choice(names)
    visited, current, relations = [start], start, []
    for _ in range(hops):
        kind = world.entities[current].kind
        options = [
            r
            for r, spec in RELATIONS.items()
            if spec[0] == kind and world.follow(current, r) not in visited
        ]
        if not options:
            return None
        relation = rng.choice(options)
        current = world.follow(current, relation)
        visited.append(current)
        relations.append(relation)
    return start, relations


def chain_question(
    world: World, start: str, relations: Sequence[str]
) -> tuple[str, list[dict[str, str]]]:
    """The question text for a relation chain from ``start`` and its solution path."""
    phrase, current, path = start, start, []
    for relation in relations[:-1]:
        path.append(world.relation_hop(current, relation))
        phrase = relation_phrase(relation, phrase)
        current = world.follow(current, relation)
    path.append(world.relation_hop(current, relations[-1]))
    return RELATIONS[relations[-1]][3].format(x=phrase), path


def _check_hops(hops: Any) -> tuple[int, int]:
    if isinstance(hops, int) and not isinstance(hops, bool):
        hops = (hops, hops)
    if (
        not isinstance(hops, (tuple, list))
        or len(hops) != 2
        or not all(isinstance(h, int) and not isinstance(h, bool) for h in hops)
        or not 1 <= hops[0] <= hops[1]
    ):
        raise ValueError(
            f"hops must be an int >= 1 or a (low, high) pair with 1 <= low <= high, got {hops!r}"
        )
    return int(hops[0]), int(hops[1])


def make_search_tasks(
    seed: int = 0,
    num_tasks: int = 500,
    *,
    hops: int | tuple[int, int] = (1, 4),
    world: World | None = None,
    max_tries: int = 100_000,
    **world_kwargs: int,
) -> tuple[list[Task], World]:
    """``num_tasks`` unique multi-hop questions over ``world`` (generated from ``seed`` if None).

    ``hops`` is a count or an inclusive ``(low, high)`` range; each task draws its count
    uniformly. ``world_kwargs`` (``n_people``, ``n_cities``, ``n_companies``, ``n_countries``)
    size the generated world.
    """
    low, high = _check_hops(hops)
    world = world or generate_world(seed, **world_kwargs)
    rng = random.Random(
        f"search-questions:{seed}"
    )  # str seeds hash with SHA-512: stable across runs
    names = list(world.entities)
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(max_tries):
        if len(tasks) >= num_tasks:
            break
        n_hops = rng.randint(low, high)
        chain = _random_chain(world, rng, n_hops, names)
        if chain is None:
            continue
        question, path = chain_question(world, *chain)
        if question in seen:
            continue
        seen.add(question)
        tasks.append(
            Task(
                id=f"search-{seed}-{len(tasks)}",
                question=question,
                answer=path[-1]["answer"],
                scorer="exact",
                source="generated:search",
                metadata={
                    "family": "search",
                    "hops": n_hops,
                    "path": path,
                    "start": chain[0],
                    "world_seed": world.seed,
                },
            )
        )
    if len(tasks) < num_tasks:
        raise ValueError(
            f"could only make {len(tasks)} unique questions with hops={hops}; "
            "use a bigger world or fewer tasks"
        )
    return tasks, world
