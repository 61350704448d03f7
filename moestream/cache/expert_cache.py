"""The expert cache: `acquire(layer, experts)` hands out expert weights in the order they become ready — hits at
once, misses as their reads complete — all reads of a layer's misses issued together. Memory is a RamPool with a
hard budget; eviction follows a policy; pinned experts are never evicted.

`prefetch(layer, experts)` starts background reads of experts a predictor expects soon, into slots of the same
budget (never evicting what is in use, another unused prefetch, or an expert of the layers between the one being
served and the one prefetched for: they come first). Predicted experts that are already resident are protected: eviction passes
over them until their layer's acquire. An acquire that meets a prefetch still in flight takes its completion
over instead of reading again; prefetches the layer's acquire did not use are dropped then (queued reads
cancelled), and queued ones are cancelled when a demand read finds no slot.

With `verify=True` (--verify-experts, cache/verify.py) every completed read is checked against the expert's
first read this run; a mismatch fails that read like a disk error (slot freed, ExpertChangedError raised to the
acquire that needs it; a prefetch that fails so is dropped and the demand read that follows fails the same way).

Packing (`set_packer`, from the engine: the cache itself knows no kernels): an expert's bytes may be rewritten in
place into the layout the native kernels run fastest (formats/packed.py), once its read is complete and checked.
A rewrite costs about one pass over the bytes, which ~3 uses of the packed layout earn back, so "read" packs every
expert as it lands (for a cache that holds the whole model, where each is read once and used many times) and "hot"
packs an expert once it has been found in the cache REPACK_AFTER times (a streaming cache: most experts are read,
used once or twice and evicted; the hot ones stay and get packed).

`on_acquire(layer, experts)`, when set, is called once an acquire has issued its demand reads: the prefetcher
predicts from there, so its reads queue behind the demand ones.

Single consumer: only the engine thread calls acquire/prefetch/pin; reader threads only complete jobs into queues
(a prefetch's completion goes to whichever queue `_sinks` names when it lands, under `_lock`)."""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from typing import Iterator

from ..errors import ConfigError
from ..telemetry.units import human_bytes, spans
from ..formats.weight import ExpertWeights
from ..store.experts import ExpertStore
from ..store.reader import ExpertReadError, ReadCancelled, ReadJob, Reader
from .entries import CacheStats, Entry
from .layout import SlotLayout
from .policy import LRU, EvictionPolicy
from .tiers import RamPool, Slot
from .verify import ExpertVerifier

Key = tuple[int, int]  # (layer, expert)
Batch = list[tuple[int, ExpertWeights]]  # (index into the requested list, weights)
DEFAULT_CHUNK = 4 << 20  # bytes per read request; several per expert keep the device queue deep
PREFETCH_CHUNK = 1 << 20  # smaller for prefetches: a demand read waits for at most a few of them to clear
READ_TIMEOUT = 120.0  # seconds without any completed read before a step fails instead of hanging
REPACK_AFTER = 2  # "hot" packing: times an expert is found in the cache before its bytes are packed
PACK_MODES = ("off", "read", "hot")


