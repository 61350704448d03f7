"""Sizing (engine/sizing.py) and `moestream plan`: the automatic budget never goes past what a memory limit leaves
after the resident weights, the KV cache, the runtime and the OS, for any numbers (hypothesis) and under a real
memory cgroup; too little memory is refused with the numbers; the hit-rate model behaves at its edges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from moestream.engine import OS_RESERVE, Machine, ModelSize, auto_budget, memory_need, minimum_budget
from moestream.engine.planner import hit_rate
from moestream.engine.sizing import RUNTIME_BYTES, fixed_bytes

MiB, GiB = 1 << 20, 1 << 30
sizes = st.builds(ModelSize, resident_bytes=st.integers(0, 64 * GiB), expert_slots=st.integers(1, 20_000),
                  slot_bytes=st.integers(4096, 200 * MiB), experts_per_token=st.integers(1, 8),
                  kv_bytes_per_token=st.integers(0, 1 * MiB))
machines = st.builds(Machine, free_bytes=st.integers(0, 1 << 40), cgroup_room=st.none() | st.integers(0, 1 << 40),
                     own_bytes=st.integers(0, 2 * GiB))


@settings(max_examples=500, deadline=None)
@given(size=sizes, machine=machines, context=st.integers(1, 1 << 17), sequences=st.integers(1, 64))
def test_auto_budget_stays_inside_the_room(size, machine, context, sequences):
    budget = auto_budget(size, machine, context, sequences)
    assert 0 <= budget <= size.expert_slots * size.slot_bytes and budget % size.slot_bytes == 0
    # what the machine (or cgroup) has, plus what this process already holds of the runtime, less the rest
    room = machine.room + min(machine.own_bytes, RUNTIME_BYTES)
    assert budget <= max(room - fixed_bytes(size, context, sequences) - OS_RESERVE, 0)
    if budget:
        assert memory_need(size, budget, context, sequences) + OS_RESERVE <= room


def test_everything_fits_when_there_is_room():
    size = ModelSize(100 * MiB, 64, 2 * MiB, 2, 1024)
    assert auto_budget(size, Machine(64 * GiB), 4096, 1) == 128 * MiB
    assert auto_budget(size, Machine(64 * GiB, cgroup_room=900 * MiB), 4096, 1) == 28 * MiB  # the cgroup binds
    assert auto_budget(size, Machine(64 * GiB, cgroup_room=800 * MiB), 4096, 1) == 0
    assert minimum_budget(size) == 4 * MiB


@pytest.mark.parametrize("slots, want", [(0, 0.0), (8, 0.25), (32, 1.0), (40, 1.0)])
def test_hit_rate_without_a_profile_is_the_budget_share(slots, want):
    assert hit_rate(slots, 32, None) == pytest.approx(want)


def test_hit_rate_with_a_skewed_profile_beats_the_share():
    profile = [[1000, 500, 10, 10, 1, 1, 1, 1]]  # two hot experts of eight
    assert hit_rate(2, 8, profile) > 0.75 > 2 / 8
    assert hit_rate(2, 8, [[5] * 8]) == pytest.approx(2 / 8, abs=0.02)  # uniform: the share again
    assert hit_rate(7, 8, [[5, 5, 5, 5, 5, 5, 0, 0]]) == 1.0  # never-routed experts need no slot


def plan(*flags: str, cgroup: str | None = None) -> subprocess.CompletedProcess:
    """Half-second measurements: these tests check what plan prints and refuses, not how steady it is."""
    cmd = [sys.executable, "-m", "moestream", "plan", "--measure-seconds", "0.5", *flags]
    if cgroup is not None:  # enter the cgroup first, then become moestream
        cmd = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$0" "$@"', *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_plan_prints_a_plan_and_its_json():
    text = plan()
    assert text.returncode == 0, text.stderr
    for word in ("model", "machine", "reads", "compute", "recommend --ram-budget", "predict", "tok/s"):
        assert word in text.stdout
    data = json.loads(plan("--ram-budget", "1MiB", "--json").stdout)
    assert data["slots"] == 5 and data["ram_budget_bytes"] == 5 * data["slot_bytes"] and not data["auto"]
    assert 0 < data["hit_rate"] < 1 and data["predicted_decode_tps"] > 0 and data["read_per_expert_s"] > 0


def test_plan_refuses_a_measurement_time_out_of_range():
    done = plan("--measure-seconds", "0")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "moestream: error: --measure-seconds must be between 0.1 and 600, got 0"


def test_plan_refuses_a_budget_below_one_tokens_experts():
    done = plan("--ram-budget", "100KiB")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("moestream: error: --ram-budget 100.00 KiB holds 0 expert(s) of "
                                                    "204.00 KiB: one token's 2 experts of a layer need 408.00 KiB, "
                                                    "which does not fit")


def memory_cgroup(limit: int) -> Path | None:
    """A new memory cgroup with `limit` (v2 or v1), or None where this machine does not let us make one."""
    for root, limit_file in (("/sys/fs/cgroup", "memory.max"), ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")):
        if not os.path.exists(os.path.join(root, limit_file if root.endswith("memory") else "cgroup.controllers")):
            continue
        path = Path(root) / f"moestream-test-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
            (path / limit_file).write_text(str(limit))
            return path
        except OSError:
            return None
    return None


@pytest.fixture
def cgroup(request):
    made = []

    def make(limit: int) -> str:
        path = memory_cgroup(limit)
        if path is None:
            pytest.fail("cannot create a memory cgroup here (not root, or no writable cgroup fs); this test "
                        "checks the budget against a real limit and has no stand-in")
        made.append(path)
        return str(path)

    yield make
    for path in made:
        path.rmdir()


def test_auto_budget_under_a_real_cgroup_limit(cgroup):
    limit = 1200 * MiB
    data = json.loads(plan("--json", cgroup=cgroup(limit)).stdout)
    assert data["cgroup_limit_bytes"] == limit
    assert data["ram_budget_bytes"] <= limit - data["resident_bytes"] - data["kv_bytes"] - OS_RESERVE
    assert data["container_memory_bytes"] <= limit  # the plan fits the limit it was made under
    tight = plan(cgroup=cgroup(600 * MiB))  # Python and torch alone take a third of it
    assert tight.returncode == 1 and "memory cgroup" in tight.stderr and "does not fit" in tight.stderr
