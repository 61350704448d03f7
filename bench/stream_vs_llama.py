"""Larger than RAM, same memory cgroup: moestream (expert streaming, --ram-budget) against llama.cpp's llama-server
(mmap, --no-repack) on one GGUF, decode at temperature 1, interleaved rounds. Also measures the disk's raw direct
read bandwidth (fio) in the same run, and bytes read from the disk per decoded token for both engines.

    PYTHONPATH=. python bench/stream_vs_llama.py FILE.gguf --llama-bin DIR [--limit 12GiB] [--budget 10GiB]
        [--prompt-tokens 16] [--decode 24] [--rounds 3] [--json out.json]

Needs root (a memory cgroup v1 or v2 child of this process's own, and dropping the page cache between runs).
Each engine runs from a cold page cache. Disk bytes come from /proc/diskstats of the file's block device."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from bench.llama_agreement import free_port
from bench.read_bandwidth import raw_bandwidth
from moestream.cache.config import parse_bytes


class MemoryCgroup:
    """A child memory cgroup with a hard limit; commands are started inside it."""

    def __init__(self, limit: int, name: str = "moestream-bench"):
        own = next(line.split(":", 2)[2] for line in open("/proc/self/cgroup")
                   if line.split(":")[1] in ("memory", "") and os.path.exists(self._root(line) + line.split(":", 2)[2].strip()))
        self.v2 = not os.path.exists("/sys/fs/cgroup/memory")
        root = "/sys/fs/cgroup" if self.v2 else "/sys/fs/cgroup/memory"
        self.path = Path(root + own.strip()) / name
        self.path.mkdir(exist_ok=True)
        if self.v2:
            self._write("memory.max", str(limit))
        else:  # v1: memory.limit_in_bytes may not exceed memsw's, so raising one left by an earlier run goes memsw first
            names = ["memory.limit_in_bytes"] + (["memory.memsw.limit_in_bytes"]
                                                 if (self.path / "memory.memsw.limit_in_bytes").exists() else [])
            current = int((self.path / "memory.limit_in_bytes").read_text())
            for name in (reversed(names) if limit > current else names):
                self._write(name, str(limit))

    @staticmethod
    def _root(line: str) -> str:
        return "/sys/fs/cgroup/memory" if line.split(":")[1] == "memory" else "/sys/fs/cgroup"

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def wrap(self, cmd: list[str]) -> list[str]:
        """cmd, started inside the cgroup."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *cmd]

    def reset_peak(self) -> None:
        if not self.v2:
            self._write("memory.max_usage_in_bytes", "0")

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text()) if (self.path / name).exists() else -1

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill ")), 0)


def block_device(path: str) -> str:
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    name = Path(f"/sys/dev/block/{major}:{minor}").resolve().name
    parent = Path(f"/sys/dev/block/{major}:{minor}").resolve().parent
    return parent.name if (parent / "dev").exists() and name.startswith(parent.name) else name


