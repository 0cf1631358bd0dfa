"""The ``infership`` command.

Each subcommand lives with its area (``infership.convert.cli``, ``infership.bench.cli``...) and imports its
heavy dependencies only when it runs, so ``infership backends`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# subcommand → module defining ``add_parser(subparsers)``; order is the order in --help.
_COMMANDS: dict[str, str] = {
    "backends": "infership.runtime.cli",
    "info": "infership.runtime.cli",
    "predict": "infership.predict_cli",
    "export": "infership.convert.cli",
    "quantize": "infership.convert.int8.cli",
    "optimize": "infership.optimize_cli",
    "explain": "infership.optimize_cli",
    "pipeline": "infership.pipeline_cli",
    "bench": "infership.bench.cli",
    "compare": "infership.bench.cli",
    "report": "infership.bench.cli",
    "serve": "infership.serve.cli",
    "batch-predict": "infership.serve.cli",
    "triton-repo": "infership.serve.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infership",
        description="Take a fine-tuned PyTorch model to a fast, validated deployment: convert, run, measure.",
        epilog="Run 'infership COMMAND --help' for a command's options.",
    )
    from infership import __version__

    parser.add_argument("--version", action="version", version=f"infership {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in _COMMANDS.items():
        # These modules import only the standard library at import time; a failure here is a bug to see,
        # not a subcommand to drop silently.
        module = importlib.import_module(module_name)
        getattr(module, f"add_{name.replace('-', '_')}")(sub)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    try:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=verbose >= 2, rich_tracebacks=verbose >= 2)
        fmt = "%(message)s"
    except ImportError:  # pragma: no cover
        handler, fmt = logging.StreamHandler(), "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler])
    if not verbose:
        for noisy in ("nncf", "onnxruntime", "torch", "onnxscript", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    from infership.runtime.errors import InfershipError

    try:
        return int(args.func(args) or 0)
    except InfershipError as exc:
        from rich.console import Console
        from rich.markup import escape

        # escaped: messages quote shapes such as "[batch, sequence]", which rich would read as markup
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        if args.verbose >= 2:
            raise
        return 1
    except (OSError, ValueError, RuntimeError) as exc:
        # Not ours, but the user still gets one line; -vv shows the traceback.
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.verbose >= 2:
            raise
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
