"""Running the app under uvicorn, with moestream's shutdown rules.

On SIGTERM (or a first Ctrl-C) uvicorn alone would close the listening socket at once, so that a new request met
a refused connection, and at the end of its grace period it would cancel the running requests' tasks, cutting a
stream off mid-event with no word of why. Here the first signal starts a drain instead: the listener stays
open, new requests get 503 and /health says 'closing', the requests in flight may finish for up to the grace
period, then the engine ends the rest (a stream gets a last chunk carrying an error object, then `data: [DONE]`;
a whole reply is a 503), and only then does uvicorn shut down, with `FLUSH_S` for those last answers to go out.
A second signal stops at once. SIGHUP calls `on_hangup` (moestream serve --config re-reads its file) on a thread
of its own, one at a time, while the server goes on serving.

A model that cannot load stops the server too (the command then prints the reason and exits non-zero): a server
that answers every request 503 forever, with the reason only in /health, is no use to anyone starting it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import socket
from collections.abc import Callable

import uvicorn

from .app import ServerApp

FLUSH_S = 5.0  # after the drain: time for the answers of cut-off requests to be written
LOAD_POLL_S = 0.1


def serve(app: ServerApp, sock: socket.socket, grace: float, on_hangup: Callable[[], None] | None = None) -> None:
    """Serve `app` on the bound, listening `sock` until a signal and its drain have ended. on_hangup: called on
    a worker thread at each SIGHUP (the reload), while serving goes on."""
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=FLUSH_S)
    _DrainingServer(config, app, grace, on_hangup).run(sockets=[sock])


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: ServerApp, grace: float, on_hangup=None):
        super().__init__(config)
        self.served_app, self.grace, self.on_hangup = app, grace, on_hangup
        self._reloads: set[asyncio.Future] = set()  # kept: the loop holds only weak references
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain: asyncio.Task | None = None  # kept: the loop holds only a weak reference to a task

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        watch = self._loop.create_task(self._stop_if_loading_fails())
        if self.on_hangup is not None:
            self._loop.add_signal_handler(signal.SIGHUP, self._hangup)
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

    def _hangup(self) -> None:
        """SIGHUP: reload on a worker thread (it may wait for a step to end); one reload at a time, in order."""
        reload = self._loop.run_in_executor(self._reloader(), self.on_hangup)
        self._reloads.add(reload)
        reload.add_done_callback(self._reloads.discard)

    def _reloader(self):
        if not hasattr(self, "_pool"):
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="moestream-reload")
        return self._pool

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
