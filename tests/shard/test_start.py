"""`moestream generate --shard experts` under torchrun, and the start-up errors: ranks that disagree on the file
or the plan, a rank that cannot reach the rendezvous, a plan that leaves an expert without an owner, each a
one-line error on the rank that reports it (and no hang on the others); a rank that cannot open its part (its
budget too small) names itself and its reason on every rank."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from moestream.assets import default_model_path
from tests.cli.test_bad_input import assert_one_line_error
from tests.shard.ranks import finish, free_port, start_ranks, torchrun
from tests.synth.test_synth import Q4_0, small

MODEL = str(default_model_path())
PROMPT = ("-p", "It was a fine morning, and", "-n", "24", "--temp", "0", "--seed", "1")


def test_generate_under_torchrun_matches_one_process():
    one = subprocess.run([sys.executable, "-m", "moestream", "generate", "-m", MODEL, *PROMPT], capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    three = torchrun(3, "-m", "moestream", "generate", "-m", MODEL, *PROMPT, "--shard", "experts", "--stats-json",
                     "/dev/null")
    assert three.returncode == 0, three.stderr[-3000:]
    assert three.stdout == one.stdout and one.stdout.strip()
    assert "shard    3 ranks" not in three.stderr  # generate prints one line, not the table
    assert "rank 1/3: serving" in three.stderr and "rank 2/3: serving" in three.stderr


def generate_ranks(n: int, flags_of_rank, timeout: float = 90):
    procs = start_ranks(n, lambda r: ["-m", "moestream", "generate", "-m", MODEL, "-p", "Once", "-n", "4", "--shard", "experts",
                                      *flags_of_rank(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return [subprocess.CompletedProcess([], code, "", err) for code, err in finish(procs, timeout)]


def test_a_rank_with_another_file_is_refused(tmp_path):
    from moestream.synth import write_synth

    other = tmp_path / "other.gguf"
    write_synth(other, small("mixtral-8x7b", vocab=2000), Q4_0, seed=5, progress=False)
    results = generate_ranks(2, lambda r: ["-m", str(other)] if r == 1 else [])
    for result in results:
        assert_one_line_error(result, "rank 1 opened a different model file than rank 0")


def test_a_rank_with_another_plan_is_refused(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"owners": {str(layer): [(e // 4) % 2 for e in range(8)] for layer in range(4)}}))
    results = generate_ranks(2, lambda r: ["--shard-plan", str(plan)] if r == 1 else [])
    for result in results:
        assert_one_line_error(result, "rank 1 computed a different expert plan than rank 0")


def test_a_plan_that_leaves_an_expert_without_an_owner(tmp_path):
    plan = tmp_path / "plan.json"
    owners = {str(layer): [e % 2 for e in range(8)] for layer in range(4)}
    owners["2"][5] = None
    plan.write_text(json.dumps({"owners": owners}))
    for result in generate_ranks(2, lambda r: ["--shard-plan", str(plan), "--shard-timeout", "10"]):
        assert_one_line_error(result, "layer 2 expert 5 has no owner")


def test_a_rank_that_cannot_open_its_part_is_named_on_every_rank():
    t0 = time.monotonic()  # with a 60 s timeout: rank 0 must hear the reason, not wait out a barrier
    results = generate_ranks(2, lambda r: ["--ram-budget", "64KiB"] if r == 1 else [])
    assert time.monotonic() - t0 < 45
    for result in results:
        assert_one_line_error(result, "rank 1 could not start: RAM budget 64.00 KiB holds 0 expert(s)")


def test_a_rank_that_cannot_reach_the_rendezvous():
    port = free_port()  # nobody listens there: rank 1 waits for a rank 0 that never comes
    procs = start_ranks(2, lambda r: ["-m", "moestream", "generate", "-m", MODEL, "-p", "Once", "--shard", "experts",
                                      "--shard-timeout", "3"], port=port,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs[0].kill()  # rank 0 (the rendezvous host) is gone before it listens
    (code, err), = finish(procs[1:], timeout=60)
    assert_one_line_error(subprocess.CompletedProcess([], code, "", err),
                          "rank 1 could not reach the rendezvous at 127.0.0.1:", "within 3 s")
    procs[0].wait()


def test_shard_outside_torchrun_says_how_to_launch():
    result = subprocess.run([sys.executable, "-m", "moestream", "generate", "-m", MODEL, "-p", "Once", "--shard", "experts"],
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in __import__("os").environ.items()
                                 if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")})
    assert_one_line_error(result, "--shard experts runs under torchrun")


def test_a_stalled_rank_fails_the_run_within_the_timeout():
    procs = start_ranks(2, lambda r: ["-m", "moestream", "generate", "-m", MODEL, "-p", "Once", "-n", "250",
                                      "--ignore-eos", "--temp", "0", "--shard", "experts", "--shard-timeout", "3"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert procs[0].stdout.read(20)  # rank 0 is generating
        procs[1].send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        (code, err), = finish(procs[:1], timeout=60)
        assert time.monotonic() - t0 < 30
        assert_one_line_error(subprocess.CompletedProcess([], code, "", err),
                              "expert rank 1 failed during", "no answer within the 3 s timeout")
    finally:
        procs[1].send_signal(signal.SIGCONT)
        procs[1].kill()
        finish(procs[1:], timeout=30)