def disk_bytes_read(device: str) -> int:
    for line in open("/proc/diskstats"):
        f = line.split()
        if f[2] == device:
            return int(f[5]) * 512
    raise RuntimeError(f"device {device} not in /proc/diskstats")


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def prompt_ids(vocab: int, n: int, seed: int) -> list[int]:
    """The same random prompt `moestream bench` uses."""
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def run_ours(cg: MemoryCgroup, args, device: str, seed: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "moestream", "bench", "-m", args.model, "--ram-budget", args.budget,
               "-p", str(args.prompt_tokens), "-n", str(args.decode), "--seed", str(seed), "--stats-json", out.name,
               "--no-warmup"]  # a warm-up decodes the same seeded request: it would leave exactly its experts cached
        before = disk_bytes_read(device)
        proc = subprocess.run(cg.wrap(cmd), capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            raise RuntimeError(f"moestream failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        r = json.load(open(out.name))
    return {"decode_tps": r["decode_tps"], "prefill_tps": r["prefill_tps"],
            "bytes_per_token": r["decode_bytes_read_per_token"], "read_throughput": r["read_throughput_Bps"],
            "hit_rate": r["hit_rate"], "io_wait_share": r["io_wait_share"], "peak_rss": r["peak_rss_bytes"],
            "disk_bytes_total": disk_bytes_read(device) - before, "summary": proc.stderr.strip().splitlines()[-6:]}


def run_llama(cg: MemoryCgroup, args, device: str, vocab: int, seed: int) -> dict:
    port, log = free_port(), tempfile.NamedTemporaryFile(suffix=".log", delete=False)
    cmd = [str(Path(args.llama_bin) / "llama-server"), "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
           "-c", str(args.prompt_tokens + args.decode + 16), "-t", "2", "-tb", "2", "-np", "1", "--no-repack",
           "--no-webui", "--no-warmup"]
    server = subprocess.Popen(cg.wrap(cmd), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, server, log.name)
        prompt = prompt_ids(vocab, args.prompt_tokens, seed)
        complete(port, prompt, 1, seed)  # prefill; its KV is reused below, so what follows is decode only
        before = disk_bytes_read(device)
        reply = complete(port, prompt, args.decode, seed)
        decoded = disk_bytes_read(device) - before
    finally:
        server.terminate()
        server.wait(timeout=60)
    t = reply["timings"]
    return {"decode_tps": t["predicted_per_second"], "decode_tokens": t["predicted_n"],
            "prompt_tokens_reprocessed": t["prompt_n"], "bytes_per_token": decoded / max(t["predicted_n"], 1)}


def wait_ready(port: int, server: subprocess.Popen, log: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"llama-server exited ({server.returncode}):\n{Path(log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("llama-server did not become ready")


def complete(port: int, prompt: list[int], n: int, seed: int) -> dict:
    body = dict(prompt=prompt, n_predict=n, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed,
                cache_prompt=True, ignore_eos=True, stream=False)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--limit", default="12GiB")
    ap.add_argument("--budget", default="10GiB")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--decode", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    from moestream.formats.gguf import GGUFFile

    vocab = len(GGUFFile(args.model).metadata["tokenizer.ggml.tokens"])
    cg, device = MemoryCgroup(parse_bytes(args.limit)), block_device(args.model)
    rows = []
    for rnd in range(args.rounds):
        for engine in ("moestream", "llama.cpp"):
            drop_page_cache()
            raw_before = raw_bandwidth(args.model, 6)  # the disk's speed drifts: measure it on both sides of the run
            drop_page_cache()
            cg.reset_peak()
            oom0 = cg.oom_kills()
            r = run_ours(cg, args, device, rnd) if engine == "moestream" else run_llama(cg, args, device, vocab, rnd)
            raws = [raw_before, raw_bandwidth(args.model, 6)]
            r.update(engine=engine, round=rnd, raw_bandwidth=sum(raws) / 2, raw_before_after=raws,
                     cgroup_peak=cg.peak(), oom_kills=cg.oom_kills() - oom0)
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "summary"}), flush=True)
    report(rows, args)
    if args.json:
        json.dump({"args": vars(args), "rows": rows}, open(args.json, "w"), indent=1)
    return 0


def report(rows: list[dict], args) -> None:
    ours = [r for r in rows if r["engine"] == "moestream"]
    theirs = [r for r in rows if r["engine"] == "llama.cpp"]
    print(f"\n{args.model}: memory cgroup {args.limit}, moestream --ram-budget {args.budget}, "
          f"{args.prompt_tokens}-token prompt, {args.decode} decoded tokens at temperature 1")
    print(f"{'round':>5} {'ours tok/s':>10} {'llama tok/s':>11} {'ratio':>6} {'ours GB/tok':>11} {'llama GB/tok':>12} "
          f"{'our read GB/s':>13} {'raw GB/s':>8} {'share':>6}")
    for o, t in zip(ours, theirs):
        print(f"{o['round']:>5} {o['decode_tps']:>10.3f} {t['decode_tps']:>11.3f} {o['decode_tps'] / t['decode_tps']:>6.2f} "
              f"{o['bytes_per_token'] / 1e9:>11.2f} {t['bytes_per_token'] / 1e9:>12.2f} {o['read_throughput'] / 1e9:>13.2f} "
              f"{o['raw_bandwidth'] / 1e9:>8.2f} {o['read_throughput'] / o['raw_bandwidth']:>6.0%}")
    ratios = [o["decode_tps"] / t["decode_tps"] for o, t in zip(ours, theirs)]
    shares = [o["read_throughput"] / o["raw_bandwidth"] for o in ours]
    peaks = ", ".join(f"{r['engine']} {r['cgroup_peak'] / 2**30:.2f} GiB" for r in rows)
    print(f"median decode ratio {statistics.median(ratios):.2f}x; our read throughput {statistics.median(shares):.0%} of "
          f"raw (median; raw = fio just before and after our run, averaged); cgroup peaks: {peaks}; "
          f"OOM kills {sum(r['oom_kills'] for r in rows)}")


if __name__ == "__main__":
    sys.exit(main())
