"""Expert plans: every expert has exactly one owner, bytes and profiles balance, plan files are checked whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moestream.errors import ConfigError
from moestream.shard.plan import balanced_plan, plan_from_json

LAYERS = (1, 2, 3)  # a dense layer 0, as DeepSeek's and GLM's files have


@settings(max_examples=200, deadline=None)
@given(world=st.integers(1, 7), n_experts=st.integers(1, 40), sizes=st.lists(st.integers(1, 10_000), min_size=1))
def test_every_expert_has_one_owner_and_bytes_balance(world, n_experts, sizes):
    size = lambda layer, e: sizes[(layer * n_experts + e) % len(sizes)]
    plan = balanced_plan(LAYERS, n_experts, world, size)
    assert set(plan.owners) == set(LAYERS)
    assert all(len(row) == n_experts and all(0 <= r < world for r in row) for row in plan.owners.values())
    assert sum(plan.count(r) for r in range(world)) == len(LAYERS) * n_experts
    owned = [sum(size(layer, e) for layer, row in plan.owners.items() for e, r in enumerate(row) if r == rank)
             for rank in range(world)]
    assert max(owned) - min(owned) <= max(sizes)  # greedy LPT: within one expert of level


def test_a_profile_spreads_the_hot_experts():
    hot = (0, 3, 6)  # by bytes alone, all three would land on rank 0
    profile = [[0] * 8, [1000 if e in hot else 1 for e in range(8)], [1] * 8, [1] * 8]
    by_bytes = balanced_plan(LAYERS, 8, 3, lambda layer, e: 100)
    assert [by_bytes.owners[1][e] for e in hot] == [0, 0, 0] and by_bytes.basis == "bytes"
    plan = balanced_plan(LAYERS, 8, 3, lambda layer, e: 100, profile)
    assert sorted(plan.owners[1][e] for e in hot) == [0, 1, 2]  # the three hot experts on three ranks
    assert plan.basis == "profile" and by_bytes.digest() != plan.digest()


def test_same_inputs_same_digest():
    a = balanced_plan(LAYERS, 8, 2, lambda layer, e: 100)
    b = balanced_plan(LAYERS, 8, 2, lambda layer, e: 100)
    assert a.digest() == b.digest()
    assert plan_from_json(a.to_json(), LAYERS, 8, 2, "f").digest() == a.digest()


@pytest.mark.parametrize("owners, needle", [
    ({"1": [0] * 8, "2": [0] * 8}, "layer 3's 8 experts have no owner"),
    ({"1": [0] * 8, "2": [0] * 7, "3": [0] * 8}, "layer 2 expert 7 has no owner"),
    ({"1": [0] * 8, "2": [0, None] + [0] * 6, "3": [0] * 8}, "layer 2 expert 1 has no owner"),
    ({"1": [0] * 8, "2": [0] * 8, "3": [0] * 7 + [2]}, "layer 3 expert 7 is owned by 2, not a rank of 0..1"),
    ({"1": [0] * 8, "2": [0] * 8, "3": [0] * 7 + [True]}, "owned by True"),
    ({"1": [0] * 9, "2": [0] * 8, "3": [0] * 8}, "layer 1 lists 9 owners for 8 experts"),
    ({"0": [0] * 8}, "layer '0' has no routed experts (MoE layers: 1..3)"),
    ({"1": "all"}, "layer 1 must list an owner rank per expert"),
])
def test_plan_files_are_checked_whole(owners, needle):
    with pytest.raises(ConfigError, match=None) as err:
        plan_from_json({"owners": owners}, LAYERS, 8, 2, "plan.json")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_plan_file_that_is_not_a_plan():
    with pytest.raises(ConfigError, match="a JSON object with"):
        plan_from_json([1, 2], LAYERS, 8, 2, "plan.json")
