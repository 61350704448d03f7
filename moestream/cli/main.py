"""`moestream` command line: generate, chat, serve, bench, inspect, synth, trace, simulate. Errors print as one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
import warnings

from .. import __version__
from ..errors import MoestreamError
from . import bench, chat, generate, inspect_cmd, serve, simulate, synth, trace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moestream", description="Run Mixture-of-Experts LLMs from GGUF files.")
    parser.add_argument("--version", action="version", version=f"moestream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (generate, chat, serve, bench, inspect_cmd, synth, trace, simulate):
        module.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"moestream: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MoestreamError as exc:
        print(f"moestream: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmoestream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0  # e.g. piped into `head`


if __name__ == "__main__":
    sys.exit(main())
