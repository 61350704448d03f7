"""Coverage-guided fuzzing (atheris, i.e. libFuzzer) of what moestream does with a GGUF header.

Each input is a GGUF header (magic through tensor table); the harness pads it to the alignment, appends the data
section of the tiny base model (tiny_gguf.py), writes the file and runs `inspect` and a 2-token greedy `generate`
on it in-process. A MoestreamError is the expected answer to a bad file; any other exception is reported by
libFuzzer as a crash (with the input saved as crash-*), and so are segfaults, aborts and, with -timeout, hangs.

    pip install atheris
    python bench/fuzz/gguf_atheris.py -max_total_time=600 -timeout=20 -rss_limit_mb=4096 /tmp/gguf-corpus

The corpus folder is seeded on first use (the base header plus a mutant of each class in tests/fuzz/mutations.py
that keeps the header small), so a run needs nothing but this folder and atheris."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

with atheris.instrument_imports(include=["moestream"]):
    from moestream.cli.main import build_parser
    from moestream.errors import MoestreamError

import tiny_gguf  # noqa: E402
from tests.fuzz.gguf_model import read_header  # noqa: E402
from tests.fuzz.mutations import catalogue  # noqa: E402

WORK = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
BASE = tiny_gguf.write(WORK / "base.gguf")
HEADER = read_header(BASE)
CASE = WORK / "case.gguf"
MAX_HEADER = 1 << 16


def seed_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    (folder / "base").write_bytes(HEADER.header_bytes())
    for i, (name, edit) in enumerate(catalogue(HEADER, seed=1, n_random=0)):
        mutant = HEADER.clone()
        edit(mutant)
        head = mutant.header_bytes()
        if len(head) <= MAX_HEADER and not mutant.flips:
            (folder / f"seed-{i:04d}").write_bytes(head)


def run(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        args.run(args)


def test_one_input(data: bytes) -> None:
    if len(data) > MAX_HEADER:
        return
    with open(CASE, "wb") as f:
        f.write(data + b"\0" * (-len(data) % HEADER.alignment))
        f.write(HEADER.data)
    for argv in (["inspect", str(CASE)],
                 ["generate", "-m", str(CASE), "-p", "the cat", "-n", "2", "--temp", "0", "-t", "1"]):
        try:
            run(argv)
        except MoestreamError:
            pass


def main() -> None:
    folders = [a for a in sys.argv[1:] if not a.startswith("-")]
    for folder in folders[:1]:
        seed_corpus(Path(folder))
    atheris.Setup(sys.argv + [f"-max_len={MAX_HEADER}"], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
