"""`moestream serve`: an OpenAI-compatible HTTP server (see moestream/server). Binds to loopback unless told."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from ..engine import Engine
from ..errors import ConfigError
from ..server.app import MAX_BODY_BYTES, create_app
from ..server.metrics import Metrics
from ..server.worker import EngineWorker, Served
from .options import (add_batch_flags, add_cache_flags, add_draft_flags, add_model_flag, add_sampling_flags,
                      batch_fields, engine_config, model_path, sampling_params)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat, completions, models, metrics)")
    add_model_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0 = any free port)")
    p.add_argument("--api-key", default=os.environ.get("MOESTREAM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 (default: $MOESTREAM_API_KEY, else none)")
    add_batch_flags(p)
    add_sampling_flags(p, seed=False, title="sampling defaults (for what a request leaves out)")
    p.add_argument("--shutdown-grace", type=float, default=10.0, metavar="S",
                   help="on SIGTERM, seconds to let running requests finish; new ones get 503 (default %(default)s)")
    p.add_argument("--log-requests", action=argparse.BooleanOptionalAction, default=True,
                   help="one line on stderr per request: id, endpoint, tokens, time to first token, tok/s, finish "
                        "reason (default on)")
    p.add_argument("--ui", action=argparse.BooleanOptionalAction, default=None,
                   help="serve the chat page at / (default: on when bound to this machine only)")
    add_cache_flags(p)
    add_draft_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..server.serve import serve  # uvicorn is imported only when serving

    _check(args)
    _request_log(args.log_requests)
    config = engine_config(args, progress=False, **batch_fields(args))  # a bad flag stops here, before binding
    path = model_path(args)
    metrics = Metrics()
    worker = EngineWorker(lambda: Engine.open(path, config), Path(path).stem, metrics,
                          on_ready=lambda served: _say_ready(served, config.max_batch))
    ui = args.ui if args.ui is not None else args.host in LOOPBACK
    sampling = dataclasses.replace(sampling_params(args), seed=None)  # a seed is per request
    app = create_app(worker, metrics, args.api_key, MAX_BODY_BYTES, ui=ui, sampling=sampling)
    sock = _listen(args.host, args.port)  # bound here: a clear error if taken, and port 0 gets a real port
    host, port = sock.getsockname()[:2]
    print(f"moestream: serving {Path(path).name} on http://{host}:{port}/v1 (loading; GET /health says when ready)",
          file=sys.stderr, flush=True)
    # uvicorn re-raises a SIGTERM it handled once it has shut down; with this handler installed beforehand that
    # re-raise is a no-op, so a graceful stop exits 0 instead of dying by the signal
    signal.signal(signal.SIGTERM, lambda *_: None)
    serve(app, sock, args.shutdown_grace)  # SIGTERM: new requests 503, running ones get --shutdown-grace s
    if worker.load_error:  # the server stopped because the model could not load: say why, and fail
        raise ConfigError(f"cannot serve {Path(path).name}: {worker.load_error}")
    return 0


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _request_log(on: bool) -> None:
    log = logging.getLogger("moestream.requests")
    log.propagate = False
    log.setLevel(logging.INFO if on else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("moestream: %(message)s"))
    log.addHandler(handler)


def _say_ready(served: Served, max_batch: int) -> None:
    print(f"moestream: ready: {served.engine.path.name}, context {served.context_length}, batch up to {max_batch}",
          file=sys.stderr, flush=True)


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if args.host not in LOOPBACK and not args.api_key:
        print(f"moestream: warning: serving on {args.host} without --api-key: anyone who can reach it can use it",
              file=sys.stderr)
