"""Raw direct-read bandwidth of the disk under a GGUF, against our readers reading whole experts the way the cache
does (random (layer, expert), every chunk of an expert in flight at once). Picks the default reader.

    PYTHONPATH=. python bench/read_bandwidth.py FILE.gguf [--seconds 10] [--json out.json]

Raw: `dd iflag=direct bs=64M` over a region of the file (the kernel splits each 64 MiB request, so the device
queue stays deep). Ours: ExpertCache-style jobs through each backend at several depths and chunk sizes."""

from __future__ import annotations

import argparse
import json
import queue
import random
import re
import subprocess
import sys
import time

from moestream.cache.layout import SlotLayout
from moestream.cache.tiers import RamPool
from moestream.engine.loader import check_model
from moestream.formats.gguf import GGUFFile
from moestream.store.reader import DirectFile, ReadJob, ThreadReader
from moestream.store.uring import UringReader


def raw_dd(path: str, skip_mib: int, mib: int) -> float:
    out = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=64M", "iflag=direct,skip_bytes,count_bytes",
                          f"skip={skip_mib << 20}", f"count={mib << 20}"], capture_output=True, text=True).stderr
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)) / float(m.group(2))


def ours(path: str, backend: str, depth: int, chunk: int, seconds: float, layout: SlotLayout, rng) -> float:
    file = DirectFile(path)
    reader = (UringReader if backend == "uring" else ThreadReader)(file, depth)
    pool = RamPool(4 * layout.slot_size, layout.slot_size, 4)
    slots = [pool.take() for _ in range(2)]  # two experts in flight: a decode step's misses for one layer
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
    return rate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    info = check_model(GGUFFile(args.model))
    layout, rng = SlotLayout(info.experts), random.Random(0)
    size_mib = info.gguf.file_size >> 20
    rows = []
    for rnd in range(2):  # interleaved rounds: this VM's disk speed drifts
        rows.append({"round": rnd, "backend": "dd (raw)", "depth": "-", "chunk_MiB": 64,
                     "GBps": raw_dd(args.model, rng.randrange(size_mib - 4096), 4096) / 1e9})
        for backend in ("thread", "uring"):
            for depth, chunk in ((4, 4), (16, 4), (32, 1), (32, 4), (64, 2)):
                rate = ours(args.model, backend, depth, chunk << 20, args.seconds, layout, rng)
                rows.append({"round": rnd, "backend": backend, "depth": depth, "chunk_MiB": chunk, "GBps": rate / 1e9})
        print("\n".join(f"{r['round']} {r['backend']:>9} depth {r['depth']:>3} chunk {r['chunk_MiB']:>3} MiB  "
                        f"{r['GBps']:.2f} GB/s" for r in rows[-11:]), flush=True)
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
