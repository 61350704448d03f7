"""`moestream serve --config FILE` reloaded on SIGHUP: what changes live, and how.

The file is read and checked whole first (cli/config_file.py, then the same EngineConfig and SamplingParams
checks as at start); any error keeps every running setting and logs why. Then, by what changed:
- sampling defaults, API keys, log level and request log: for every request from now on (running ones keep what
  they started with; a refused old key is refused from the next request);
- batch and queue limits, the cache's RAM budget and prefetch settings: on the engine thread between two steps
  (engine/live.py); a budget the cache refuses (below a token's experts) keeps everything as it was;
- the model file, or anything else that shapes what is loaded (context, threads, reader, policy, pins, ...): the
  new engine is opened in the background while the old one serves (both in memory meanwhile), then the server
  switches once the old one's requests have ended; new requests wait for the switch, none fails. A model that
  cannot load is logged and the old one goes on;
- host, port, UI and shutdown grace: logged as taking effect at the next start."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from ..engine import Engine, EngineConfig, SamplingParams, apply_live, live_changes, reload_fields
from ..errors import MoestreamError
from .config_file import resolve
from .options import batch_fields, engine_config, model_path, sampling_params

LOG = logging.getLogger("moestream.server")
LOG_LEVELS = ("debug", "info", "warning", "error")
RESTART_ONLY = ("host", "port", "ui", "shutdown_grace", "config")
NOT_SETTINGS = ("run", "argv", "command")
STEP_WAIT_S = 600.0  # the longest a reload waits for the engine to reach the end of a step


def api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """--api-key (each time given), else $MOESTREAM_API_KEY, else none."""
    env = os.environ.get("MOESTREAM_API_KEY")
    return tuple(args.api_key) if args.api_key else ((env,) if env else ())


def server_sampling(args: argparse.Namespace) -> SamplingParams:
    """The sampling defaults of requests (a seed is per request)."""
    return dataclasses.replace(sampling_params(args), seed=None)


def set_log_levels(level: str, log_requests: bool) -> None:
    """moestream's log on stderr as 'moestream: ...' lines, from `level` up; the request log at info unless off."""
    root = logging.getLogger("moestream")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("moestream: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level.upper())
    logging.getLogger("moestream.requests").setLevel(logging.INFO if log_requests else logging.WARNING)


class Reloader:
    """Holds the settings the server runs on; `reload()` (SIGHUP, a worker thread) re-reads --config."""

    def __init__(self, args: argparse.Namespace, cli_argv: list[str], config: EngineConfig, path: str, app,
                 worker, parser: argparse.ArgumentParser):
        self.args, self.cli_argv, self.config, self.path = args, cli_argv, config, path
        self.app, self.worker, self.parser = app, worker, parser

    def reload(self) -> None:
        if not self.args.config:
            LOG.warning("SIGHUP: nothing to reload (start the server with --config FILE)")
            return
        try:
            self._reload()
        except Exception as exc:  # a reload must never take the server down
            LOG.error(f"reload of {self.args.config} failed ({type(exc).__name__}: {exc}); still running the "
                      "settings from before")

    def _reload(self) -> None:
        try:
            new, config, path = self._read()
        except MoestreamError as exc:
            LOG.error(f"reload refused, still running the settings from before: {exc}")
            return
        changed = [k for k in vars(new) if k not in NOT_SETTINGS and getattr(new, k) != getattr(self.args, k, None)]
        if not changed:
            LOG.info(f"reloaded {self.args.config}: nothing changed")
            return
        switch = path != self.path or bool(reload_fields(self.config, config))
        if not switch and live_changes(self.config, config) and not self._apply_live(config):
            return
        self.app.reconfigure(api_keys(new), server_sampling(new))
        set_log_levels(new.log_level, new.log_requests)
        LOG.warning(f"reloaded {self.args.config}: {', '.join(_flag(k) for k in changed)} changed")
        later = [_flag(k) for k in changed if k in RESTART_ONLY]
        if later:
            LOG.warning(f"{', '.join(later)} take effect at the next start")
        self.args = new
        if switch:
            self._switch(path, config)
        else:
            self.config = config

    def _read(self) -> tuple[argparse.Namespace, EngineConfig, str]:
        new = resolve(self.args.config, self.cli_argv, self.parser)
        config = engine_config(new, progress=False, **batch_fields(new))
        server_sampling(new)  # checked now: a bad value is refused before anything changes
        return new, config, self.path if new.model == self.args.model else model_path(new)

    def _apply_live(self, config: EngineConfig) -> bool:
        """Budget, limits, prefetch, between two steps; False (logged, nothing changed) if the engine refuses."""
        try:
            self.worker.between_steps(lambda engine: apply_live(engine, config)).result(timeout=STEP_WAIT_S)
        except MoestreamError as exc:
            LOG.error(f"reload refused, still running the settings from before: {exc}")
            return False
        return True

    def _switch(self, path: str, config: EngineConfig) -> None:
        LOG.warning(f"loading {Path(path).name} in the background; requests go on meanwhile")

        def done(reason: str | None) -> None:
            if reason is not None:
                LOG.error(f"cannot load {Path(path).name} ({reason}); still serving {Path(self.path).name}")
                return
            self.config, self.path = config, path
            LOG.warning(f"now serving {Path(path).name}")

        self.worker.switch_model(lambda: Engine.open(path, config), Path(path).stem, done)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