class ExpertCache:
    def __init__(self, store: ExpertStore, reader: Reader, budget: int, n_used: int,
                 policy: EvictionPolicy | None = None, chunk_bytes: int = DEFAULT_CHUNK, verify: bool = False):
        self.store, self.reader, self.chunk_bytes = store, reader, chunk_bytes
        self.verifier = ExpertVerifier(reader.file.path) if verify else None
        self.layout = SlotLayout(store)
        self.pool = RamPool(budget, self.layout.slot_size, store.n_total)
        self.policy = policy or LRU()
        self.stats = CacheStats()
        self._entries: dict[Key, Entry] = {}
        self._last_done = 0.0
        self._lock = threading.Lock()
        self._prefetched: queue.SimpleQueue[ReadJob] = queue.SimpleQueue()  # landed, nobody waiting for them
        self._sinks: dict[Key, queue.SimpleQueue] = {}  # prefetch reads in flight -> where their completion goes
        self._predictions: dict[int, set[int]] = {}  # layer -> experts the predictor named for its next acquire
        self._unused: dict[int, set[Key]] = {}  # layer -> prefetched experts not used yet
        self._protected: dict[int, set[Key]] = {}  # layer -> resident experts predicted for its next acquire
        self._current = 0  # the layer being served
        self.on_acquire = None  # Callable[[layer, experts], None]: the prefetcher
        self.prefetcher = ""  # what predicts, for the run summary ("" when prefetch is off)
        self.pack_mode, self._packer = "off", None
        self._check_budget(budget, n_used)

    def set_packer(self, packer, mode: str) -> None:
        """packer(ExpertWeights) -> ExpertWeights rewrites an expert's bytes in place; mode "read", "hot" or "off"."""
        if mode not in PACK_MODES:
            raise ConfigError(f"unknown packing mode {mode!r}; choose one of {', '.join(PACK_MODES)}")
        self.pack_mode, self._packer = mode, packer if mode != "off" else None

    def _pack(self, entry: Entry) -> None:
        t0 = time.perf_counter()
        entry.weights = self._packer(entry.weights)
        entry.packed = True
        self.stats.packed_experts += 1
        self.stats.pack_seconds += time.perf_counter() - t0

    def _maybe_pack(self, entry: Entry, landed: bool) -> None:
        if self._packer is None or entry.packed or entry.weights is None:
            return
        if self.pack_mode == "read" or (not landed and entry.found >= REPACK_AFTER):
            self._pack(entry)

    def _check_budget(self, budget: int, n_used: int) -> None:
        if self.pool.n_slots < n_used:
            raise ConfigError(
                f"RAM budget {human_bytes(budget)} holds {self.pool.n_slots} expert(s) of "
                f"{human_bytes(self.layout.slot_size)}, but each token uses {n_used} experts per layer: "
                f"give at least {human_bytes(n_used * self.layout.slot_size)}"
            )

    def expert_types(self, layer: int) -> tuple | None:
        """(gate, up, down) quant types every expert of `layer` shares (None where they differ); see ExpertStore."""
        return self.store.expert_types(layer)

    # -- the hot path -------------------------------------------------------------------------------------------

    def acquire(self, layer: int, experts: list[int]) -> Iterator[Batch]:
        """Yields batches of ready experts; a batch stays valid until the next one is requested."""
        self._reap_prefetches()
        self._score_prediction(layer, experts)
        self._current = layer
        self._protected.pop(layer, None)
        done: queue.SimpleQueue[ReadJob] = queue.SimpleQueue()
        hits, waiting, inflight = self._lookup(layer, experts, done)  # inflight: key -> index in `experts`
        self._drop_unused(layer)
        t_issue = time.perf_counter()
        try:
            self._issue(layer, experts, waiting, inflight, done, holding=bool(hits))
            if self.on_acquire is not None:
                self.on_acquire(layer, experts)
            if hits:
                yield [(i, self._entries[(layer, experts[i])].weights) for i in hits]
                self._release([(layer, experts[i]) for i in hits])
                hits = []
            while waiting or inflight:
                self._issue(layer, experts, waiting, inflight, done)
                ready = self._collect(inflight, done)
                yield [(i, self._entries[key].weights) for key, i in ready]
                self._release([key for key, _ in ready])
        finally:
            self._settle(inflight, done)
            self._release([(layer, experts[i]) for i in hits])
            if len(hits) < len(experts):
                self.stats.read_busy_seconds += max(0.0, self._last_done - t_issue)

    def _lookup(self, layer: int, experts: list[int], done: queue.SimpleQueue) -> tuple[list[int], list[int], dict]:
        """Split the request into hits, misses, and prefetches still in flight (taken over: their completion now
        goes to `done`)."""
        hits, misses, claimed = [], [], {}
        for i, e in enumerate(experts):
            key = (layer, e)
            entry = self._entries.get(key)
            if entry is not None and entry.weights is None and not self._claim(key, done):
                self._reap_prefetches()  # it landed just now: account it, then look again
                entry = self._entries.get(key)
            if entry is None:
                misses.append(i)
                continue
            entry.refs += 1
            entry.found += 1
            self._used(key, entry, late=entry.weights is None)
            if entry.weights is not None:
                self._maybe_pack(entry, landed=False)
                hits.append(i)
            else:
                claimed[key] = i
        self.stats.routed.update((layer, e) for e in experts)
        self.stats.lookups += len(experts)
        self.stats.hits += len(hits)
        self.stats.misses += len(experts) - len(hits)
        self.stats.layer_lookups[layer] += len(experts)
        self.stats.layer_hits[layer] += len(hits)
        return hits, misses, claimed

    def _used(self, key: Key, entry: Entry, late: bool) -> None:
        if not entry.pinned:
            self.policy.hit(key)
        if entry.prefetched:
            entry.prefetched = False
            self._unused.get(key[0], set()).discard(key)
            self.stats.prefetch_useful += 1
            self.stats.prefetch_late += late

    def _claim(self, key: Key, done: queue.SimpleQueue) -> bool:
        """Redirect an in-flight prefetch's completion to this acquire; False if it has already landed."""
        with self._lock:
            if key not in self._sinks:
                return False
            self._sinks[key] = done
        job = self._entries[key].job
        if job is not None:
            self.reader.promote(job)  # it is a demand read now
        return True

    def _issue(self, layer: int, experts: list[int], waiting: list[int], inflight: dict, done,
               holding: bool = False) -> None:
        """Start reads for as many waiting experts as slots allow (the rest wait for slots this acquire frees)."""
        while waiting:
            slot = self._free_slot()
            if slot is None:
                if not inflight and not holding:
                    raise ConfigError("the RAM budget has no free slot for a needed expert (all are in use or pinned)")
                return
            i = waiting.pop(0)
            key = (layer, experts[i])
            chunks = self.layout.chunks(layer, experts[i], slot.view, self.chunk_bytes)
            try:
                self.reader.submit(ReadJob(key, chunks, done.put))
            except BaseException:
                self.pool.give(slot)
                raise
            self._entries[key] = Entry(slot, refs=1)
            self.policy.inserted(key)  # at issue, in request order: eviction order does not depend on I/O timing
            inflight[key] = i

    def _collect(self, inflight: dict[Key, int], done: queue.SimpleQueue) -> list[tuple[Key, int]]:
        """Block for at least one finished read, take all finished; raise the first read error (slots freed)."""
        t0 = time.perf_counter()
        jobs = [self._next_done(done)]
        self._last_done = time.perf_counter()
        self.stats.io_wait_seconds += self._last_done - t0
        while not done.empty():
            jobs.append(done.get_nowait())
        ready, error = [], None
        for job in jobs:
            i = inflight.pop(job.key)
            if self._complete(job):
                ready.append((job.key, i))
            else:
                error = error or job.error
        if error is not None:
            self._release([key for key, _ in ready])
            raise error
        return ready

    def _complete(self, job: ReadJob) -> bool:
        """Account a finished read; a failed or cancelled one gives its slot back. Returns success."""
        entry = self._entries[job.key]
        entry.job = None
        if job.error is None and self.verifier is not None:
            job.error = self.verifier.check(job.key, self.layout.data(*job.key, entry.slot.view))
        if isinstance(job.error, ReadCancelled):
            self.stats.prefetch_cancelled += 1
        else:
            self.stats.read_latency.add(job.latency)
        if job.error is not None:
            self.stats.read_errors += not isinstance(job.error, ReadCancelled)
            self._unused.get(job.key[0], set()).discard(job.key)
            del self._entries[job.key]
            self.policy.removed(job.key)
            self.pool.give(entry.slot)
            return False
        self.stats.bytes_read += job.nbytes
        entry.weights = self.layout.weights(*job.key, entry.slot.tensor)
        entry.packed = False
        self._maybe_pack(entry, landed=True)
        return True

    def _settle(self, inflight: dict[Key, int], done: queue.SimpleQueue) -> None:
        """After an error or an abandoned acquire: wait out reads still writing into our slots, keep good ones."""
        while inflight:
            try:
                job = self._next_done(done)
            except ExpertReadError:
                return  # a stuck device: the slots stay with their reads rather than being reused under them
            self._last_done = time.perf_counter()
            inflight.pop(job.key)
            if self._complete(job):
                self._release([job.key])

    def _next_done(self, done: queue.SimpleQueue) -> ReadJob:
        try:
            return done.get(timeout=READ_TIMEOUT)
        except queue.Empty:
            raise ExpertReadError(f"{self.reader.file.path}: no expert read completed in {READ_TIMEOUT:.0f} s "
                                  f"(is the disk stuck or the file on a hung network mount?)") from None

    def _release(self, keys: list[Key]) -> None:
        for key in keys:
            self._entries[key].refs -= 1

    def _free_slot(self, for_prefetch: int | None = None) -> Slot | None:
        """A free slot, else one taken from the policy's first evictable victim, passing over protected experts.
        A prefetch for layer `for_prefetch` evicts no unused prefetch, nothing protected, and no expert of the
        layers between the one being served and its own; a demand read takes a protected expert rather than
        nothing, and then cancels queued prefetches and waits for one in flight to land, rather than failing."""
        slot = self.pool.take() or self._evict(for_prefetch, spare_protected=True)
        if slot is None and for_prefetch is None:
            slot = self._evict(None, spare_protected=False)
            if slot is None and self._pending_prefetches():
                self._drain_prefetches()
                slot = self.pool.take() or self._evict(None, spare_protected=False)
        return slot

    def _evictable(self, key: Key, entry: Entry, for_prefetch: int | None, spare_protected: bool) -> bool:
        if entry.refs or entry.weights is None or entry.pinned:
            return False
        if spare_protected and key in self._protected.get(key[0], ()):
            return False
        return for_prefetch is None or not (entry.prefetched or self._current < key[0] < for_prefetch)

    def _evict(self, for_prefetch: int | None, spare_protected: bool) -> Slot | None:
        for key in self.policy.victims():
            entry = self._entries[key]
            if not self._evictable(key, entry, for_prefetch, spare_protected):
                continue
            del self._entries[key]
            self.policy.removed(key)
            self.stats.evictions += 1
            if entry.prefetched:
                self.stats.prefetch_wasted += 1
                self._unused[key[0]].discard(key)
            return entry.slot
        return None

    # -- prefetch -----------------------------------------------------------------------------------------------

    def prefetch(self, layer: int, experts: list[int]) -> None:
        """Start background reads of `experts` of `layer` that are neither cached nor in flight, while slots
        allow; remembers the prediction to score it against the next acquire of `layer`."""
        self._reap_prefetches()
        self._predictions.setdefault(layer, set()).update(experts)
        for e in experts:
            key = (layer, e)
            if key in self._entries:
                if not self._entries[key].prefetched:
                    self._protected.setdefault(layer, set()).add(key)
                continue
            slot = self._free_slot(for_prefetch=layer)
            if slot is None:
                return
            self._start_prefetch(key, slot)

    def _start_prefetch(self, key: Key, slot: Slot) -> None:
        chunks = self.layout.chunks(*key, slot.view, min(self.chunk_bytes, PREFETCH_CHUNK))
        job = ReadJob(key, chunks, self._route, background=True)
        with self._lock:
            self._sinks[key] = self._prefetched
        self._entries[key] = Entry(slot, prefetched=True, job=job)
        self._unused.setdefault(key[0], set()).add(key)
        try:
            self.reader.submit(job)
        except BaseException:
            with self._lock:
                del self._sinks[key]
            del self._entries[key]
            self._unused[key[0]].discard(key)
            self.pool.give(slot)
            raise
        self.policy.inserted(key)
        self.stats.prefetch_issued += 1

    def _route(self, job: ReadJob) -> None:
        """Reader thread: hand a finished prefetch to whoever waits for it now."""
        with self._lock:  # put under the lock too: a claim then sees the job either in flight or in the queue
            self._sinks.pop(job.key, self._prefetched).put(job)

    def _reap_prefetches(self) -> None:
        """Account prefetches that landed with nobody waiting (errors just drop them: a demand read retries)."""
        while not self._prefetched.empty():
            self._complete(self._prefetched.get_nowait())

    def _pending_prefetches(self) -> bool:
        with self._lock:
            return any(sink is self._prefetched for sink in self._sinks.values())

    def _drain_prefetches(self) -> None:
        """Cancel every unclaimed prefetch still queued, then wait until one lands (its slot or a neighbour's
        frees up)."""
        with self._lock:
            jobs = [self._entries[k].job for k, sink in self._sinks.items() if sink is self._prefetched]
        for job in jobs:
            if job is not None:
                self.reader.cancel(job)
        t0 = time.perf_counter()
        self._complete(self._next_done(self._prefetched))
        self.stats.io_wait_seconds += time.perf_counter() - t0  # a demand read stalled on it: I/O wait too
        self._reap_prefetches()

    def _drop_unused(self, layer: int) -> None:
        """The layer's acquire came and did not use these prefetches: free their slots now (a queued read is
        cancelled; one in flight is dropped when it lands) rather than let them push out experts in use."""
        for key in list(self._unused.get(layer, ())):
            entry = self._entries[key]
            if entry.job is not None:
                self.reader.cancel(entry.job)
                continue
            if entry.refs == 0:
                del self._entries[key]
                self._unused[layer].discard(key)
                self.policy.removed(key)
                self.pool.give(entry.slot)
                self.stats.prefetch_wasted += 1

    def _score_prediction(self, layer: int, experts: list[int]) -> None:
        predicted = self._predictions.pop(layer, None)
        if predicted is None:
            return
        actual = set(experts)
        self.stats.predicted.update({(layer, "tp"): len(predicted & actual), (layer, "fp"): len(predicted - actual),
                                     (layer, "fn"): len(actual - predicted)})

    # -- set-up and inspection ----------------------------------------------------------------------------------

    def resize(self, budget: int, n_used: int) -> None:
        """A new RAM budget, between steps (no acquire running): growing takes effect at once, shrinking evicts
        down to it now, in the policy's order. Refused (ConfigError, nothing changed) when it would not hold a
        token's experts plus the pinned ones."""
        slots = min(budget // self.layout.slot_size, self.store.n_total)
        if slots < n_used + self.pinned_count:
            raise ConfigError(f"RAM budget {human_bytes(budget)} holds {slots} expert(s) of "
                              f"{human_bytes(self.layout.slot_size)}; this model needs at least {n_used} per layer "
                              f"and {self.pinned_count} are pinned")
        if self._pending_prefetches():
            self._finish_prefetches()  # no read may land in a slot being dropped
        self.pool.resize(budget)
        while self.pool.excess_slots:
            slot = self._evict(None, spare_protected=False)
            if slot is None:
                break  # cannot happen between steps: every unpinned, landed expert is evictable
            self.pool.give(slot)  # over budget: dropped

    @property
    def holds_all(self) -> bool:
        """The budget has a slot for every expert of the model."""
        return self.pool.n_slots >= self.store.n_total

    def preload(self, on_layer=None) -> None:
        """Read every expert not cached yet (only when the budget holds them all: otherwise it would evict what it
        just read); on_layer(layer) after each layer, for progress."""
        if not self.holds_all:
            raise ConfigError(f"cannot preload: the budget holds {self.pool.n_slots} of "
                              f"{self.store.n_total} experts")
        routed = Counter(self.stats.routed)  # a preload is not routing: the profile (--stats-json) stays the model's
        for layer in self.store.layers:
            for _ in self.acquire(layer, list(range(self.store.n_experts))):
                pass
            if on_layer is not None:
                on_layer(layer)
        self.stats.routed = routed

    def pin(self, keys: list[Key], n_used: int) -> None:
        """Load `keys` now and keep them for the whole run; the rest of the budget stays for streaming."""
        if len(keys) + n_used > self.pool.n_slots:
            raise ConfigError(f"cannot pin {len(keys)} experts: the budget holds {self.pool.n_slots} and streaming "
                              f"needs {n_used} free")
        by_layer: dict[int, list[int]] = {}
        for layer, e in keys:
            self._check_key(layer, e)
            by_layer.setdefault(layer, []).append(e)
        for layer, experts in by_layer.items():
            for _ in self.acquire(layer, sorted(set(experts))):
                pass
            for e in experts:
                entry = self._entries[(layer, e)]
                entry.pinned = True
                self.policy.removed((layer, e))

    def _check_key(self, layer: int, e: int) -> None:
        if not (layer in self.store.layers and 0 <= e < self.store.n_experts):
            raise ConfigError(f"cannot pin expert {e} of layer {layer}: the model's layers with experts are "
                              f"{spans(self.store.layers)}, {self.store.n_experts} experts each")

    @property
    def resident_experts(self) -> int:
        return sum(1 for e in self._entries.values() if e.weights is not None)

    @property
    def pinned_count(self) -> int:
        return sum(1 for e in self._entries.values() if e.pinned)

    @property
    def used_bytes(self) -> int:
        """Bytes of slots holding an expert or a read in flight (free, warmed and never-made slots are not)."""
        return (self.pool.n_slots - self.pool.free_count) * self.pool.slot_size

    @property
    def allocated_bytes(self) -> int:
        """Bytes of slots made so far (memory this process holds for the cache, in use or not)."""
        return self.pool.allocated_bytes

    @property
    def budget_bytes(self) -> int:
        return self.pool.budget

    def close(self) -> None:
        self.pool.stop_warming()
        self._finish_prefetches()
        self.reader.close()

    def _finish_prefetches(self) -> None:
        """Cancel queued prefetches and wait for those in flight, so no read lands in a slot after close."""
        with self._lock:
            jobs = [self._entries[key].job for key in self._sinks]
        for job in jobs:
            if job is not None:
                self.reader.cancel(job)
        try:
            while self._pending_prefetches():
                self._complete(self._next_done(self._prefetched))
        except ExpertReadError:
            pass  # a stuck device: closing the reader is all that is left to do
        self._reap_prefetches()
