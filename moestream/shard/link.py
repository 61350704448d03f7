"""Rank 0's end of the expert ranks: one exchange per MoE layer (send every remote rank its rows at once, compute
the local experts meanwhile, then gather), a heartbeat that pings idle ranks, and the first failure kept as the
link's `fault`.

Rules, and why: one lock orders every message (the decode thread's exchanges, the heartbeat's pings), because a
pair of ranks reads its messages in the order sent. A failure (a closed connection, a timeout) leaves the process
group unusable, so it is final: the fault names the rank, every later exchange raises it at once, and /health
reports it (the server stays up and says why). Timing per rank: `exchange` is send to reply, `waited` the part rank
0 spent blocked after its own experts (the time the network and the remote rank cost the step)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..errors import ShardError
from . import wire

HEARTBEAT_SECONDS = 1.0  # every rank is pinged this often, busy or idle: its counters for /metrics, and a sign of
# life both ways (an idle rank gives up on rank 0 after the timeout)


@dataclass
class RankTraffic:
    """Rank 0's view of one expert rank."""

    exchanges: int = 0
    rows: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    exchange_seconds: float = 0.0
    waited_seconds: float = 0.0
    remote: wire.RankCounters = field(default_factory=wire.RankCounters)


class Pending:
    """An exchange in flight: `wait()` -> [(rank, rows)] (float32 [n, D] per rank, the order sent), once."""

    def __init__(self, link: "ShardLink", layer: int, works: list, replies: dict[int, torch.Tensor], t0: float):
        self.link, self.layer, self.works, self.replies, self.t0 = link, layer, works, replies, t0
        self.open = True

    def wait(self) -> list[tuple[int, torch.Tensor]]:
        try:
            waited = time.perf_counter()
            for rank, work in self.works:
                self.link.wait(work, rank, f"layer {self.layer}")
            now = time.perf_counter()
            for rank, reply in self.replies.items():
                t = self.link.traffic[rank]
                t.exchanges += 1
                t.bytes_received += reply.numel() * 4
                t.exchange_seconds += now - self.t0
                t.waited_seconds += now - waited
            return list(self.replies.items())
        finally:
            if self.open:
                self.link.flush_hints()  # the ranks are back in their loops: their read-ahead can start
            self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            self.link.lock.release()


