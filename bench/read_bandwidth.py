"""Raw direct-read bandwidth of the disk under a GGUF, against our readers reading whole experts the way the cache
does (random (layer, expert), two experts' chunks in flight at once, as a decode step's misses). Interleaved
rounds, medians reported: this VM's disk speed drifts by 2x within a minute. Picks the default reader.

    PYTHONPATH=. python bench/read_bandwidth.py FILE.gguf [--rounds 6] [--seconds 4] [--json out.json]

Raw: fio, random and sequential 4 MiB direct reads at queue depth 32 with io_uring (falls back to
`dd iflag=direct bs=64M` when fio is not installed). An expert is three contiguous runs of ~31 MiB, so our pattern
lies between the two."""

from __future__ import annotations

import argparse
import json
import queue
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

from moestream.cache.layout import SlotLayout
from moestream.cache.tiers import RamPool
from moestream.engine.loader import check_model
from moestream.formats.gguf import GGUFFile
from moestream.store.reader import DirectFile, ReadJob, ThreadReader
from moestream.store.uring import UringReader

CONFIGS = [("thread", 16, 4), ("uring", 16, 4), ("thread", 32, 4), ("uring", 32, 4), ("uring", 32, 1)]


def raw_bandwidth(path: str, seconds: float, pattern: str = "randread") -> float:
    """Bytes/s of plain direct reads by a standard tool; pattern: fio's randread or read (sequential)."""
    if shutil.which("fio"):
        out = subprocess.run(["fio", "--name=raw", f"--filename={path}", f"--rw={pattern}", "--bs=4M", "--iodepth=32",
                              "--ioengine=io_uring", "--direct=1", f"--runtime={seconds}", "--time_based",
                              "--readonly", "--output-format=json"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["jobs"][0]["read"]["bw_bytes"]
    out = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=64M", "iflag=direct", "count=64"],
                         capture_output=True, text=True).stderr
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)) / float(m.group(2))


def ours(path: str, backend: str, depth: int, chunk: int, seconds: float, layout: SlotLayout, rng) -> tuple[float, float]:
    """-> (bytes/s, CPU seconds of this process per GB read)."""
    cpu0 = time.process_time()
    reader = (UringReader if backend == "uring" else ThreadReader)(DirectFile(path), depth)
    pool = RamPool(2 * layout.slot_size, layout.slot_size, 2)
    slots = [pool.take() for _ in range(2)]
    done, total, t0 = queue.SimpleQueue(), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        keys = [(rng.randrange(layout.store.n_layers), rng.randrange(layout.store.n_experts)) for _ in slots]
        jobs = [ReadJob(k, layout.chunks(*k, s.view, chunk), done.put) for k, s in zip(keys, slots)]
        for j in jobs:
            reader.submit(j)
        for _ in jobs:
            j = done.get()
            assert j.error is None, j.error
            total += j.nbytes
    rate = total / (time.perf_counter() - t0)
    reader.close()
    return rate, (time.process_time() - cpu0) / (total / 1e9)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    layout, rng = SlotLayout(check_model(GGUFFile(args.model)).experts), random.Random(0)
    results: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        results.setdefault("raw: fio random 4 MiB qd32", []).append(raw_bandwidth(args.model, args.seconds))
        results.setdefault("raw: fio sequential 4 MiB qd32", []).append(raw_bandwidth(args.model, args.seconds, "read"))
        for backend, depth, chunk in CONFIGS:
            rate, cpu_per_gb = ours(args.model, backend, depth, chunk << 20, args.seconds, layout, rng)
            name = f"{backend} depth {depth} chunk {chunk} MiB"
            results.setdefault(name, []).append(rate)
            cpu.setdefault(name, []).append(cpu_per_gb)
        print(f"round {rnd}: " + ", ".join(f"{k} {v[-1] / 1e9:.2f}" for k, v in results.items()),
              flush=True)
    print(f"\n{'reader':<32} {'median GB/s':>11} {'min':>6} {'max':>6} {'CPU ms/GB':>9}")
    for name, rates in results.items():
        cpu_ms = f"{1e3 * statistics.median(cpu[name]):>9.0f}" if name in cpu else f"{'-':>9}"
        print(f"{name:<32} {statistics.median(rates) / 1e9:>11.2f} {min(rates) / 1e9:>6.2f} {max(rates) / 1e9:>6.2f} {cpu_ms}")
    if args.json:
        json.dump({"GBps": results, "cpu_s_per_GB": cpu}, open(args.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
