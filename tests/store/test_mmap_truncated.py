"""`--mmap` over a model file truncated after it was opened (the GGUF parser already refuses files too short at
open): the next expert lookup is a clear GGUFFormatError, not a SIGBUS that kills the process. Runs in a
subprocess, so a regression shows as a signal in the return code instead of taking pytest down with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from moestream.assets import DEFAULT_MODEL
from moestream.formats.gguf import GGUFFile
from moestream.store.experts import ExpertStore
from moestream.models.args import ModelArgs

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import os, sys
from moestream.engine import GREEDY, CacheConfig, Engine, EngineConfig
from moestream.errors import MoestreamError

path = sys.argv[1]
engine = Engine.open(path, EngineConfig(cache=CacheConfig(mmap=True), progress=False))
for size in [os.path.getsize(path)] + [int(s) for s in sys.argv[2:]]:
    os.truncate(path, size)  # after open, between steps
    try:
        print("generated", [ev.token for ev in engine.generate([1, 17, 33], GREEDY, 4)])
    except MoestreamError as exc:
        print(f"{type(exc).__name__}: {exc}")
"""


def experts_end(path: Path) -> int:
    gguf = GGUFFile(path)
    args = ModelArgs.from_gguf(gguf.metadata)
    store = ExpertStore(gguf, args.n_layers, args.n_experts)
    return max(r.offset + r.nbytes for layer in range(args.n_layers) for e in range(args.n_experts)
               for r in store.ranges(layer, e))


def test_a_file_truncated_after_open_is_a_clear_error(tmp_path):
    copy = tmp_path / "model.gguf"
    shutil.copyfile(DEFAULT_MODEL, copy)
    # untouched first (the check must not fire), then the last expert byte cut, then half the file gone
    sizes = [experts_end(copy) - 1, copy.stat().st_size // 2]
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(copy), *map(str, sizes)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, f"the process died (return code {res.returncode}): {res.stderr[-2000:]}"
    lines = res.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("generated ["), res.stdout + res.stderr
    for line, size in zip(lines[1:], sizes):
        assert line.startswith(f"GGUFFormatError: {copy}: the file shrank to {size} bytes while in use"), line
        assert "Restore the file" in line
