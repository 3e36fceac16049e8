"""The planner's text formats, each written and read in one place.

- :mod:`~agentflow_env.format.observation`: the observation layout (header in two styles, step
  headers, step blocks) and its readers (:func:`split_observation`, :func:`current_step`,
  :func:`last_result`), plus :data:`PLANNER_STOP`; and the same episode as chat messages
  (:func:`planner_messages`, :func:`action_message`, :func:`result_message`), built from the
  same pieces;
- :mod:`~agentflow_env.format.action`: the action format's writers (:func:`tool_action`,
  :func:`finish_action`, :func:`write_action`) and readers (:func:`parse_action`,
  :func:`read_action`, :func:`last_answer`);
- :mod:`~agentflow_env.format.paper`: the reference's planner layout (``prompt_style="paper"``),
  rebuilt from memory each turn: :func:`paper_prompt`, :func:`read_paper_prompt`;
- :mod:`~agentflow_env.format.command`: the executor's ``execution = tool.execute(...)`` blocks,
  evaluated as literals (:func:`read_calls`, :func:`extract_command`, :func:`merge_results`);
- :mod:`~agentflow_env.format.labels`: the labels and markers both are built from.

Every other module imports these; none spells the formats out itself. The text search tools print
has its own owner, :mod:`tools.search.format`.
"""

from agentflow_env.format.action import (
    FINISH,
    ActionFields,
    PlannerAction,
    finish_action,
    last_answer,
    parse_action,
    read_action,
    strip_code_fence,
    tool_action,
    write_action,
)
from agentflow_env.format.command import (
    CommandError,
    ToolCall,
    extract_command,
    merge_results,
    read_calls,
)
from agentflow_env.format.labels import OMITTED, PLANNER_STOP
from agentflow_env.format.observation import (
    ACTION_FORMAT,
    ChatMessage,
    ObservationView,
    PromptStyle,
    StepView,
    action_message,
    current_step,
    example_step,
    last_result,
    omitted_step,
    planner_header,
    planner_messages,
    prompt_message,
    result_message,
    split_observation,
    step_block,
    step_header,
)
from agentflow_env.format.paper import PaperView, paper_prompt, read_paper_prompt, tools_lines

__all__ = [
    "ACTION_FORMAT",
    "FINISH",
    "OMITTED",
    "PLANNER_STOP",
    "ActionFields",
    "ChatMessage",
    "CommandError",
    "ObservationView",
    "PaperView",
    "PlannerAction",
    "PromptStyle",
    "StepView",
    "ToolCall",
    "action_message",
    "current_step",
    "example_step",
    "extract_command",
    "finish_action",
    "last_answer",
    "last_result",
    "merge_results",
    "omitted_step",
    "paper_prompt",
    "parse_action",
    "planner_header",
    "planner_messages",
    "prompt_message",
    "read_action",
    "read_calls",
    "read_paper_prompt",
    "result_message",
    "split_observation",
    "step_block",
    "step_header",
    "strip_code_fence",
    "tool_action",
    "tools_lines",
    "write_action",
]
