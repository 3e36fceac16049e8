"""``python -m learners.flow_grpo``: train the planner with Flow-GRPO.

Examples::

    python -m learners.flow_grpo                                  # tiny preset, CPU, ~10 min
    python -m learners.flow_grpo --total-steps 5 --output-dir runs/smoke
    python -m learners.flow_grpo --output-dir runs/smoke --resume # continue where it stopped
    python -m learners.flow_grpo --output-dir runs/smoke --overwrite # replace that run
    python -m learners.flow_grpo --preset paper --dry-run         # show + check, no weights
    python -m learners.flow_grpo --preset paper --dry-run --strict  # exit 1 if anything missing
    torchrun --nproc_per_node 2 -m learners.flow_grpo --total-steps 4

Every config field is a flag (``--rollout.group-size 8``); ``--config FILE`` (JSON/TOML) sets
many at once; precedence is flags > file > preset. The run ends with one line:
``eval/success 0.31 -> 0.62`` (held-out success before -> after).

The output directory is the run's own: one that holds another run is refused unless ``--resume``
continues it (from its last complete checkpoint, the records written after it rolled back) or
``--overwrite`` replaces it. Exit statuses: 0 done; 2 bad arguments or paths (an unwritable or
taken output directory, a missing model or data file), one line, before any model is loaded;
3 stopped by infrastructure (a full disk while saving), the last complete checkpoint kept.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from agentflow_env.runfiles import OutputPathError, WriteMode
from learners.config import ConfigError, add_arguments, resolve_model_path
from learners.flow_grpo.config import PRESETS, FlowGRPOConfig, make_config

__all__ = ["build_parser", "main", "parse_config"]

_SHORTCUTS = {"total_steps": "train.total_steps"}
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m learners.flow_grpo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="starting values: tiny (offline CPU, the default) or paper (the authors')",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="JSON or TOML file with (nested) field values"
    )
    parser.add_argument(
        "--total-steps",
        dest="total_steps",
        type=int,
        default=argparse.SUPPRESS,
        help="training steps (same as --train.total-steps)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --output-dir"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run --output-dir holds (its checkpoints, events, trajectories)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved configuration (every value, data, reward, tools, update), then "
        "check its resources without loading weights; exit 0 unless the configuration itself "
        "is wrong (missing weights, GPU, vLLM, servers, API keys, offline datasets are reported "
        "as unavailable)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="with --dry-run: exit 1 when anything is unavailable as well",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser, FlowGRPOConfig, skip=("preset",))
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[FlowGRPOConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    control = {"preset", "config", "resume", "overwrite", "dry_run", "strict", "verbose"}
    overrides = {_SHORTCUTS.get(k, k): v for k, v in vars(args).items() if k not in control}
    return make_config(args.preset, args.config, overrides), args


def check_paths(cfg: FlowGRPOConfig, mode: WriteMode) -> None:
    """What must hold before anything is loaded: the model and data exist, the output directory
    can be written and is this run's (``overwrite`` empties it of the run it holds).

    Raises:
        ConfigError: a missing model or data file.
        OutputPathError: an output directory that cannot be written or holds another run.
    """
    from learners.flow_grpo.rundir import claim_run_dir

    name = cfg.model.name_or_path
    path = resolve_model_path(name)
    looks_local = name.startswith(("asset:", "/", "./", "../", "~"))
    if looks_local and not Path(path).expanduser().is_dir():
        hint = " (rebuild it with `python -m learners.sft --preset tiny`)" if name != path else ""
        raise ConfigError(f"model.name_or_path={name!r}: no model directory at {path}{hint}")
    tasks = cfg.env.tasks
    if isinstance(tasks, (str, Path)) and not str(tasks).startswith("hf:"):
        if not Path(tasks).expanduser().is_file():
            raise ConfigError(f"env.tasks={str(tasks)!r}: no such file")
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 owns the directory
        claim_run_dir(cfg.output_dir, mode)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    try:
        cfg, args = parse_config(argv)
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    if args.resume and args.overwrite:
        console.print("[red]error:[/red] --resume and --overwrite exclude each other")
        return 2
    mode: WriteMode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.dry_run:
        from learners.flow_grpo.dryrun import describe, exit_status, run_checks

        print(describe(cfg), flush=True)
        print("\nchecks:", flush=True)
        checks = run_checks(cfg)
        marks = {"ok": "ok", "unavailable": "UNAVAILABLE", "error": "ERROR"}
        for check in checks:
            print(f"  {marks[check.status]:<11}  {check.name}: {check.detail}", flush=True)
        status = exit_status(checks, args.strict)
        missing = sum(c.status == "unavailable" for c in checks)
        verdict = (
            "configuration invalid"
            if any(c.status == "error" for c in checks)
            else ("configuration valid")
        )
        print(f"{verdict}; {missing} resource(s) unavailable here; exit {status}", flush=True)
        return status
    if args.strict:
        console.print("[red]error:[/red] --strict only applies to --dry-run")
        return 2
    try:
        check_paths(cfg, mode)
    except (ConfigError, OutputPathError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    from learners.checkpoint import CheckpointError
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    with FlowGRPOTrainer(cfg) as trainer:
        try:
            result = trainer.train(resume=args.resume, overwrite=args.overwrite)
        except (CheckpointError, OSError) as exc:
            if not isinstance(exc, CheckpointError) and exc.errno not in _DISK_ERRORS:
                raise
            # infrastructure stopped the run; what was saved stays valid for --resume
            console.print(f"[red]stopped:[/red] {escape(str(exc))}", soft_wrap=True)
            return 3
    if trainer.dist.is_main:
        print(f"eval/success {result['eval_before']:.2f} -> {result['eval_after']:.2f}", flush=True)
    trainer.dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
