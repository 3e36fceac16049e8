"""Add your own tool to an env: anything with a ``ToolCard`` and
``execute(**inputs) -> ToolResult``.

Here a unit converter joins the Search tool; the planner sees its card in the prompt and calls it
by name. ``execute`` never raises on bad input: it returns an error result the planner can read.

    python examples/custom_tool.py
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

import agentflow_env  # noqa: F401 - registers the ids
from agentflow_env import Task
from tools.base import ToolCard, ToolDemo, ToolResult

FACTORS = {
    ("km", "mi"): 0.621371,
    ("mi", "km"): 1.609344,
    ("kg", "lb"): 2.204623,
    ("lb", "kg"): 0.453592,
}


class UnitConverterTool:
    card = ToolCard(
        name="Unit_Converter_Tool",
        description="Converts a quantity between km/mi and kg/lb.",
        input_types={"query": "str - '<number> <unit> to <unit>', e.g. '5 km to mi'"},
        output_type="str - the converted quantity",
        demo_commands=(ToolDemo(command="5 km to mi", description="kilometres to miles"),),
        limitations=("Only km, mi, kg, lb.",),
    )

    def execute(self, query: str = "", **_: Any) -> ToolResult:
        try:
            amount, unit, _to, target = query.split()
            value = float(amount) * FACTORS[(unit, target)]
        except (ValueError, KeyError):
            return ToolResult.failure(
                f"cannot convert {query!r}: write '<number> <unit> to <unit>'"
            )
        return ToolResult(ok=True, output=f"{value:.3f} {target}")

    def close(self) -> None:
        """Nothing to release."""


def main() -> None:
    tasks = [
        Task(id="run", question="How many miles is a 10 km run?", answer="6.214", scorer="math")
    ]
    env = gym.make("AgentFlow-Math-v0", tasks=tasks, tools=[UnitConverterTool()])
    obs, _ = env.reset(options={"task_index": 0})
    assert "Unit_Converter_Tool" in obs  # the card is in the planner's prompt
    obs, _, _, _, info = env.step(
        "Sub-Goal: convert\nTool Name: Unit_Converter_Tool\nCommand: 10 km to mi"
    )
    print("tool said:", info["tool_result"])
    obs, _, _, _, info = env.step("Tool Name: Unit_Converter_Tool\nCommand: ten km please")
    print("bad input ->", info["error"])
    _, reward, terminated, _, info = env.step("Tool Name: Finish\n<answer>6.214</answer>")
    print(f"answer {info['answer']} vs {info['ground_truth']}: reward {reward}")
    env.close()


if __name__ == "__main__":
    main()
