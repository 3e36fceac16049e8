"""The ``python -m tools.search`` command line: build an index, query it, serve it.

::

    python -m tools.search index CORPUS.jsonl --out DIR      # build and save a BM25 index
    python -m tools.search query DIR "who founded Varnok"    # try it
    python -m tools.search serve DIR --port 8000             # Search-R1 style /retrieve server

The CLI writes to stdout through rich; errors (missing files, an output path that cannot be
written, a port already taken, bad settings, a missing optional package) are one red line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.search.bm25 import BM25Index, IndexSettings, build_index
from tools.search.local import SearchTool, WikipediaSearchTool
from tools.search.server import make_retrieval_server

__all__ = ["main"]


def _cli_index(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    settings = IndexSettings(
        stopwords=None if args.no_stopwords else "en",
        stemmer=None if args.no_stem else args.stemmer,
        k1=args.k1,
        b=args.b,
    )
    start = time.perf_counter()
    out = build_index(Path(args.corpus), Path(args.out), settings)
    index = BM25Index.load(out, backend="numpy")
    Console().print(
        f"[green]indexed[/green] {index.num_passages:,} passages into {out} "
        f"in {time.perf_counter() - start:.1f} s "
        f"({index.memory_bytes() / 2**20:.1f} MiB of score arrays)"
    )
    index.close()
    return 0


def _cli_query(args: argparse.Namespace) -> int:
    from rich.console import Console

    cls = WikipediaSearchTool if args.wikipedia else SearchTool
    with cls(index_dir=args.index_dir, top_k=args.top_k) as tool:
        result = tool.execute(query=args.query)
    console = Console()
    if result.ok:
        console.print(result.output, markup=False, highlight=False, soft_wrap=True)
        return 0
    console.print(f"[red]error:[/red] {result.error}")
    return 1


def _cli_serve(args: argparse.Namespace) -> int:
    from rich.console import Console

    index = BM25Index.load(args.index_dir)
    server = make_retrieval_server(index, host=args.host, port=args.port, default_top_k=args.top_k)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    address = f"http://{host}:{port}/retrieve"
    Console().print(
        f"serving {index.num_passages:,} passages at {address} (Ctrl-C to stop)", soft_wrap=True
    )
    sys.stdout.flush()  # the address line must reach a pipe (scripts wait for it) before serving
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        index.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.search",
        description="Build, query and serve a local BM25 search index (Search_Tool's corpus).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="build a BM25 index from a JSONL corpus and save it")
    p.add_argument("corpus", help="JSONL: {id, title, text} or {id, contents} per line")
    p.add_argument("--out", required=True, help="index directory to write")
    p.add_argument("--stemmer", default="english", help="Snowball language (PyStemmer)")
    p.add_argument("--no-stem", action="store_true", help="do not stem words")
    p.add_argument("--no-stopwords", action="store_true", help="keep English stopwords")
    p.add_argument("--k1", type=float, default=1.5, help="BM25 k1")
    p.add_argument("--b", type=float, default=0.75, help="BM25 b")
    p.set_defaults(func=_cli_index)
    p = sub.add_parser("query", help="search a saved index")
    p.add_argument("index_dir")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--wikipedia", action="store_true", help="group results by article")
    p.set_defaults(func=_cli_query)
    p = sub.add_parser("serve", help="serve a saved index over the Search-R1 /retrieve protocol")
    p.add_argument("index_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--top-k", type=int, default=3, help="default topk when a request has none")
    p.set_defaults(func=_cli_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tools.search``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, ValueError, ImportError) as exc:  # missing files, a taken port, bad paths
        from rich.console import Console

        # soft_wrap: one line whatever the terminal width (scripts grep it)
        from rich.markup import escape

        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
