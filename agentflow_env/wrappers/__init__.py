"""Wrappers: AgentFlow for non-text RL algorithms (stable-baselines3) and trajectory recording.

A typical stack for stable-baselines3::

    import gymnasium as gym
    import agentflow_env
    from agentflow_env.wrappers import (CandidateActionWrapper, ExtractiveProposer,
                                        HashedNGramFeaturizer, TextFeatureWrapper)

    env = gym.make("AgentFlow-Search-v0", prompt_style="compact", max_turns=3,
                   task_kwargs={"hops": (1, 2)})
    env = CandidateActionWrapper(env, ExtractiveProposer(), k=8)      # Discrete(8) actions
    env = TextFeatureWrapper(env, HashedNGramFeaturizer(dim=64))      # Box observations

    from stable_baselines3 import PPO
    from agentflow_env.wrappers.sb3 import CandidatePolicy, candidate_policy_kwargs
    PPO(CandidatePolicy, env, policy_kwargs=candidate_policy_kwargs(env)).learn(30_000)

(``examples/sb3_ppo.py`` is the complete, measured version.) Put :class:`RecordTrajectory`
directly around the text env (or anywhere above it) to write ``EpisodeRecord`` JSONL for
``python -m agentflow_env.view``. :mod:`agentflow_env.wrappers.sb3` needs stable-baselines3 and is
not imported here.
"""

from agentflow_env.format import ObservationView, StepView, finish_action, split_observation
from agentflow_env.wrappers._text import extract_names
from agentflow_env.wrappers.candidates import (
    CandidateActionWrapper,
    EngineProposer,
    ExtractiveProposer,
    PlannerProposer,
    Proposer,
    ProposerError,
    oracle_mix_proposer,
    search_action,
)
from agentflow_env.wrappers.features import (
    RELATION_NAMES,
    EmbeddingFeaturizer,
    Featurizer,
    HashedNGramFeaturizer,
    TextFeatureWrapper,
    candidate_relations,
)
from agentflow_env.wrappers.record import RecordTrajectory

__all__ = [
    "RELATION_NAMES",
    "CandidateActionWrapper",
    "EmbeddingFeaturizer",
    "EngineProposer",
    "ExtractiveProposer",
    "Featurizer",
    "HashedNGramFeaturizer",
    "ObservationView",
    "PlannerProposer",
    "Proposer",
    "ProposerError",
    "RecordTrajectory",
    "StepView",
    "TextFeatureWrapper",
    "candidate_relations",
    "extract_names",
    "finish_action",
    "oracle_mix_proposer",
    "search_action",
    "split_observation",
]
