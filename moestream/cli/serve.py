"""`moestream serve`: an OpenAI-compatible HTTP server (see moestream/server). Binds to loopback unless told."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

from ..engine import Engine
from ..errors import ConfigError
from ..server.app import MAX_BODY_BYTES, create_app
from ..server.metrics import Metrics
from ..server.worker import EngineWorker, Served
from .config_file import resolve, serve_parser
from .options import (add_batch_flags, add_cache_flags, add_draft_flags, add_model_flag, add_sampling_flags,
                      batch_fields, engine_config, model_path, run_as_expert_rank)
from .serve_reload import LOG_LEVELS, Reloader, api_keys, server_sampling, set_log_levels


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat, completions, models, metrics)")
    add_serve_flags(p)
    p.set_defaults(run=run)


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """Every serve flag (also the keys of a --config file: cli/config_file.py)."""
    add_model_flag(p)
    p.add_argument("--config", metavar="FILE",
                   help="TOML file of these flags' settings (keys: the flag names without dashes); flags given "
                        "here win over it. SIGHUP re-reads it and applies what changed without dropping a request")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0 = any free port)")
    p.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on /v1; give it again for more keys (default: "
                        "$MOESTREAM_API_KEY, else none)")
    add_batch_flags(p)
    add_sampling_flags(p, seed=False, title="sampling defaults (for what a request leaves out)")
    p.add_argument("--shutdown-grace", type=float, default=10.0, metavar="S",
                   help="on SIGTERM, seconds to let running requests finish; new ones get 503 (default %(default)s)")
    p.add_argument("--log-requests", action=argparse.BooleanOptionalAction, default=True,
                   help="one line on stderr per request: id, endpoint, tokens, time to first token, tok/s, finish "
                        "reason (default on)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                   help="least severe message logged on stderr (default %(default)s)")
    p.add_argument("--ui", action=argparse.BooleanOptionalAction, default=None,
                   help="serve the chat page at / (default: on when bound to this machine only)")
    add_cache_flags(p)
    add_draft_flags(p)


def run(args: argparse.Namespace) -> int:
    from ..server.serve import serve  # uvicorn is imported only when serving

    cli_argv = _own_argv(args)
    if args.config:
        args = resolve(args.config, cli_argv, serve_parser(add_serve_flags))
        if run_as_expert_rank(args):  # `shard = "experts"` in the file: ranks > 0 serve experts, not HTTP
            return 0
    _check(args)
    set_log_levels(args.log_level, args.log_requests)
    config = engine_config(args, progress=False, **batch_fields(args))  # a bad flag stops here, before binding
    path = model_path(args)
    metrics = Metrics()
    worker = EngineWorker(lambda: Engine.open(path, config), Path(path).stem, metrics,
                          on_ready=lambda served: _say_ready(served, config.max_batch))
    ui = args.ui if args.ui is not None else args.host in LOOPBACK
    app = create_app(worker, metrics, api_keys(args), MAX_BODY_BYTES, ui=ui, sampling=server_sampling(args))
    sock = _listen(args.host, args.port)  # bound here: a clear error if taken, and port 0 gets a real port
    host, port = sock.getsockname()[:2]
    print(f"moestream: serving {Path(path).name} on http://{host}:{port}/v1 (loading; GET /health says when ready)",
          file=sys.stderr, flush=True)
    reloader = Reloader(args, cli_argv, config, path, app, worker, serve_parser(add_serve_flags))
    # uvicorn re-raises a SIGTERM it handled once it has shut down; with this handler installed beforehand that
    # re-raise is a no-op, so a graceful stop exits 0 instead of dying by the signal
    signal.signal(signal.SIGTERM, lambda *_: None)
    serve(app, sock, args.shutdown_grace, on_hangup=reloader.reload)  # SIGTERM: drain; SIGHUP: reload --config
    if worker.load_error:  # the server stopped because the model could not load: say why, and fail
        raise ConfigError(f"cannot serve {Path(path).name}: {worker.load_error}")
    return 0


def _own_argv(args: argparse.Namespace) -> list[str]:
    """The flags given to `serve` on the command line (they win over a --config file, on every reload too)."""
    argv = getattr(args, "argv", None) or []
    return argv[argv.index("serve") + 1:] if "serve" in argv else []


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


def _say_ready(served: Served, max_batch: int) -> None:
    print(f"moestream: ready: {served.engine.path.name}, context {served.context_length}, batch up to {max_batch}",
          file=sys.stderr, flush=True)


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if args.host not in LOOPBACK and not api_keys(args):
        print(f"moestream: warning: serving on {args.host} without --api-key: anyone who can reach it can use it",
              file=sys.stderr)
