"""The words the planner's two text formats are made of, in one place.

:mod:`~agentflow_env.format.action` (what the planner writes) and
:mod:`~agentflow_env.format.observation` (what the planner reads) both build their text, their
regexes and their readers from these constants, so a label is renamed by one edit here. Nothing
outside :mod:`agentflow_env.format` should spell these strings out.
"""

from __future__ import annotations

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "FIELD_LABELS",
    "FINISH",
    "OMITTED",
    "PLANNER_STOP",
    "RESULT_LABEL",
    "STEP_LABEL",
]

FIELD_LABELS: dict[str, str] = {
    "justification": "Justification",
    "context": "Context",
    "sub_goal": "Sub-Goal",
    "tool_name": "Tool Name",
    "command": "Command",
}
"""field -> label, in the order the writers put them (the parser accepts any order)"""
FINISH = "Finish"
"""the tool name that ends the episode"""
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
STEP_LABEL = "### Step"
"""a step header is this, a space, the 1-based step number and a newline"""
RESULT_LABEL = "Result:"
"""starts the line after an action, where the env writes the step's outcome"""
PLANNER_STOP: tuple[str, ...] = (
    "\n" + RESULT_LABEL,
    "\n" + STEP_LABEL,
    "\n" + FIELD_LABELS["justification"] + ":",
)
"""where a planner's generation must stop: text after these would be its own invented tool output
or a second step (a small instruct model writes step after step until its budget runs out; an
action opens with its one justification). The action writers never produce them."""
OMITTED = "[omitted: prompt length limit]"
"""stands for a step dropped from an over-long planner prompt (its action and result, or its
entry in the paper layout's Previous Steps): the oldest steps go first, never the query"""
