"""`moestream` command line: generate, chat, serve, top, bench, plan, inspect, synth, trace, simulate, pull, list, rm. Errors
print as one line, never a traceback; a flag a command does not know is answered with that command's usage."""

from __future__ import annotations

import argparse
import sys
import warnings

from .. import __version__
from ..errors import MoestreamError
from . import bench, chat, generate, inspect_cmd, plan, pull, serve, simulate, synth, top, trace
from .options import run_as_expert_rank


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moestream", description="Run Mixture-of-Experts LLMs from GGUF files.")
    parser.add_argument("--version", action="version", version=f"moestream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (generate, chat, serve, top, bench, plan, inspect_cmd, synth, trace, simulate, pull):
        module.register(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse reports a subcommand's unknown flag with the top-level usage; this reports it with the
    subcommand's own, which lists the flags it does take."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: serve --config lets them win over the file
    return args


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"moestream: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    args = parse(build_parser(), argv)
    try:
        if run_as_expert_rank(args):
            return 0
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
