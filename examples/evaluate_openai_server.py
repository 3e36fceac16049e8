"""Benchmark a planner served by an OpenAI-compatible server \
(a real ``transformers serve`` process).

The example starts ``transformers serve`` on 127.0.0.1 with the project's shipped tiny planner
(``learners/assets/tiny-warmstart``) through :func:`agentflow_env.llm.serve.serve_transformers`,
then benchmarks it with the project's evaluator exactly as ``python -m agentflow_env.evaluate
--planner openai:MODEL@http://127.0.0.1:PORT/v1`` would, on held-out questions of the generated
AgentFlow-Search-v0 world (offline tools and modules), and prints the evaluator's table. The
server is always stopped at the end.

The tiny planner was trained on raw observations in the ``compact`` prompt style with Search_Tool
returning one passage (the Flow-GRPO tiny preset's ``EnvConfig``), so the example sends raw
prompts (``/v1/completions``) and passes those settings to the evaluator as ``env_kwargs``
(``--env-kwargs '{"prompt_style": "compact", "tool_kwargs": {"Search_Tool": {"top_k": 1}}}'`` on
the command line). ``--compare-in-process`` also evaluates the same model in-process (``hf:PATH``)
on the same tasks: at temperature 0 both must give the same answers. Swap ``--model`` for any
local model directory (an instruct model usually wants ``--planner-input chat`` and the full
prompt).

    python examples/evaluate_openai_server.py --num-tasks 8 [--compare-in-process]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

import agentflow_env  # noqa: F401 - registers the ids
from agentflow_env.eval import EvalConfig, EvaluateError, print_report, run
from agentflow_env.llm import EngineError, serve_transformers
from agentflow_env.tasks.suite import make_suite
from learners.config import resolve_model_path
from learners.envs import EnvConfig, split_tasks

logger = logging.getLogger("evaluate_openai_server")


def export_held_out(env_cfg: EnvConfig, num_tasks: int, out_dir: Path) -> tuple[Path, Path]:
    """Write the first ``num_tasks`` held-out questions of the tiny preset's generated world (never
    seen by the warm start) as a task JSONL, and the world's documents as a corpus JSONL."""
    hops = {k: tuple(v) if isinstance(v, list) else v for k, v in env_cfg.task_kwargs.items()}
    suite = make_suite("search", seed=env_cfg.seed, num_tasks=env_cfg.num_tasks, **hops)
    _, held_out = split_tasks(list(suite.tasks), env_cfg.eval_tasks)
    tasks_path, corpus_path = out_dir / "held_out.jsonl", out_dir / "corpus.jsonl"
    with tasks_path.open("w") as fh:
        for task in held_out[:num_tasks]:
            fh.write(
                json.dumps(
                    {
                        "id": task.id,
                        "question": task.question,
                        "answer": task.answer,
                        "scorer": task.scorer,
                    }
                )
                + "\n"
            )
    with corpus_path.open("w") as fh:
        for doc in suite.documents:
            fh.write(json.dumps({"title": doc["title"], "text": doc["text"]}) + "\n")
    return tasks_path, corpus_path


def evaluate(
    planner: str,
    args: argparse.Namespace,
    env_cfg: EnvConfig,
    data: tuple[Path, Path],
    concurrency: int,
) -> dict[str, Any]:
    """The evaluator's report for ``planner`` on the exported tasks, in the training env
    settings."""
    tasks_path, corpus_path = data
    cfg = EvalConfig(
        data=str(tasks_path),
        corpus=str(corpus_path),
        planner=planner,
        planner_input=args.planner_input,
        episodes=args.num_tasks,
        max_turns=env_cfg.max_turns,
        max_tokens=64,
        temperature=0.0,
        concurrency=concurrency,
        # what the warm start was trained with: compact prompts, one passage per search
        env_kwargs={"prompt_style": env_cfg.prompt_style, "tool_kwargs": env_cfg.tool_kwargs},
    )
    try:
        return run(cfg)
    except EvaluateError as exc:  # bad arguments/inputs: the evaluator says what is wrong
        raise SystemExit(f"error: {exc}") from exc


def _success(report: dict[str, Any]) -> str:
    accuracy = report["summary"]["accuracy"]
    return "n/a" if accuracy is None else f"{accuracy:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tasks", type=int, default=8, help="held-out questions to evaluate")
    parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the server's /health"
    )
    parser.add_argument(
        "--model", default="asset:tiny-warmstart", help="local model dir (or asset:NAME)"
    )
    parser.add_argument(
        "--planner-input",
        choices=["prompt", "chat"],
        default="prompt",
        help="raw completion prompt (what the tiny planner was trained on) or chat",
    )
    parser.add_argument(
        "--compare-in-process",
        action="store_true",
        help="also evaluate the model in-process (hf:PATH) on the same tasks",
    )
    args = parser.parse_args()
    if not 1 <= args.num_tasks <= EnvConfig().eval_tasks:
        parser.error(f"--num-tasks must be in [1, {EnvConfig().eval_tasks}]")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(
        logging.INFO
    )  # this script's progress; libraries stay at WARNING (no per-request lines)
    console = Console()
    env_cfg = (
        EnvConfig()
    )  # the tiny preset's env: compact prompts, top_k 1, 4 turns, the seed-0 world
    model_dir = resolve_model_path(args.model)
    with tempfile.TemporaryDirectory(prefix="evaluate-openai-") as tmp:
        data = export_held_out(env_cfg, args.num_tasks, Path(tmp))
        try:
            with serve_transformers(model_dir, port=args.port, timeout_s=args.timeout) as server:
                logger.info(
                    "transformers serve ready at %s after %.1f s", server.url, server.startup_s
                )
                served = evaluate(server.spec, args, env_cfg, data, concurrency=4)
        except (
            EngineError
        ) as exc:  # server failed to start / not ready in time: the log tail says why
            raise SystemExit(f"error: {exc}") from exc
        # The server runs one request at a time: batch 1 in-process too, so both compute
        # identically.
        local = (
            evaluate(f"hf:{model_dir}", args, env_cfg, data, concurrency=1)
            if args.compare_in_process
            else None
        )
    print_report(served, console)
    summary = served["summary"]
    console.print(
        f"served planner success {_success(served)} over {summary['scored']} held-out tasks "
        f"({summary['wall_time_s']:.1f} s of episodes)"
    )
    if local is not None:
        keys = ("task_id", "answer", "turns", "score")
        same = sum(
            [a[k] for k in keys] == [b[k] for k in keys]
            for a, b in zip(served["episodes"], local["episodes"], strict=True)
        )
        console.print(
            f"in-process planner success {_success(local)} over {local['summary']['scored']} "
            f"held-out tasks ({local['summary']['wall_time_s']:.1f} s of episodes); "
            f"same answer, turns and score on {same}/{len(local['episodes'])} tasks"
        )


if __name__ == "__main__":
    main()