class ShardLink:
    def __init__(self, world: int, n_experts: int, d_model: int, timeout: float):
        self.world, self.n_experts, self.d_model, self.timeout = world, n_experts, d_model, timeout
        self.lock = threading.Lock()
        self.fault: str | None = None
        self.traffic = {r: RankTraffic() for r in range(1, world)}
        self._hints: list[tuple[int, int, list[int]]] = []  # (rank, layer, experts) not yet sent
        self._hint_lock = threading.Lock()
        self._hints_sent: list = []  # (rank, work, header): isends that must complete before the next flush
        self._last = time.monotonic()
        self._closed = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="moestream-shard-heartbeat", daemon=True)
        self._beat.start()

    # ---- the decode thread -------------------------------------------------------------------------------------

    def exchange(self, layer: int, requests: dict[int, tuple[list[int], list[int], torch.Tensor]]) -> Pending:
        """requests: rank -> (expert ids, rows per expert, payload float32 [rows, D + 1]); sent now, replies later.
        The link is held until the Pending is waited on or closed."""
        self.lock.acquire()
        try:
            self._check()
            self.flush_hints()
            self._check()
            t0 = time.perf_counter()
            works, replies = [], {}
            for rank, (experts, counts, payload) in requests.items():
                h = wire.header(wire.LAYER, self.n_experts, layer, experts, counts)
                what = f"layer {layer}"
                works.append((rank, self._post(dist.isend, h, rank, what)))
                works.append((rank, self._post(dist.isend, payload, rank, what)))
                replies[rank] = torch.empty(payload.shape[0], self.d_model, dtype=torch.float32)
                works.append((rank, self._post(dist.irecv, replies[rank], rank, what)))
                t = self.traffic[rank]
                t.rows += payload.shape[0]
                t.bytes_sent += h.numel() * 8 + payload.numel() * 4
            return Pending(self, layer, works, replies, t0)
        except BaseException:
            self.lock.release()
            raise

    def hint(self, rank: int, layer: int, experts: list[int]) -> None:
        """Ask `rank` to read `layer`'s `experts` ahead: sent now if the link is free, else (the heartbeat holds it,
        or an exchange of this thread does) queued and sent ahead of the next exchange or ping, or once the
        exchange in flight has its replies."""
        with self._hint_lock:
            self._hints.append((rank, layer, list(experts)))
        if self.lock.acquire(blocking=False):
            try:
                self.flush_hints()
            finally:
                self.lock.release()

    def flush_hints(self) -> None:
        """Send the queued hints (the lock held): one PREFETCH header each, not waited for here; the previous
        flush's sends are completed first (each was received by a rank back in its loop, so this does not wait on
        compute). A failure is kept as the fault; the exchange that follows reports it."""
        if self.fault is not None or self._closed.is_set():
            return
        with self._hint_lock:
            hints, self._hints = self._hints, []
        try:
            for rank, work, _ in self._hints_sent:
                self.wait(work, rank, "a prefetch hint")
            self._hints_sent = []
            for rank, layer, experts in hints:
                h = wire.header(wire.PREFETCH, self.n_experts, layer, experts, [0] * len(experts))
                self._hints_sent.append((rank, self._post(dist.isend, h, rank, "a prefetch hint"), h))
                self.traffic[rank].bytes_sent += h.numel() * 8
        except ShardError:
            pass  # kept in self.fault; the exchange that follows raises it

    def _post(self, op, tensor: torch.Tensor, rank: int, what: str):
        """dist.isend/irecv; gloo raises at once (not at wait) on a connection it already saw close."""
        try:
            return op(tensor, rank)
        except RuntimeError as exc:
            self.fault = self.fault or f"expert rank {rank} failed during {what}: {_reason(exc, self.timeout)}"
            raise ShardError(self.fault) from None

    def wait(self, work, rank: int, what: str) -> None:
        try:
            work.wait()
        except RuntimeError as exc:
            self.fault = self.fault or f"expert rank {rank} failed during {what}: {_reason(exc, self.timeout)}"
            raise ShardError(self.fault) from None

    def _check(self) -> None:
        if self.fault is not None:
            raise ShardError(self.fault)
        if self._closed.is_set():
            raise ShardError("the expert ranks were shut down")

    # ---- heartbeat and counters --------------------------------------------------------------------------------

    def ping(self) -> None:
        """Refresh every rank's counters (and prove it alive); raises ShardError on a failed rank."""
        with self.lock:
            self._check()
            self._ping_locked()

    def _ping_locked(self) -> None:
        self.flush_hints()
        replies = {}
        works = []
        for rank in self.traffic:
            works.append((rank, self._post(dist.isend, wire.header(wire.PING, self.n_experts), rank, "a heartbeat")))
            replies[rank] = torch.empty(wire.STAT_FIELDS, dtype=torch.float64)
            works.append((rank, self._post(dist.irecv, replies[rank], rank, "a heartbeat")))
        for rank, work in works:
            self.wait(work, rank, "a heartbeat")
        for rank, reply in replies.items():
            self.traffic[rank].remote = wire.RankCounters.unpack(reply)
        self._last = time.monotonic()

    def _heartbeat(self) -> None:
        while not self._closed.wait(HEARTBEAT_SECONDS / 4):
            if self.fault is not None:
                return
            if time.monotonic() - self._last < HEARTBEAT_SECONDS or not self.lock.acquire(timeout=0.5):
                continue
            try:
                if not self._closed.is_set() and self.fault is None:
                    self._ping_locked()
            except ShardError:
                pass  # kept in self.fault
            finally:
                self.lock.release()

    def close(self) -> None:
        """Final counters, then STOP to every rank (they leave their loops and exit)."""
        if self._closed.is_set():
            return
        with self.lock:
            try:
                if self.fault is None:
                    self._ping_locked()
                    for rank in self.traffic:
                        dist.send(wire.header(wire.STOP, self.n_experts), rank)
            except (ShardError, RuntimeError):
                pass  # a failed rank: nothing to stop
            self._closed.set()
        self._beat.join(timeout=5)


def _reason(exc: RuntimeError, timeout: float) -> str:
    text = str(exc)
    if "Timed out" in text or "timeout" in text.lower():
        return f"no answer within the {timeout:g} s timeout (--shard-timeout)"
    if "closed by peer" in text or "Connection reset" in text or "closure" in text:
        return "its connection closed (the process died or was stopped)"
    return text.splitlines()[0][:200]
