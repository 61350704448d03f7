"""Run mutation cases in this process: `python -m tests.fuzz.worker BASE.gguf SCOPE START END SEED N_RANDOM LIMIT_S`.

For each case it writes the mutated file, then runs `inspect` and a 2-token greedy `generate` through the real
CLI commands (in-process, output discarded). Each case prints `start <i>` before it runs and one JSON line
after: outcome "ok" (it ran), "error" (a MoestreamError, as it should), "bug" (any other exception, or a
KernelInputError: the native wrappers' own checks must never be what stops a bad file) or
"timeout" (past LIMIT_S, by SIGALRM). A crash leaves a `start` line without its result, which the parent reports
and restarts after."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from moestream.cli.main import build_parser
from moestream.errors import KernelInputError, MoestreamError

from .gguf_model import read_header
from .mutations import catalogue


class CaseTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that no `except Exception` in the code under test swallows it."""


def _alarm(signum, frame):
    raise CaseTimeout()


def run_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        args.run(args)


def run_case(path: Path, limit_s: float) -> tuple[str, str]:
    commands = [["inspect", str(path)],
                ["generate", "-m", str(path), "-p", "It was a fine", "-n", "2", "--temp", "0", "-t", "1"]]
    outcomes = []
    for argv in commands:
        signal.setitimer(signal.ITIMER_REAL, limit_s)
        try:
            run_command(argv)
            outcomes.append(("ok", ""))
        except KernelInputError as exc:  # validation must stop a bad file before any kernel sees it
            outcomes.append(("bug", f"{argv[0]}: kernel input reached C: {exc}"[:300]))
        except MoestreamError as exc:
            outcomes.append(("error", f"{argv[0]}: {exc}"[:300]))
        except CaseTimeout:
            outcomes.append(("timeout", f"{argv[0]} ran past {limit_s} s"))
        except BaseException as exc:  # noqa: BLE001 - everything else is the defect being looked for
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            outcomes.append(("bug", f"{argv[0]}: {type(exc).__name__}: {exc}\n{''.join(tb[-6:])}"[:3000]))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    worst = max(outcomes, key=lambda o: ["ok", "error", "timeout", "bug"].index(o[0]))
    return worst


def main() -> None:
    base, scope, start, end, seed, n_random, limit_s = sys.argv[1:8]
    header = read_header(Path(base))
    cases = catalogue(header, int(seed), int(n_random), scope)
    signal.signal(signal.SIGALRM, _alarm)
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    for i in range(int(start), min(int(end), len(cases))):
        name, edit = cases[i]
        print(f"start {i}", flush=True)
        mutated = header.clone()
        edit(mutated)
        path = mutated.write(tmp / f"case-{i}.gguf")
        outcome, detail = run_case(path, float(limit_s))
        path.unlink()
        print(json.dumps({"i": i, "name": name, "outcome": outcome, "detail": detail}), flush=True)
    tmp.rmdir()


if __name__ == "__main__":
    main()
