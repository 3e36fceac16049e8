"""Wrappers for non-text RL algorithms: candidate actions, text features, trajectory recording."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from agentflow_env import AgentFlowEnv, Task
from agentflow_env.llm.base import GenerationRequest, GenerationResult
from agentflow_env.trajectory import read_jsonl
from agentflow_env.wrappers import (
    RELATION_NAMES,
    CandidateActionWrapper,
    EmbeddingFeaturizer,
    EngineProposer,
    ExtractiveProposer,
    HashedNGramFeaturizer,
    PlannerProposer,
    ProposerError,
    RecordTrajectory,
    TextFeatureWrapper,
    candidate_relations,
    extract_names,
    finish_action,
    oracle_mix_proposer,
    search_action,
    split_observation,
)
from tests.agentflow_env.helpers import LookupTool, lookup_action, lookup_env_kwargs
from tests.agentflow_env.helpers import finish_action as lookup_finish
from tools.search import SearchTool

# A small people world: one passage per person, questions about birthplace and employer.
FIRST = ["Alia", "Boren", "Cass", "Dorin", "Elva", "Fenn"]
LAST = ["Varn", "Moss", "Tull"]
CITIES = ["Tolmere", "Brackwater", "Osgard", "Lintel", "Marrow"]
COMPANIES = ["Kestrel Dynamics", "Orrin Mills", "Pelt Works", "Vantor Labs"]


def people_world() -> tuple[list[dict[str, str]], list[Task]]:
    docs, tasks = [], []
    for i, first in enumerate(FIRST):
        for j, last in enumerate(LAST):
            name = f"{first} {last}"
            city, company = CITIES[(i + 2 * j) % 5], COMPANIES[(i + j) % 4]
            docs.append(
                {"title": name, "text": f"{name} was born in {city}. {name} works at {company}."}
            )
            tasks.append(Task(id=f"born-{i}{j}", question=f"Where was {name} born?", answer=city))
            tasks.append(
                Task(
                    id=f"work-{i}{j}",
                    question=f"Which company does {name} work for?",
                    answer=company,
                )
            )
    return docs, tasks


def exact(prediction: str, task: Task) -> float:
    return float(prediction.strip().lower() == task.answer.lower())


@pytest.fixture(scope="module")
def world() -> tuple[list[dict[str, str]], list[Task]]:
    return people_world()


def make_env(world: Any, **kw: Any) -> AgentFlowEnv:
    docs, tasks = world
    kwargs: dict[str, Any] = {
        "tasks": tasks,
        "tools": [SearchTool(docs)],
        "scorer": exact,
        "max_turns": 3,
        "prompt_style": "compact",
    }
    kwargs.update(kw)
    return AgentFlowEnv("search", **kwargs)


def stack(world: Any, k: int = 4, dim: int = 32, **kw: Any) -> TextFeatureWrapper:
    return TextFeatureWrapper(
        CandidateActionWrapper(make_env(world, **kw), ExtractiveProposer(), k=k),
        HashedNGramFeaturizer(dim=dim),
    )


def run_checker(fn: Any, *args: Any, **kwargs: Any) -> list[str]:
    """Run an env checker; return its warnings, minus the expected 'env is a wrapper' one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [
        str(w.message)
        for w in caught
        if "different from the unwrapped version" not in str(w.message)
    ]


# ------------------------------------------------------------------------- observation parsing
@pytest.mark.parametrize("style", ["compact", "full"])
def test_split_observation_reads_question_tools_and_steps(world: Any, style: str) -> None:
    env = make_env(world, prompt_style=style)
    obs, _ = env.reset(options={"task_index": 0})
    view = split_observation(obs)
    assert view.question == "Where was Alia Varn born?" and view.tool_names == ["Search_Tool"]
    assert view.steps == [] and view.turn == 1 and view.last_result == ""
    obs, *_ = env.step(search_action("Search_Tool", "Alia Varn"))
    view = split_observation(obs)
    assert view.turn == 2 and "Command: Alia Varn" in view.steps[0].action
    assert view.last_result.startswith("Doc 1 (Title: Alia Varn) Alia Varn was born in Tolmere.")
    env.close()


