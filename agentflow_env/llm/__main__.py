"""``python -m agentflow_env.llm``: fetch real models into the local cache, list them, serve one.

    python -m agentflow_env.llm fetch smollm2-135m-instruct   # prints the checkpoint directory
    python -m agentflow_env.llm list                          # known models, fetched or not
    python -m agentflow_env.llm serve hf:smollm2-135m-instruct --port 8000
                                      # an OpenAI-compatible server (agentflow_env.llm.server)

Exit status: 0 done, 2 bad arguments (an unknown name, a spec that is not hf:, a model that does
not load), 3 the fetch failed (registry unreachable, checksum mismatch, disk full): one line on
stderr says why.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agentflow_env.llm.common import EngineConfigError, EngineDependencyError
from agentflow_env.llm.models import (
    KNOWN_MODELS,
    FetchError,
    UnknownModelError,
    cache_dir,
    fetch,
    fetched_path,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agentflow_env.llm",
        description="Real models for the engines, offline by name.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="put a known model into the cache and print its path")
    f.add_argument("name", help=f"one of: {', '.join(sorted(KNOWN_MODELS))}")
    f.add_argument("--force", action="store_true", help="fetch again even if cached")
    sub.add_parser("list", help="known models and where they are cached")
    s = sub.add_parser("serve", help="serve a local model over an OpenAI-compatible HTTP API")
    s.add_argument("spec", help="hf:PATH_OR_NAME (a local model or a fetched name)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", help="the served model name (default: the spec's PATH_OR_NAME)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16, auto")
    s.add_argument("--max-batch-size", type=int, default=16, help="rows per generate call")
    return p


def _serve(args: argparse.Namespace) -> int:
    from agentflow_env.llm.server import run_server
    from agentflow_env.llm.spec import make_engine, parse_spec

    try:
        spec = parse_spec(args.spec)
        if spec.kind != "hf":
            raise EngineConfigError(f"serve takes an hf:PATH_OR_NAME spec, got {args.spec!r}")
        engine = make_engine(
            args.spec, device=args.device, dtype=args.dtype, max_batch_size=args.max_batch_size
        )
    except (EngineConfigError, EngineDependencyError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        run_server(engine, args.name or spec.target, host=args.host, port=args.port)
    finally:
        engine.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.command == "serve":
        return _serve(args)
    if args.command == "list":
        for name, model in sorted(KNOWN_MODELS.items()):
            path = fetched_path(name)
            where = str(path) if path else f"not fetched (cache: {cache_dir()})"
            sys.stdout.write(f"{name}\t{model.license}\t{where}\n\t{model.description}\n")
        return 0
    try:
        path = fetch(args.name, force=args.force)
    except UnknownModelError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except (FetchError, EngineDependencyError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 3
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
