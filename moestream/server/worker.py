"""The engine worker: opens the Engine on a background thread, then runs its scheduler loop on it, the only thread
that touches the model. The HTTP side talks to it through `stream()`, an async iterator per request.

The worker drives the engine's own scheduler (`Engine.scheduler.run`), the step every other command drives too,
so a served request and `moestream generate` with the same seed produce the same tokens. What can fail at load
(the file, the budget, the tokenizer, the chat template) fails here, before /health says ok: it is reported by
/health and every request until `moestream serve` sees it and stops with it (server/serve.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass

from ..engine import Engine, EngineRequest, Scheduler, Tokenizer, TokenOut
from ..errors import MoestreamError, QueueFull
from .metrics import Metrics

__all__ = ["EngineWorker", "ModelSwitched", "QueueFull", "Served"]

LOG = logging.getLogger("moestream.server")
SWITCH_POLL_S = 0.02


class ModelSwitched(Exception):
    """The request was prepared for a model the server no longer serves: prepare it again (app.py does)."""


@dataclass
class Served:
    """What the HTTP side needs once loading is done."""

    engine: Engine
    tokenizer: Tokenizer
    context_length: int
    model_id: str
    created: int
    aliases: tuple[str, ...] = ()  # the names of the models a reload switched away from: clients keep working


def served_context(engine: Engine) -> int:
    """The server's context: the engine's, but never past the model's own (where `generate -c` may go)."""
    return min(engine.context_length, engine.args.context_length)


class EngineWorker:
    def __init__(self, open_engine: Callable[[], Engine], model_id: str, metrics: Metrics,
                 on_ready: Callable[[Served], None] | None = None):
        """open_engine: () -> the Engine to serve (its EngineConfig sets batch and queue limits)."""
        self._open, self.model_id, self.metrics, self._on_ready = open_engine, model_id, metrics, on_ready
        self.served: Served | None = None
        self.scheduler: Scheduler | None = None
        self.load_error: str | None = None
        self.closing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="moestream-engine", daemon=True)
        self._next: Served | None = None  # a model loaded by `switch_model`, waiting for the running ones to end
        self._submit = threading.Lock()  # a submit and the switch never interleave
        self._switched: Callable[[str | None], None] = lambda reason: None

    @property
    def ready(self) -> bool:
        return self.served is not None and not self.closing

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Take no new requests; let running ones finish for up to `grace` seconds, then cancel the rest."""
        self.closing = True
        deadline = time.monotonic() + grace
        while self.scheduler is not None and any(self.scheduler.load) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.halt()
        self._thread.join(timeout=30)
        for served in (self.served, self._next):
            if served is not None:
                served.engine.close()

    def halt(self) -> None:
        """Any thread, without waiting: take no new requests, and end every running or waiting one with
        finish_reason 'cancelled' at the next step (the engine thread then leaves its loop)."""
        self.closing = True
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.wake()

    def _main(self) -> None:
        try:
            served = self._load()
        except Exception as exc:  # reported by /health and every request, and `serve` stops with it
            self.load_error = str(exc) if isinstance(exc, MoestreamError) else f"{type(exc).__name__}: {exc}"
            return
        self.scheduler, self.served = served.engine.scheduler, served
        if self._on_ready is not None:
            self._on_ready(served)
        while not self._stop.is_set():
            self.scheduler.run(self._stop, until=self._switch_due)
            if self._next is not None:
                self._switch()

    # ---- live changes (moestream serve's reload) -------------------------------------------------------------

    def between_steps(self, task: Callable[[Engine], None]) -> Future:
        """Run task(engine) on the engine thread between two steps; the Future holds its result or exception."""
        done: Future = Future()

        def run() -> None:
            try:
                done.set_result(task(self.served.engine))
            except BaseException as exc:  # the caller reads it from the Future; the engine goes on
                done.set_exception(exc)

        self.scheduler.between_steps(run)
        return done

    @property
    def switching(self) -> bool:
        """A new model is loaded and waits for the running requests to end: new requests wait for it."""
        return self._next is not None

    def switch_model(self, open_engine: Callable[[], Engine], model_id: str,
                     on_done: Callable[[str | None], None]) -> None:
        """Load another model in the background while this one serves, then switch to it between steps once the
        requests it runs have ended (new ones wait meanwhile, none fail). on_done(None) once switched, or
        on_done(reason) if it could not load (this model keeps serving)."""
        def load() -> None:
            try:
                served = self._load(open_engine, model_id, attach=False)
            except Exception as exc:
                on_done(str(exc) if isinstance(exc, MoestreamError) else f"{type(exc).__name__}: {exc}")
                return
            self._next, self._switched = served, on_done
            self.scheduler.wake()

        threading.Thread(target=load, name="moestream-model-load", daemon=True).start()

    def _switch_due(self) -> bool:
        return self._next is not None and self.scheduler.load == (0, 0)

    def _switch(self) -> None:
        """Engine thread, old scheduler idle: serve the new model; the old one is closed."""
        with self._submit:
            if self.scheduler.load != (0, 0):  # a request got in before the lock: finish it first
                return
            old, new = self.served, self._next
            new.aliases = (*old.aliases, old.model_id, old.engine.path.name)
            self._attach(new.engine)
            self.scheduler, self.served, self.model_id, self._next = new.engine.scheduler, new, new.model_id, None
        old.engine.close()
        self._switched(None)

    def _load(self, open_engine: Callable[[], Engine] | None = None, model_id: str | None = None,
              attach: bool = True) -> Served:
        engine = (open_engine or self._open)()
        try:
            _ = engine.template  # read now: a template that cannot load is a load error, not a 500 per request
            served = Served(engine, engine.tokenizer, served_context(engine), model_id or self.model_id,
                            int(time.time()))
        except BaseException:
            engine.close()
            raise
        if attach:
            self._attach(engine)
        return served

    def _attach(self, engine: Engine) -> None:
        engine.scheduler.on_step = self.metrics.on_step
        self.metrics.attach(engine.cache, lambda: engine.scheduler.load, engine.scheduler.prompt_cache,
                            engine.shard_ranks)

    async def settled(self) -> None:
        """Wait while a model switch is due (a request arriving then runs on the new model)."""
        while self._next is not None and not self.closing:
            await asyncio.sleep(SWITCH_POLL_S)

    async def stream(self, req: EngineRequest, served: Served | None = None) -> AsyncIterator[TokenOut]:
        """Submit `req` (prepared for `served`, default the current model) and yield its events; leaving the
        iterator early (client gone) cancels the request. ModelSwitched: `served` is no longer the model."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def deliver(ev: TokenOut) -> None:  # engine thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, ev)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                req.cancelled = True

        req.on_event = deliver
        with self._submit:
            if served is not None and served is not self.served:
                raise ModelSwitched()
            scheduler = self.scheduler
            scheduler.submit(req)  # QueueFull propagates: the app answers 429
        try:
            while True:
                ev = await queue.get()
                yield ev
                if ev.finish_reason:
                    return
        finally:
            scheduler.cancel(req)  # no-op once finished; frees the slot at the next step otherwise