def test_split_observation_ignores_out_of_order_step_headers_in_results() -> None:
    obs = (
        "Query: q?\nTools: A, Finish\n\n### Step 1\nTool Name: A\nCommand: x\n"
        "Result: text\n### Step 7\nmore text\n\n### Step 2\n"
    )
    view = split_observation(obs)
    assert len(view.steps) == 1 and view.steps[0].result == "text\n### Step 7\nmore text"
    assert split_observation("no layout at all").question == ""


def test_extract_names_keeps_order_drops_function_words_and_duplicates() -> None:
    text = (
        "Doc 1 (Title: Alia Varn) The Alia Varn was born in Tolmere in 1987. "
        "She works at Pelt Works."
    )
    assert extract_names(text) == ["Alia Varn", "Tolmere", "1987", "Pelt Works"]
    assert extract_names("In Paris, The Hague and the Bank of England.") == [
        "Paris",
        "Hague",
        "Bank of England",
    ]


# ---------------------------------------------------------------------------- candidate wrapper
def test_candidate_wrapper_spaces_and_the_chosen_text_reaches_the_env(world: Any) -> None:
    env = CandidateActionWrapper(make_env(world), ExtractiveProposer(), k=16)  # room for every move
    assert env.action_space == spaces.Discrete(16)
    obs, info = env.reset(seed=0, options={"task_index": 0})
    assert env.observation_space.contains(obs)
    assert list(obs["candidates"]) == info["candidates"] == env.candidates
    search = next(
        i for i, c in enumerate(info["candidates"]) if "Command: Where was Alia Varn born?" in c
    )
    obs, reward, terminated, truncated, info = env.step(np.int64(search))
    assert info["chosen"] == search and info["tool_input"] == "Where was Alia Varn born?"
    assert "Alia Varn was born in Tolmere" in info["tool_result"] and not (terminated or truncated)
    finish = next(i for i, c in enumerate(info["candidates"]) if "<answer>Tolmere</answer>" in c)
    obs, reward, terminated, truncated, info = env.step(finish)
    assert terminated and reward == 1.0 and info["answer"] == "Tolmere"
    assert obs["candidates"] == ("",) * 16, "nothing to choose after the end"
    env.close()


