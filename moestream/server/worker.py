"""The engine worker: loads the model on a background thread, then runs the scheduler loop on it, the only thread
that touches the model. The HTTP side talks to it through `stream()`, an async iterator per request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..engine.loader import LoadedModel
from ..engine.scheduler import EngineRequest, QueueFull, Scheduler, TokenOut
from ..tokenizer import ChatTemplate, Tokenizer
from .metrics import Metrics

__all__ = ["EngineWorker", "QueueFull", "Served"]


@dataclass
class Served:
    """What the HTTP side needs once loading is done."""

    lm: LoadedModel
    tokenizer: Tokenizer
    template: ChatTemplate
    context_length: int
    model_id: str
    created: int


class EngineWorker:
    def __init__(self, load: Callable[[], tuple[LoadedModel, int]], model_id: str, max_batch: int,
                 max_waiting: int, metrics: Metrics):
        """load: () -> (the model, the context length to serve)."""
        self._load, self.model_id = load, model_id
        self.max_batch, self.max_waiting, self.metrics = max_batch, max_waiting, metrics
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
            self.served.lm.close()

    def halt(self) -> None:
        """Any thread, without waiting: take no new requests, and end every running or waiting one with
        finish_reason 'cancelled' at the next step (the engine thread then leaves its loop)."""
        self.closing = True
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.wake()

    def _main(self) -> None:
        try:
            lm, ctx = self._load()
            self.scheduler = Scheduler(lm.model, ctx, self.max_batch, self.max_waiting, on_step=self.metrics.on_step)
            self.metrics.attach(lm.cache, lambda: self.scheduler.load)
            self.served = Served(lm, Tokenizer.from_gguf(lm.gguf), ChatTemplate.from_gguf(lm.gguf), ctx,
                                 self.model_id, int(time.time()))
        except Exception as exc:  # reported by /health and every request; the process stays up to say so
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        self.scheduler.run(self._stop)

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
