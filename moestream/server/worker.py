"""The engine worker: opens the Engine on a background thread, then runs its scheduler loop on it, the only thread
that touches the model. The HTTP side talks to it through `stream()`, an async iterator per request.

The worker drives the engine's own scheduler (`Engine.scheduler.run`), the step every other command drives too,
so a served request and `moestream generate` with the same seed produce the same tokens. What can fail at load
(the file, the budget, the tokenizer, the chat template) fails here, before /health says ok: it is reported by
/health and every request until `moestream serve` sees it and stops with it (server/serve.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..engine import Engine, EngineRequest, Scheduler, Tokenizer, TokenOut
from ..errors import MoestreamError, QueueFull
from .metrics import Metrics

__all__ = ["EngineWorker", "QueueFull", "Served"]


@dataclass
class Served:
    """What the HTTP side needs once loading is done."""

    engine: Engine
    tokenizer: Tokenizer
    context_length: int
    model_id: str
    created: int


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
        if self.served is not None:
            self.served.engine.close()

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
        self.scheduler.run(self._stop)

    def _load(self) -> Served:
        engine = self._open()
        try:
            _ = engine.template  # read now: a template that cannot load is a load error, not a 500 per request
            served = Served(engine, engine.tokenizer, served_context(engine), self.model_id, int(time.time()))
        except BaseException:
            engine.close()
            raise
        engine.scheduler.on_step = self.metrics.on_step
        self.metrics.attach(engine.cache, lambda: engine.scheduler.load, engine.scheduler.prompt_cache)
        return served

    async def stream(self, req: EngineRequest) -> AsyncIterator[TokenOut]:
        """Submit `req` and yield its events; leaving the iterator early (client gone) cancels the request."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def deliver(ev: TokenOut) -> None:  # engine thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, ev)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                req.cancelled = True

        req.on_event = deliver
        self.scheduler.submit(req)  # QueueFull propagates: the app answers 429
        try:
            while True:
                ev = await queue.get()
                yield ev
                if ev.finish_reason:
                    return
        finally:
            self.scheduler.cancel(req)  # no-op once finished; frees the slot at the next step otherwise
