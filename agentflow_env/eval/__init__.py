"""Benchmark a planner as a policy: ``python -m agentflow_env.evaluate``.

Runs ``--episodes`` episodes (the first N tasks in file order, or a seeded random subset with
``--shuffle``) on an :class:`~agentflow_env.vector.AgentFlowVectorEnv` of ``--concurrency``
sub-envs; each step calls the planner once on the batch of live observations (one ``generate``
call for an engine planner). Prints a table; writes ``--out`` JSON and ``--trajectories`` JSONL
(:mod:`agentflow_env.trajectory` records, streamed as episodes finish)::

    python -m agentflow_env.evaluate --data ../shared/benchmarks/agentflow/aime24.json \\
        --planner scripted:oracle --episodes 10
    python -m agentflow_env.evaluate --data bamboogle.json --corpus wiki.jsonl --judge SPEC \\
        --planner openai:Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1 \\
        --executor llm --verifier llm --generator llm --module-engine openai:MODEL@URL

Protocols (``--protocol``, :mod:`agentflow_env.eval.protocol`) are named presets of the
settings left unset; an explicit flag or keyword always wins. ``rules`` (default): the settings
below. ``paper``: the reference's evaluation: the released planner
``vllm:AgentFlow/agentflow-planner-7b`` through its chat template, LLM executor, verifier,
generator and query analysis on ``--module-engine`` (default a local OpenAI-compatible server of
Qwen2.5-7B-Instruct at ``http://127.0.0.1:8001/v1``), the reference's four tools (toolset
``paper``; the search tools need ``--corpus`` or a web backend), ``prompt_style="paper"``, 10
turns, 300 s per episode, temperature 0.0, 2048 tokens, and an LLM judge (``--judge``, default
the module engine) with JSON verdicts on every set, two-stage (extract, then verify) for tasks
with choices (GPQA, MedQA). ``--dry-run`` prints the resolved settings (each marked ``protocol``
or ``explicit``) and what is unavailable here (weights, vLLM, a GPU, a server), building
nothing; exit 0 when the configuration is valid, 2 when not::

    python -m agentflow_env.evaluate --protocol paper --dry-run
    python -m agentflow_env.evaluate --protocol paper --data gpqa.json \\
        --judge hf:smollm2-135m-instruct

Planners: ``scripted:NAME`` (``oracle``, ``random-tool``, ``search-then-answer``) or an engine
spec (``openai:MODEL@URL``, ``hf:PATH``, ``vllm:NAME``, ``python:module:function``).
``--temperature``/``--max-tokens`` are the planner's sampling settings; request seeds derive from
``--seed``, the episode index and the turn, so results do not depend on ``--concurrency``.

Tools for ``--data`` (unless ``--tools`` is given) follow the kind of the file's tasks: multiple
choice -> science, math / Game of 24 -> math, GAIA -> agentic, other free-form answers -> search,
each with its env family's tools (:data:`agentflow_env.env.FAMILY_TOOLS`). Search_Tool needs
``--corpus PATH.jsonl``; without one it is left out and the table says so. ``--module-engine``
adds ``Base_Generator_Tool``. Without ``--data`` the env's generated tasks and corpus are used.

``--env-kwargs JSON`` sets env arguments without an option of their own (:class:`EnvOverrides`),
e.g. the settings a planner was trained with: ``'{"prompt_style": "compact", "tool_kwargs":
{"Search_Tool": {"top_k": 1}}}'``. They are merged last (``tool_kwargs`` per tool); keys with an
option of their own and unknown keys are rejected by name.

Accuracy: mean score over scored episodes, 95% Wilson interval. An episode whose outcome was
lost to infrastructure (an engine failing after its retries, a tool backend or sandbox that could
not run, a judge that failed: :mod:`agentflow_env.infra`) is ``errored``, never a 0; the report
counts errored episodes by kind next to the accuracy over scored ones and the accuracy with
errored ones counted wrong (:mod:`agentflow_env.eval.report`). A judge that fails (engine error,
no parseable verdict) leaves its episode errored (kind ``judge`` or the engine's), never wrong.

``--samples K`` plays every task K times (episode ``j`` is sample ``j % K`` of task ``j // K``)
and adds per-task success, mean@K and the unbiased pass@k for k = 1..K
(:mod:`agentflow_env.eval.passk`); ``--seeds S`` repeats the run with seeds ``--seed`` ..
``--seed + S - 1`` on the same tasks and reports each metric's mean with a 95% Student-t
interval (:mod:`agentflow_env.eval.multi`).

Runs that lose nothing: a preflight request checks every remote engine first; ``--max-errors``
(a count or a fraction, default 0.1) stops a run whose infrastructure keeps failing (exit 3, the
partial report and trajectories written); ``--request-timeout``/``--max-retries`` bound every
request. Outputs are the run's own: an existing ``--out``/``--trajectories`` is refused (exit 2)
unless ``--overwrite``, and ``--resume`` continues from ``--trajectories``, playing each episode
exactly once (a torn last line from a kill, and errored episodes, are played again).
"""

from agentflow_env.eval.build import choose_tools, infer_kind
from agentflow_env.eval.config import EnvOverrides, EvalConfig, EvaluateError, RunStopped
from agentflow_env.eval.multi import print_seeds_report, run_seeds
from agentflow_env.eval.passk import pass_at_k, sample_summary
from agentflow_env.eval.report import print_report, summarize, wilson_interval
from agentflow_env.eval.run import run

__all__ = [
    "EnvOverrides",
    "EvalConfig",
    "EvaluateError",
    "RunStopped",
    "choose_tools",
    "infer_kind",
    "pass_at_k",
    "print_report",
    "print_seeds_report",
    "run",
    "run_seeds",
    "sample_summary",
    "summarize",
    "wilson_interval",
]
