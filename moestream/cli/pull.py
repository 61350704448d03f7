"""`moestream pull | list | rm`: GGUF models from the Hugging Face hub, in the hub's own cache (see hub.py).

One file for the three because they are one thing, the local copy of hub models: pull fills it, list shows it, rm
empties it. Paths go to stdout (one per line, so `$(moestream pull ...)` works); everything else to stderr."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine import human_bytes
from ..errors import ConfigError
from . import hub

SPEC_HELP = ("REPO[:QUANT|:FILE], e.g. unsloth/Qwen3-30B-A3B-GGUF:Q4_K_M; a QUANT tag or FILE picks one model "
             "(every shard of a split one)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="download a GGUF model from the Hugging Face hub into its cache")
    p.add_argument("spec", metavar="REPO[:QUANT|:FILE]", help=SPEC_HELP)
    p.set_defaults(run=run_pull)
    p = sub.add_parser("list", help="list the GGUF files in the Hugging Face cache")
    p.set_defaults(run=run_list)
    p = sub.add_parser("rm", help="delete a GGUF model from the Hugging Face cache")
    p.add_argument("spec", metavar="REPO[:QUANT|:FILE]", help=SPEC_HELP)
    p.set_defaults(run=run_rm)


def run_pull(args: argparse.Namespace) -> int:
    paths = hub.pull(hub.Spec.parse(args.spec))
    for path in paths:
        print(path)
    hub.say(f"use it with -m {paths[0]}  (or -m hf:{args.spec})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = [(repo, name, human_bytes(path.stat().st_size), str(path)) for repo, name, path in cached_ggufs()]
    if not rows:
        hub.say(f"no GGUF files in the Hugging Face cache ({hub.cache_dir()})")
        return 0
    head = ("REPO", "FILE", "SIZE", "PATH")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
    return 0


def cached_ggufs() -> list[tuple[str, str, Path]]:
    """(repo, file in the repo, snapshot path) for every cached .gguf whose blob is there."""
    found = []
    for folder in sorted(hub.cache_dir().glob("models--*")):
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        for snapshot in sorted((folder / "snapshots").glob("*")):
            found += [(repo, p.relative_to(snapshot).as_posix(), p) for p in sorted(snapshot.rglob("*.gguf"))
                      if p.exists()]
    return found


def run_rm(args: argparse.Namespace) -> int:
    spec = hub.Spec.parse(args.spec)
    targets = [(snapshot, name) for snapshot, names in _cached_choices(spec) for name in names]
    if not targets:
        raise ConfigError(f"{spec} is not in the Hugging Face cache ({hub.cache_dir()}); see `moestream list`")
    freed = sum(_remove(spec.repo, snapshot / name) for snapshot, name in targets)
    for snapshot, name in targets:
        print(snapshot / name)
    hub.say(f"removed {len(targets)} file(s) of {spec}, freed {human_bytes(freed)}")
    return 0


def _cached_choices(spec: hub.Spec) -> list[tuple[Path, list[str]]]:
    """In every snapshot of the repo, the files `spec` names there (snapshots where it names nothing are skipped;
    an ambiguous spec is an error, as for pull)."""
    folder = hub.repo_dir(spec.repo)
    chosen = []
    for snapshot in sorted((folder / "snapshots").glob("*")):
        names = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*.gguf")]
        if names:
            try:
                chosen.append((snapshot, hub.choose(spec, names, " (in the cache)")))
            except ConfigError as exc:
                if "several" in str(exc):
                    raise
    return chosen


def _remove(repo: str, link: Path) -> int:
    """Deletes a snapshot's file and its blob unless another snapshot of the same repo still links to it; the bytes
    freed. Only paths under this repo's own cache folder are touched."""
    folder = hub.repo_dir(repo).resolve()
    blob = link.resolve()
    size = blob.stat().st_size if blob.exists() else 0
    link.unlink(missing_ok=True)
    if blob == link.absolute():  # no symlinks here (Windows without developer mode): the file was the blob
        return size
    if not blob.is_relative_to(folder) or not blob.exists():
        return 0
    if any(p.resolve() == blob for p in (folder / "snapshots").rglob("*") if p.is_symlink()):
        return 0
    blob.unlink()
    return size
