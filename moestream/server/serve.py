"""Running the app under uvicorn, with moestream's shutdown rules.

On SIGTERM (or a first Ctrl-C) uvicorn alone would close the listening socket at once, so that a new request met
a refused connection, and at the end of its grace period it would cancel the running requests' tasks, cutting a
stream off mid-event with no word of why. Here the first signal starts a drain instead: the listener stays
open, new requests get 503 and /health says 'closing', the requests in flight may finish for up to the grace
period, then the engine ends the rest (a stream gets a last chunk carrying an error object, then `data: [DONE]`;
a whole reply is a 503), and only then does uvicorn shut down, with `FLUSH_S` for those last answers to go out.
A second signal stops at once.

A model that cannot load stops the server too (the command then prints the reason and exits non-zero): a server
that answers every request 503 forever, with the reason only in /health, is no use to anyone starting it."""

from __future__ import annotations

import asyncio
import signal
import socket

import uvicorn

from .app import ServerApp

FLUSH_S = 5.0  # after the drain: time for the answers of cut-off requests to be written
LOAD_POLL_S = 0.1


def serve(app: ServerApp, sock: socket.socket, grace: float) -> None:
    """Serve `app` on the bound, listening `sock` until a signal and its drain have ended."""
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=FLUSH_S)
    _DrainingServer(config, app, grace).run(sockets=[sock])


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: ServerApp, grace: float):
        super().__init__(config)
        self.served_app, self.grace = app, grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain: asyncio.Task | None = None  # kept: the loop holds only a weak reference to a task

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        watch = self._loop.create_task(self._stop_if_loading_fails())
        try:
            await super().serve(sockets)
        finally:
            watch.cancel()

    async def _stop_if_loading_fails(self) -> None:
        worker = self.served_app.worker
        while worker.served is None and not worker.load_error:
            await asyncio.sleep(LOAD_POLL_S)
        if worker.load_error:
            self.should_exit = True

    def handle_exit(self, sig: int, frame) -> None:
        # a signal handler: it runs between two bytecodes of the event loop's own thread, so it only schedules
        if self._loop is None or self.should_exit or sig not in (signal.SIGTERM, signal.SIGINT):
            return super().handle_exit(sig, frame)
        self._loop.call_soon_threadsafe(self._stop_now if self._draining else self._start_drain)
        self._draining = True

    def _start_drain(self) -> None:
        self._drain = self._loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        await self.served_app.drain(self.grace)
        self.should_exit = True

    def _stop_now(self) -> None:
        self.served_app.worker.halt()
        self.should_exit = True
