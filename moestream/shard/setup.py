"""Joining the ranks: torchrun's environment, the gloo process group (every call bounded by the timeout), and the
start-up check that every rank opened the same file and computed the same expert plan.

Why a check at start: a rank with another file (or another quantization of it) would compute other experts'
outputs into correct-looking logits, and a rank with another plan would answer for experts it does not own. Each
rank hashes its file's header (metadata and tensor table, not the weights: seconds on a 400 GB file would be
minutes) and its plan; rank 0 compares and every rank stops with the same one-line error when one disagrees."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass

import torch.distributed as dist

from ..errors import ShardError
from .plan import ShardPlan

HEADER_READ_LIMIT = 1 << 30  # bytes of a header hashed at most (a vocabulary is megabytes, not this)


@dataclass(frozen=True)
class Place:
    """This process among the ranks, from torchrun's environment."""

    rank: int
    world: int
    address: str
    port: int


def place_from_env(env=os.environ) -> Place:
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise ShardError(f"--shard experts runs under torchrun (or with RANK, WORLD_SIZE, MASTER_ADDR and "
                         f"MASTER_PORT set); {', '.join(missing)} unset")
    try:
        place = Place(int(env["RANK"]), int(env["WORLD_SIZE"]), env["MASTER_ADDR"], int(env["MASTER_PORT"]))
    except ValueError:
        raise ShardError(f"RANK, WORLD_SIZE and MASTER_PORT must be integers, got {env['RANK']!r}, "
                         f"{env['WORLD_SIZE']!r}, {env['MASTER_PORT']!r}") from None
    if not 0 <= place.rank < place.world:
        raise ShardError(f"RANK {place.rank} is not one of the {place.world} ranks (WORLD_SIZE)")
    return place


def expert_rank() -> int:
    """This process's rank under --shard experts (0 when not launched as a rank)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def join(place: Place, timeout: float) -> None:
    """Rendezvous at MASTER_ADDR:MASTER_PORT; every later collective and message waits at most `timeout` s."""
    if dist.is_initialized():
        return
    try:
        with _native_log_held():
            dist.init_process_group("gloo", init_method=f"tcp://{_host(place.address)}:{place.port}",
                                    rank=place.rank, world_size=place.world,
                                    timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError, TimeoutError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShardError(f"rank {place.rank} could not reach the rendezvous at {place.address}:{place.port} within "
                         f"{timeout:g} s (--shard-timeout): {_short(reason)}") from None


@contextlib.contextmanager
def _native_log_held():
    """c10d logs a failed connect as a C++ stack dump straight to fd 2; the exception says the same in one line,
    so the process's stderr is set aside while the group forms (and given back untouched on success)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                os.write(2, held.read())


def leave() -> None:
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except RuntimeError:
            pass  # a broken group (a rank died) has nothing left to tear down


def header_digest(gguf) -> str:
    """sha256 of each file's header: its bytes before the first tensor's data (metadata and tensor table)."""
    from ..formats.split import SHARD_BITS

    starts: dict[int, int] = {}
    for info in gguf.tensors.values():
        shard, local = info.offset >> SHARD_BITS, info.offset & ((1 << SHARD_BITS) - 1)
        starts[shard] = min(starts.get(shard, local), local)
    h = hashlib.sha256()
    for i, path in enumerate(gguf.paths):
        with open(path, "rb") as f:
            h.update(f.read(min(starts.get(i, os.path.getsize(path)), HEADER_READ_LIMIT)))
    return h.hexdigest()[:16]


def agree(place: Place, file_digest: str, plan: ShardPlan) -> None:
    """Every rank hands rank 0 what it opened; all stop with one line naming the first rank that differs."""
    mine = {"file": file_digest, "plan": plan.digest()}
    everyone: list = [None] * place.world
    try:
        dist.all_gather_object(everyone, mine)
    except RuntimeError as exc:
        raise ShardError(f"rank {place.rank}: the start-up check failed: {_short(str(exc))}") from None
    first = everyone[0]
    for rank, theirs in enumerate(everyone):
        if theirs["file"] != first["file"]:
            raise ShardError(f"rank {rank} opened a different model file than rank 0 (header hash {theirs['file']} "
                             f"against {first['file']}): start every rank on the same file")
        if theirs["plan"] != first["plan"]:
            raise ShardError(f"rank {rank} computed a different expert plan than rank 0 (plan hash "
                             f"{theirs['plan']} against {first['plan']}): give every rank the same --shard-plan, "
                             f"--profile and rank count")


def ready(place: Place, failure: str | None, what: str) -> None:
    """The start-up barrier that carries a reason: every rank says whether it could open its part (None, or its
    one-line error), and all stop with the first failing rank's own line, so rank 0 names why instead of timing
    out on a barrier the failed rank never reached."""
    everyone: list = [None] * place.world
    try:
        dist.all_gather_object(everyone, failure)
    except RuntimeError as exc:
        raise ShardError(f"rank {place.rank}: {what} failed: {_short(str(exc))}") from None
    for rank, theirs in enumerate(everyone):
        if theirs is not None:
            raise ShardError(f"rank {rank} could not start: {theirs}")


def barrier(place: Place, what: str) -> None:
    try:
        dist.barrier()
    except RuntimeError as exc:
        raise ShardError(f"rank {place.rank}: {what} failed: {_short(str(exc))}") from None


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _short(text: str) -> str:
    text = text.splitlines()[0] if text else text
    return text if len(text) < 240 else text[:240] + "..."
