"""Launching the ranks of an expert-sharded job on loopback: through torchrun, as a user does, or as plain
processes with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) when a test must give one rank
other flags or kill it (torchrun stops the whole job when one rank dies)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}


def torchrun(n: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`torchrun --nnodes 1 --nproc-per-node n --master-port P ARGS` (ARGS: `-m moestream ...` or a script)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(n),
           "--master-port", str(free_port()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(OMP_NUM_THREADS="1"))


def start_ranks(n: int, argv, port: int | None = None, **popen) -> list[subprocess.Popen]:
    """argv(rank) -> the arguments after `python`; each rank a process with torchrun's environment."""
    port = port or free_port()
    procs = []
    for rank in range(n):
        e = env(RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, *argv(rank)], env=e, text=True, **popen))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str]]:
    """(returncode, stderr) per rank, each waited at most `timeout` (killed past it: a hang fails the test)."""
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            err = f"HUNG, killed after {timeout} s\n{err}"
        out.append((p.returncode, err or ""))
    return out