def test_candidate_wrapper_rejects_bad_actions_and_arguments(world: Any) -> None:
    env = CandidateActionWrapper(make_env(world), ExtractiveProposer(), k=3)
    env.reset(seed=1)
    for bad in (3, -1, 1.5, np.array([0, 1]), "0"):
        with pytest.raises(gym.error.InvalidAction):
            env.step(bad)
    env.step(np.array(0))  # a 0-d integer array is fine
    with pytest.raises(ValueError, match="k must be"):
        CandidateActionWrapper(make_env(world), ExtractiveProposer(), k=1)
    with pytest.raises(TypeError, match="callable"):
        CandidateActionWrapper(make_env(world), "not a proposer", k=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text env"):
        CandidateActionWrapper(gym.make("CartPole-v1"), ExtractiveProposer(), k=2)


@pytest.mark.parametrize(
    "proposed, message",
    [
        ([], "no candidates"),
        ("one string", "list of strings"),
        ([1, 2], "non-string"),
        (None, "list of strings"),
    ],
)
def test_bad_proposer_output_is_a_clear_error(world: Any, proposed: Any, message: str) -> None:
    env = CandidateActionWrapper(make_env(world), lambda obs, k, rng: proposed, k=2)
    with pytest.raises(ProposerError, match=message):
        env.reset(seed=0)


def test_fewer_candidates_are_repeated_and_reset_hook_gets_the_task(world: Any) -> None:
    class OneShot:
        def __init__(self) -> None:
            self.tasks: list[Task] = []

        def reset(self, task: Task, rng: np.random.Generator) -> None:
            self.tasks.append(task)

        def __call__(self, obs: str, k: int, rng: np.random.Generator) -> list[str]:
            return [finish_action("x"), finish_action("y")]

    proposer = OneShot()
    env = CandidateActionWrapper(make_env(world), proposer, k=5)
    obs, _ = env.reset(seed=0, options={"task_index": 3})
    assert [c.split("<answer>")[1][0] for c in obs["candidates"]] == ["x", "y", "x", "y", "x"]
    assert proposer.tasks == [env.unwrapped.tasks[3]]


def test_seeded_reset_reproduces_candidates_and_seeds_differ(world: Any) -> None:
    def rollout(seed: int) -> list[tuple[str, ...]]:
        env = CandidateActionWrapper(make_env(world), ExtractiveProposer(decay=1.0), k=3)
        obs, _ = env.reset(seed=seed)
        seen = [obs["candidates"]]
        for action in (0, 1, 2):
            obs, _, terminated, truncated, _ = env.step(action)
            seen.append(obs["candidates"])
            if terminated or truncated:
                obs, _ = env.reset()
                seen.append(obs["candidates"])
        return seen

    assert rollout(5) == rollout(5)
    assert any(rollout(5) != rollout(s) for s in (6, 7, 8))


def test_extractive_proposer_moves_follow_the_observation(world: Any) -> None:
    env = make_env(world)
    obs, _ = env.reset(options={"task_index": 1})  # Which company does Alia Varn work for?
    rng = np.random.default_rng(0)
    first = ExtractiveProposer()(obs, 6, rng)
    assert search_action("Search_Tool", "Which company does Alia Varn work for?") in first
    assert finish_action("Alia Varn") in first, "before any result, names come from the question"
    obs, *_ = env.step(search_action("Search_Tool", "Alia Varn"))
    later = ExtractiveProposer(max_names=8, decay=1.0)(obs, 12, rng)
    assert finish_action(COMPANIES[0]) in later and finish_action("Tolmere") in later
    assert search_action("Search_Tool", "Alia Varn") not in later, "no repeated search"
    assert len(set(later)) == len(later)
    with pytest.raises(ValueError):
        ExtractiveProposer(decay=0)


def test_planner_proposer_mixes_real_scripted_planners_reproducibly() -> None:
    from agentflow_env.planners import OraclePlanner, RandomToolPlanner

    def episode(seed: int) -> tuple[list[tuple[str, ...]], float]:
        env = CandidateActionWrapper(
            AgentFlowEnv(
                "search",
                num_tasks=20,
                task_kwargs={"hops": (1, 2)},
                prompt_style="compact",
                max_turns=3,
            ),
            oracle_mix_proposer(),
            k=4,
        )
        obs, _ = env.reset(seed=seed)
        oracle = OraclePlanner(verbose=False)
        oracle.reset(env.unwrapped.task)
        seen, done, reward = [], False, 0.0
        while not done:
            seen.append(obs["candidates"])
            right = oracle.act(env.unwrapped.flow.observation(env.unwrapped._episode))
            # The oracle's action is on offer with high probability; take it when it is.
            index = obs["candidates"].index(right) if right in obs["candidates"] else 0
            obs, reward, terminated, truncated, _ = env.step(index)
            done = terminated or truncated
        env.close()
        return seen, reward

    runs = [episode(s) for s in (0, 0, 1, 2, 3)]
    assert runs[0] == runs[1], "a seeded reset replays the same candidates"
    assert sum(r for _, r in runs[1:]) >= 2, "following the oracle's candidate solves most episodes"
    assert any(len(set(c)) > 1 for seen, _ in runs for c in seen), "distractors are offered too"
    with pytest.raises(ValueError):
        PlannerProposer([RandomToolPlanner()], weights=[-1])
    with pytest.raises(TypeError, match="act"):
        PlannerProposer([object()])


class TemplateEngine:
    """A real (if simple) Engine: seeded sampling of planner steps from the prompt's question."""

    def __init__(self, fail_every: int = 0) -> None:
        self.fail_every = fail_every
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Any) -> list[GenerationResult]:
        out = []
        for n, request in enumerate(requests):
            self.requests.append(request)
            if self.fail_every and n % self.fail_every == 0:
                out.append(GenerationResult(text="", error="server said no"))
                continue
            question = split_observation(request.messages[-1].content).question
            rng = np.random.default_rng(request.sampling.seed)
            words = question.rstrip("?").split()
            picked = " ".join(words[int(rng.integers(len(words))) :])
            out.append(GenerationResult(text=search_action("Search_Tool", picked)))
        return out

    def close(self) -> None:
        pass


