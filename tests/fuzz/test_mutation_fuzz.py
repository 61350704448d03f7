"""Seeded mutation fuzzing of real GGUF files: every hostile edit in tests/fuzz/mutations.py must make `inspect`
and a 2-token `generate` either succeed or raise a MoestreamError. Any other exception, a crash of the process
(segfault, abort, SIGBUS) or a case running past the time limit fails the test, naming the case.

Two base files: the embedded default model (merged expert tensors) and a per-expert-layout copy of it. Cases run
in worker processes (`tests/fuzz/worker.py`), one per base file, side by side; a worker that dies is restarted
after the case that killed it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from moestream.assets import default_model_path
from tests.fuzz.gguf_model import read_header
from tests.fuzz.mutations import catalogue
from tests.fixtures.gguf_edit import copy_gguf, split_experts
from tests.fixtures.tiny_models import gguf_path

SEED = 20261201
N_RANDOM = 24
LIMIT_S = 20.0  # per command; the slowest legitimate case (a full load + 2 tokens) takes well under a second
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def per_expert_file(tmp_path_factory) -> Path:
    return copy_gguf(default_model_path(), tmp_path_factory.mktemp("fuzz") / "per-expert.gguf",
                     edit_tensors=split_experts)


def run_worker(base: Path, scope: str, start: int, end: int) -> tuple[list[dict], list[str]]:
    """All results of cases start..end, restarting after crashes; -> (results, crash descriptions)."""
    results, crashes = [], []
    while start < end:
        cmd = [sys.executable, "-m", "tests.fuzz.worker", str(base), scope, str(start), str(end), str(SEED),
               str(N_RANDOM), str(LIMIT_S)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S * 2 * (end - start) + 60)
        running = None
        for line in proc.stdout.splitlines():
            if line.startswith("start "):
                running = int(line.split()[1])
            elif line.startswith("{"):
                results.append(json.loads(line))
                running = None
        if proc.returncode == 0:
            break
        if running is None:  # died outside a case (e.g. on import): nothing to restart from
            crashes.append(f"worker exited {proc.returncode} outside a case: {proc.stderr[-2000:]}")
            break
        crashes.append(f"case {running} killed the process (exit {proc.returncode}): {proc.stderr[-1500:]}")
        start = running + 1
    return results, crashes


def _n_cases(base: Path, scope: str) -> int:
    return len(catalogue(read_header(base), SEED, N_RANDOM, scope))


def test_mutated_files_fail_cleanly(per_expert_file):
    bases = {default_model_path(): "all", per_expert_file: "tensors"}
    outcomes: dict[Path, tuple[list[dict], list[str]]] = {}

    def run(base: Path) -> None:
        outcomes[base] = run_worker(base, bases[base], 0, _n_cases(base, bases[base]))

    threads = [threading.Thread(target=run, args=(b,)) for b in bases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = []
    for base, (results, crashes) in outcomes.items():
        failures += [f"{base.name}: {c}" for c in crashes]
        failures += [f"{base.name}: case {r['i']} ({r['name']}): {r['outcome']}: {r['detail']}"
                     for r in results if r["outcome"] in ("bug", "timeout")]
        counts = {k: sum(r["outcome"] == k for r in results) for k in ("ok", "error", "bug", "timeout")}
        print(f"{base.name}: {len(results)} cases, {counts}")
        assert len(results) + len(crashes) == _n_cases(base, bases[base]), "some cases neither ran nor crashed"
    assert not failures, "\n\n".join(failures[:20])
    for results, _ in outcomes.values():
        assert sum(r["outcome"] == "error" for r in results) > len(results) // 2, "most hostile edits are refused"


def _arch_keys(path: Path) -> set[str]:
    """The file's `{arch}.*` keys without the prefix."""
    header = read_header(path)
    prefix = header.kv("general.architecture").value + "."
    return {kv.key[len(prefix):] for kv in header.kvs if kv.key.startswith(prefix)}


@pytest.mark.parametrize("arch, outtype", [("deepseek2yarn", "q8_0"), ("gpt-oss", "q8_0"), ("qwen3next", "q8_0")])
def test_mutated_hyper_parameters_of_the_newer_architectures_fail_cleanly(arch, outtype):
    """The keys no file fuzzed before has, each made hostile: DeepSeek-V3's beyond the default model's (MLA ranks
    and widths, YaRN, groups, gating, scale, dense layers), then gpt-oss's (the sliding window) and the hybrid
    models' (ssm.* widths, the recurrent-layer plan) beyond those, on Qwen3-Next's file: the keys are Qwen3.5-MoE's,
    the vocabulary a third of its size (each case loads it twice). Q8_0 files: the keys, not the weight type, are
    under test, and a Q8_0 case takes 0.38 s against F32's 0.63 (240 DeepSeek cases)."""
    base = gguf_path(arch, outtype)
    covered = _arch_keys(default_model_path())
    if arch != "deepseek2yarn":
        covered |= _arch_keys(gguf_path("deepseek2yarn"))
    scope = "metadata:" + ",".join(sorted(_arch_keys(base) - covered))
    n = _n_cases(base, scope)
    halves = [(0, n // 2), (n // 2, n)]  # two workers, one per core
    outcomes: list = [None, None]
    threads = [threading.Thread(target=lambda j=j: outcomes.__setitem__(j, run_worker(base, scope, *halves[j])))
               for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = outcomes[0][0] + outcomes[1][0]
    crashes = outcomes[0][1] + outcomes[1][1]
    failures = crashes + [f"case {r['i']} ({r['name']}): {r['outcome']}: {r['detail']}"
                          for r in results if r["outcome"] in ("bug", "timeout")]
    assert n > 10 and len(results) + len(crashes) == n, "some cases neither ran nor crashed"
    assert not failures, "\n\n".join(failures[:20])
    assert sum(r["outcome"] == "error" for r in results) > len(results) // 2
