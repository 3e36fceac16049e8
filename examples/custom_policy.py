"""Drive ``AgentFlow-Search-v0`` with your own policy: here a rule-based one that reads results.

The policy searches the question's first name-like phrase, then keeps following the entity it
finds, and answers when it runs out of turns. It shows the loop every policy (an LLM, a learner,
a script) runs: read the observation text, write an action text.

    python examples/custom_policy.py --episodes 20
"""

from __future__ import annotations

import argparse
import re

import gymnasium as gym

import agentflow_env  # noqa: F401 - registers the ids

NAME = re.compile(r"\b([A-Z][a-z]+(?: [A-Z][a-z]+)+)\b")


def my_policy(observation: str, turn: int, max_turns: int) -> str:
    """A few regexes standing in for a model: the observation is plain text."""
    question = observation.split("Query: ", 1)[1].split("\n", 1)[0]
    results = re.findall(r"Result: (.*)", observation)
    if turn == max_turns or (results and turn > 1 and not NAME.search(results[-1])):
        guess = (
            NAME.findall(results[-1])[-1] if results and NAME.findall(results[-1]) else "unknown"
        )
        return f"Tool Name: Finish\n<answer>{guess}</answer>"
    names = NAME.findall(question if not results else results[-1])
    target = names[0] if names else question
    return f"Sub-Goal: learn about {target}\nTool Name: Search_Tool\nCommand: {target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    max_turns = 3
    env = gym.make("AgentFlow-Search-v0", max_turns=max_turns, task_kwargs={"hops": (1, 2)})
    total = 0.0
    for episode in range(args.episodes):
        obs, info = env.reset(seed=args.seed + episode)
        for turn in range(1, max_turns + 1):
            obs, reward, terminated, truncated, info = env.step(my_policy(obs, turn, max_turns))
            if terminated or truncated:
                total += reward
                break
    env.close()
    print(
        f"success {total / args.episodes:.2f} over {args.episodes} episodes "
        f"(last answer {info['answer']!r}, truth {info['ground_truth']!r})"
    )


if __name__ == "__main__":
    main()
