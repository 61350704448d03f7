"""`moestream serve --config FILE`: the server's flags in a TOML file, one key per flag.

A key is a flag's long name without the dashes (`ram-budget = "8GiB"`, `temp = 0.7`, `api-key = ["k1", "k2"]`,
`prefetch = true`; `ram_budget` is read as `ram-budget`), so every flag has a key and a new flag gets one for
free, with the same checks and defaults. The file is turned into the command line it stands for and parsed by
the serve command's own parser, before the flags given on the command line: a flag given there wins over the
file, on every reload too. A key that is no flag, a value of the wrong kind or an invalid value is a
ConfigError naming the file and the key, never an exit from inside argparse: a server reloading a broken file
must keep running on the old one."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError

NOT_IN_FILE = ("config", "help")  # the file cannot name itself, nor ask for help


class _RaisingParser(argparse.ArgumentParser):
    """argparse prints usage and exits on a bad value; a reload needs an exception instead."""

    def error(self, message: str):
        raise ConfigError(message)


def serve_parser(add_flags: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """A parser with the serve command's flags (`add_flags` adds them) that raises ConfigError."""
    p = _RaisingParser(prog="moestream serve", add_help=False)
    add_flags(p)
    return p


def resolve(path: str | Path, cli_argv: list[str], parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The serve settings of `path` with the command line's flags (`cli_argv`) over them."""
    argv = file_argv(path, parser)
    try:
        return parser.parse_args(argv + cli_argv)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def file_argv(path: str | Path, parser: argparse.ArgumentParser) -> list[str]:
    """The command line `path`'s keys stand for, in the file's order."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    argv: list[str] = []
    for key, value in data.items():
        argv += _flag(path, key, value, parser)
    return argv


def _flag(path, key: str, value, parser: argparse.ArgumentParser) -> list[str]:
    name = key.replace("_", "-")
    action = parser._option_string_actions.get(f"--{name}")
    if action is None or name in NOT_IN_FILE:
        raise ConfigError(f"{path}: unknown key {key!r} (keys are `moestream serve` flags without the dashes, e.g. "
                          "ram-budget, temp, api-key)")
    option = f"--{name}"
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} is a switch: write {key} = true or false, not {value!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [option if value else f"--no-{name}"]
        return [option] if value else []
    if isinstance(value, list):
        return _list_flag(path, key, option, value, action)
    return [option, _scalar(path, key, value)]


def _list_flag(path, key: str, option: str, values: list, action: argparse.Action) -> list[str]:
    items = [_scalar(path, key, v) for v in values]
    if isinstance(action, argparse._AppendAction):
        return [x for item in items for x in (option, item)]
    if action.nargs in ("+", "*"):
        return [option, *items] if items else []
    raise ConfigError(f"{path}: {key} takes one value, not a list")


def _scalar(path, key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{path}: {key} = {value!r}: expected a string or a number")
    return str(value)