def test_engine_proposer_sends_seeded_requests_and_drops_failures(world: Any) -> None:
    engine = TemplateEngine()
    env = CandidateActionWrapper(
        make_env(world), EngineProposer(engine, temperature=0.7, max_tokens=64), k=3
    )
    obs, _ = env.reset(seed=11, options={"task_index": 0})
    assert len(engine.requests) == 3 and all(r.sampling.temperature == 0.7 for r in engine.requests)
    assert len({r.sampling.seed for r in engine.requests}) == 3
    assert all("Tool Name: Search_Tool" in c for c in obs["candidates"])
    failing = CandidateActionWrapper(
        make_env(world), EngineProposer(TemplateEngine(fail_every=1)), k=2
    )
    with pytest.raises(ProposerError, match="server said no"):
        failing.reset(seed=0)
    partial = CandidateActionWrapper(
        make_env(world), EngineProposer(TemplateEngine(fail_every=2)), k=4
    )
    obs, _ = partial.reset(seed=0)
    assert all(c.startswith("Justification") for c in obs["candidates"])
    with pytest.raises(TypeError):
        EngineProposer(object())


# ---------------------------------------------------------------------------------- featurizers
def test_hashed_ngrams_are_unit_norm_deterministic_and_process_independent() -> None:
    feat = HashedNGramFeaturizer(dim=64, n=2)
    vectors = feat(["Where was Alia Varn born?", "", "where WAS alia varn born"])
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0) and not vectors[1].any()
    assert np.array_equal(vectors[0], vectors[2]), "tokens are lowercased alphanumerics"
    assert not np.array_equal(feat(["Alia born"])[0], feat(["born Alia"])[0]), "bigrams keep order"
    code = (
        "from agentflow_env.wrappers import HashedNGramFeaturizer;"
        "print(HashedNGramFeaturizer(dim=64, n=2)(['Where was Alia Varn born?'])[0].tolist())"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outs[0] == outs[1] and np.allclose(json.loads(outs[0]), vectors[0])
    for bad in ({"dim": 4}, {"n": 0}, {"dim": 16.0}):
        with pytest.raises(ValueError):
            HashedNGramFeaturizer(**bad)
    with pytest.raises(TypeError):
        feat("one string")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny = pytest.importorskip("learners.tiny", reason="learners.tiny builds the test model")
    texts = [f"{t.question} {t.answer}" for t in people_world()[1]] * 3
    tok = tiny.train_tiny_tokenizer(texts, vocab_size=300)
    model = tiny.build_tiny_model(
        tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0
    )
    return tiny.save_tiny(model, tok, tmp_path_factory.mktemp("encoder"))


def test_embedding_featurizer_mean_pools_a_local_model(tiny_encoder: Path) -> None:
    feat = EmbeddingFeaturizer(tiny_encoder, max_length=64, batch_size=2)
    assert feat.dim == 32
    texts = ["Where was Alia Varn born?", "Pelt Works", "a much longer text " * 40]
    vectors = feat(texts)
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(feat(texts[:1])[0], vectors[0], atol=1e-5), (
        "padding does not change a text's vector"
    )
    assert not np.allclose(vectors[0], vectors[1])
    env = TextFeatureWrapper(
        CandidateActionWrapper(make_env(people_world()), ExtractiveProposer(), k=2), feat
    )
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    with pytest.raises(FileNotFoundError):
        EmbeddingFeaturizer(tiny_encoder / "missing")


# ------------------------------------------------------------------------------ feature wrapper
def test_feature_layout_and_relations_single_out_the_answer(world: Any) -> None:
    env = stack(world, k=4, dim=16)
    expected = 16 + 16 + 13 + 4 * (16 + 4 + len(RELATION_NAMES))
    assert env.observation_space.shape == (expected,) and env.layout["candidate_3"].stop == expected
    base = env.env
    base.reset(seed=0, options={"task_index": 0})
    text, *_ = base.unwrapped.step(search_action("Search_Tool", "Where was Alia Varn born?"))
    view = split_observation(text)
    rel = {
        c: dict(zip(RELATION_NAMES, candidate_relations(view, finish_action(c))[4:], strict=False))
        for c in ("Tolmere", "Alia Varn", COMPANIES[0], "Brackwater")
    }
    assert rel["Tolmere"]["context_overlap"] == 1.0 and rel["Tolmere"]["arg_in_question"] == 0.0
    assert rel["Alia Varn"]["arg_in_question"] == 1.0
    assert rel[COMPANIES[0]]["context_overlap"] < 1.0
    assert all(r["finish"] == 1.0 and r["valid"] == 1.0 for r in rel.values())
    search = candidate_relations(view, search_action("Search_Tool", "Where was Alia Varn born?"))
    assert (
        search[0] == 1.0
        and dict(zip(RELATION_NAMES, search[4:], strict=False))["arg_repeated"] == 1.0
    )
    assert not candidate_relations(view, "garbage without fields").any()
    vec = env.observation({"text": text, "candidates": (finish_action("Tolmere"), "", "", "")})
    assert env.observation_space.contains(vec)
    progress = vec[env.layout["progress"]]
    assert progress[1] == 1.0 and progress[0] == 0.0, "turn 2 one-hot"
    assert progress[-3] == progress[-2] == progress[-1] == 1.0, (
        "alia, varn, born: all in the top passage"
    )
    assert np.array_equal(
        vec[env.layout["question"]], env.featurizer(["Where was Alia Varn born?"])[0]
    )


def test_feature_wrapper_over_a_plain_text_env_and_bad_inputs(world: Any) -> None:
    env = TextFeatureWrapper(make_env(world), HashedNGramFeaturizer(dim=8))
    obs, _ = env.reset(seed=0)
    assert env.k == 0 and obs.shape == (8 + 8 + 13,) and env.observation_space.contains(obs)
    with pytest.raises(TypeError, match="Text observation"):
        TextFeatureWrapper(gym.make("CartPole-v1"), HashedNGramFeaturizer(dim=8))
    with pytest.raises(TypeError, match="featurizer"):
        TextFeatureWrapper(make_env(world), lambda texts: texts)  # type: ignore[arg-type]

    class WrongShape:
        dim = 8

        def __call__(self, texts: Any) -> np.ndarray:
            return np.zeros((1, 3), dtype=np.float32)

    with pytest.raises(ValueError, match="shape"):
        TextFeatureWrapper(make_env(world), WrongShape()).reset(seed=0)


def test_gymnasium_and_sb3_checkers_pass(world: Any) -> None:
    assert (
        run_checker(
            check_env,
            CandidateActionWrapper(make_env(world), ExtractiveProposer(), k=4),
            skip_render_check=True,
        )
        == []
    )
    assert run_checker(check_env, stack(world), skip_render_check=True) == []
    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    assert run_checker(sb3_checker.check_env, stack(world), warn=True) == []


def test_features_carry_enough_signal_for_a_fixed_linear_rule(world: Any) -> None:
    """A hand-written scorer over the relation features beats uniform choice: PPO has something
    to learn."""

    def success(choose: Any, episodes: int = 40) -> float:
        env = stack(world, k=4)
        wins = 0.0
        obs, _ = env.reset(seed=0)
        for _ in range(episodes):
            done = False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(choose(env, obs))
                done = terminated or truncated
            wins += reward
            obs, _ = env.reset()
        return wins / episodes

    rng = np.random.default_rng(0)

    def rule(env: TextFeatureWrapper, obs: np.ndarray) -> int:
        scores = []
        for i in range(env.k):
            r = dict(
                zip(RELATION_NAMES, obs[env.layout[f"candidate_{i}"]][env.dim + 4 :], strict=False)
            )
            turn1 = obs[env.layout["progress"]][0] == 1.0
            scores.append(
                r["question_recall"]
                if turn1
                else r["finish"] * (r["context_overlap"] - r["arg_in_question"])
            )
        return int(np.argmax(scores))

    random_rate = success(lambda env, obs: int(rng.integers(env.k)))
    rule_rate = success(rule)
    assert rule_rate >= random_rate + 0.3, (rule_rate, random_rate)


# --------------------------------------------------------------------------------- recording
def test_record_trajectory_writes_finished_episodes(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "traj.jsonl"
    env = RecordTrajectory(
        AgentFlowEnv(**lookup_env_kwargs()), path, metadata={"policy": "scripted"}
    )
    env.reset(seed=0, options={"task_index": 2})
    env.step(lookup_action("item 2"))
    env.step(lookup_finish("code-2"))
    env.reset(options={"task_index": 1})
    env.step(lookup_action("item 1"))
    env.reset(options={"task_index": 4})  # drops the unfinished episode
    env.step(lookup_finish("wrong"))
    env.reset()
    env.step(lookup_action("unfinished"))
    env.close()
    records = list(read_jsonl(path))
    assert env.episodes_written == 2 and [r.task_id for r in records] == ["t2", "t4"]
    first = records[0]
    assert (
        first.score == 1.0
        and first.answer == "code-2"
        and first.terminated
        and first.num_turns == 2
    )
    assert first.turns[0].tool_name == "Lookup_Tool" and first.turns[0].tool_result == "code-2"
    assert first.turns[0].sub_goal == "look up item 2" and first.turns[1].reward == 1.0
    assert first.metadata == {"policy": "scripted", "episode_index": 0, "seed": 0}
    assert records[1].score == 0.0 and records[1].episode_id == "ep2"
    with pytest.raises(gym.error.ClosedEnvironmentError):
        env.step(lookup_action("item 1"))


def test_record_under_candidates_stores_action_text_and_choices(world: Any, tmp_path: Path) -> None:
    path = tmp_path / "traj.jsonl"
    env = CandidateActionWrapper(RecordTrajectory(make_env(world), path), ExtractiveProposer(), k=3)
    outer = RecordTrajectory(env, tmp_path / "outer.jsonl")
    outer.reset(seed=2)
    done, choices = False, []
    while not done:
        _, _, terminated, truncated, info = outer.step(1)
        choices.append(info["action_text"])
        done = terminated or truncated
    outer.close()
    (inner,) = read_jsonl(path)
    (top,) = read_jsonl(tmp_path / "outer.jsonl")
    assert [t.action for t in inner.turns] == [t.action for t in top.turns] == choices
    assert top.metadata["chosen"] == [1] * len(choices)
    with pytest.raises(TypeError, match="task"):
        RecordTrajectory(gym.make("CartPole-v1"), tmp_path / "x.jsonl")


def test_lookup_tool_env_with_wrappers_end_to_end() -> None:
    """The wrappers work with any tool set (here a dictionary lookup tool)."""
    env = CandidateActionWrapper(
        AgentFlowEnv(**lookup_env_kwargs()), ExtractiveProposer(tool_name="Lookup_Tool"), k=2
    )
    obs, _ = env.reset(seed=0, options={"task_index": 0})
    assert any("Tool Name: Lookup_Tool" in c for c in obs["candidates"])
    assert isinstance(env.unwrapped.flow.tools["Lookup_Tool"], LookupTool)


# ------------------------------------------------------------------------- SB3 candidate policy
def test_candidate_policy_is_permutation_equivariant_and_trains(world: Any) -> None:
    pytest.importorskip("stable_baselines3")
    import torch
    from stable_baselines3 import PPO

    from agentflow_env.wrappers.sb3 import CandidatePolicy, candidate_policy_kwargs

    env = stack(world, k=4, dim=16)
    model = PPO(
        CandidatePolicy,
        env,
        policy_kwargs=candidate_policy_kwargs(env),
        n_steps=64,
        batch_size=32,
        n_epochs=2,
        seed=0,
        device="cpu",
    )
    obs, _ = env.reset(seed=0)
    blocks = [env.layout[f"candidate_{i}"] for i in range(4)]
    order = [2, 0, 3, 1]
    permuted = obs.copy()
    for dst, src in enumerate(order):
        permuted[blocks[dst]] = obs[blocks[src]]
    with torch.no_grad():
        probs = model.policy.get_distribution(
            torch.as_tensor(np.stack([obs, permuted]))
        ).distribution.probs.numpy()
    assert np.allclose(probs[1], probs[0][order], atol=1e-6), (
        "reordering candidates reorders probabilities"
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(128)
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=False)
    )
    with pytest.raises(TypeError, match="TextFeatureWrapper"):
        candidate_policy_kwargs(make_env(world))
    with pytest.raises(ValueError, match="CandidateActionWrapper"):
        candidate_policy_kwargs(TextFeatureWrapper(make_env(world), HashedNGramFeaturizer(dim=8)))
