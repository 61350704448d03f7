"""The kernel thread pool (csrc/threadpool.c) hands jobs over without races: thousands of tiny jobs of varying
task counts, each task counting itself, must run every task exactly once (no loss, repeat or out-of-range index),
from one caller and from several Python threads at once (native calls release the GIL); and ThreadSanitizer,
on the pool built with a small C driver, must report nothing.

The pool before this rule (workers reading the job's fields without the lock while the next job wrote them)
fails both: under ThreadSanitizer with data-race reports and wrong counts, and with concurrent callers it hangs.
Runs that could hang go to a subprocess with a timeout, so a regression fails instead of stalling the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moestream.kernels import cpu

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "moestream" / "kernels" / "cpu" / "csrc"
DRIVER = Path(__file__).with_name("pool_driver.c")

CONCURRENT = """
import threading
from moestream.kernels import cpu
bad = []
threads = [threading.Thread(target=lambda i=i: bad.append(cpu.pool_stress(1500, 40, 2 + i, 11 + i))) for i in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print("bad tasks:", sum(bad), len(bad))
"""


@pytest.mark.parametrize("n_threads", [2, 4, 9])  # 9 > cores: workers queue behind each other
def test_every_task_runs_exactly_once(n_threads):
    assert cpu.pool_stress(3000, 48, n_threads, n_threads) == 0


def test_concurrent_callers_serialise():
    res = subprocess.run([sys.executable, "-c", CONCURRENT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "bad tasks: 0 3" in res.stdout, res.stdout + res.stderr


def test_thread_sanitizer_finds_no_race(tmp_path):
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the native kernels and this test"
    exe = tmp_path / "pool_tsan"
    build = subprocess.run([gcc, "-fsanitize=thread", "-O1", "-g", "-pthread", f"-I{CSRC}", str(DRIVER),
                            str(CSRC / "threadpool.c"), str(CSRC / "pool_stress.c"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    # a compiler without ThreadSanitizer (libtsan) fails here, loudly: the check must not silently go away
    assert build.returncode == 0, "could not build with -fsanitize=thread (is libtsan installed?)\n" + build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    out = run.stdout + run.stderr
    assert "WARNING: ThreadSanitizer" not in out and "FATAL" not in out, out
    assert run.returncode == 0 and "bad tasks: 0" in run.stdout, out
