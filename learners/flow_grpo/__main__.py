"""``python -m learners.flow_grpo``: train the planner with Flow-GRPO.

Examples::

    python -m learners.flow_grpo                                  # tiny preset, CPU, ~10 min
    python -m learners.flow_grpo --total-steps 5 --output-dir runs/smoke
    python -m learners.flow_grpo --output-dir runs/smoke --resume # continue where it stopped
    python -m learners.flow_grpo --output-dir runs/smoke --overwrite # replace that run
    python -m learners.flow_grpo --preset paper --dry-run         # check config + env, no weights
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

__all__ = ["build_parser", "dry_run", "main", "parse_config"]

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
        help="validate the configuration and environment without loading weights, then exit",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser, FlowGRPOConfig, skip=("preset",))
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[FlowGRPOConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    control = {"preset", "config", "resume", "overwrite", "dry_run", "verbose"}
    overrides = {_SHORTCUTS.get(k, k): v for k, v in vars(args).items() if k not in control}
    return make_config(args.preset, args.config, overrides), args


def dry_run(cfg: FlowGRPOConfig) -> list[tuple[str, bool, str]]:
    """Check config, model files (config + tokenizer only), environment and backend."""
    checks: list[tuple[str, bool, str]] = [("config", True, f"preset {cfg.preset}, valid")]
    path = resolve_model_path(cfg.model.name_or_path)
    try:
        from transformers import AutoConfig, AutoTokenizer

        local = Path(path).is_dir()
        mcfg = AutoConfig.from_pretrained(path, local_files_only=True)
        AutoTokenizer.from_pretrained(path, local_files_only=True)
        where = "" if local else " (from the local Hugging Face cache)"
        checks.append(
            (
                "model",
                True,
                f"{path}: {mcfg.model_type}, hidden {getattr(mcfg, 'hidden_size', '?')}{where}",
            )
        )
    except Exception as exc:  # noqa: BLE001 - reported as a failed check with the reason
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        hint = "download it first or set --model.name-or-path"
        checks.append(("model", False, f"{path} is not available offline ({reason}); {hint}"))
    try:
        from learners.envs import make_vector_env

        envs = make_vector_env(cfg.env, 1)
        obs, _ = envs.reset(seed=0, options={"tasks": [envs.tasks[0]]})
        n = len(envs.tasks)
        envs.close()
        detail = (
            f"{cfg.env.env_id}: {n} tasks ({cfg.env.eval_tasks} held out), "
            f"first prompt {len(obs[0])} chars"
        )
        checks.append(("env", True, detail))
    except Exception as exc:  # noqa: BLE001
        checks.append(("env", False, f"{type(exc).__name__}: {exc}"))
    if cfg.rollout.backend == "vllm":
        import importlib.util

        import torch

        ok = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
        checks.append(
            (
                "backend",
                ok,
                "vllm and a CUDA GPU found"
                if ok
                else "rollout.backend='vllm' needs vllm installed and a CUDA GPU; "
                "use --rollout.backend transformers",
            )
        )
    else:
        checks.append(("backend", True, "transformers generate"))
    return checks


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
        checks = dry_run(cfg)
        for name, ok, detail in checks:
            console.print(f"{'[green]ok[/green]' if ok else '[red]FAIL[/red]'}  {name}: {detail}")
        return 0 if all(ok for _, ok, _ in checks) else 1
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
