"""Your own task set from a JSONL file: \
one ``{"question", "answer", "scorer"?, "choices"?}`` per line.

The env scores answers with the rule named by ``scorer`` (exact, f1, math, mc, game24).

    python examples/custom_tasks.py [--jsonl my_tasks.jsonl]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import gymnasium as gym

import agentflow_env  # noqa: F401 - registers the ids

EXAMPLE = [
    {"id": "sq", "question": "What is 17 squared?", "answer": "289", "scorer": "math"},
    {
        "id": "24",
        "question": "Make 24 from 4, 7, 8, 8.",
        "answer": "(7-8/8)*4",
        "scorer": "game24",
        "metadata": {"numbers": [4, 7, 8, 8]},
    },
    {
        "id": "mc",
        "question": "Which is a prime? A. 21 B. 23 C. 25",
        "answer": "B",
        "scorer": "mc",
        "choices": ["21", "23", "25"],
    },
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jsonl", type=Path, help="a JSONL task file (default: write a small example)"
    )
    args = parser.parse_args()
    path = args.jsonl
    if path is None:
        path = Path(tempfile.mkdtemp()) / "tasks.jsonl"
        path.write_text("".join(json.dumps(t) + "\n" for t in EXAMPLE))
    env = gym.make("AgentFlow-Math-v0", tasks=str(path), max_turns=3)
    print(f"{len(env.unwrapped.tasks)} tasks from {path}")
    answers = {"sq": "print(17 ** 2)", "24": None, "mc": None}
    for index, task in enumerate(env.unwrapped.tasks):
        env.reset(options={"task_index": index})
        code = answers.get(task.id)
        if code:
            _, _, _, _, info = env.step(
                f"Sub-Goal: compute\nTool Name: Python_Coder_Tool\nCommand: {code}"
            )
            answer = re.findall(r"-?\d+(?:\.\d+)?", info["tool_result"])[0]  # the printed number
        else:
            answer = task.answer
        _, reward, _, _, info = env.step(f"Tool Name: Finish\n<answer>{answer}</answer>")
        print(f"{task.id}: answered {info['answer']!r} -> reward {reward}")
    env.close()


if __name__ == "__main__":
    main()
